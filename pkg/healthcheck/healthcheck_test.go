package healthcheck

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	tests := []struct{ addr, want, err string }{
		{"127.0.0.1:7080", "http://127.0.0.1:7080/healthz", ""},
		{"0.0.0.0:8080", "http://127.0.0.1:8080/healthz", ""},
		{":8080", "http://127.0.0.1:8080/healthz", ""},
		{"[::]:8080", "http://[::1]:8080/healthz", ""},
		{"node-a:8080", "http://node-a:8080/healthz", ""},
		{"127.0.0.1:0", "", "fixed port"},
		{"nonsense", "", "listen address"},
	}
	for _, tt := range tests {
		got, err := URL(tt.addr, "/healthz")
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("URL(%q) error %v, want %q", tt.addr, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("URL(%q) = %q, %v; want %q", tt.addr, got, err, tt.want)
		}
	}
}

func TestMain_(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)

	var stderr bytes.Buffer
	if code := Main("styx-test", []string{"--http-addr", "0.0.0.0:" + port}, "127.0.0.1:1", "/healthz", &stderr); code != 0 {
		t.Fatalf("healthy server: exit %d (%s)", code, stderr.String())
	}
	t.Setenv("STYX_HTTP_ADDR", addr)
	if code := Main("styx-test", nil, "127.0.0.1:1", "/healthz", &stderr); code != 0 {
		t.Fatalf("address from STYX_HTTP_ADDR: exit %d (%s)", code, stderr.String())
	}
	status = http.StatusServiceUnavailable
	stderr.Reset()
	if code := Main("styx-test", nil, "127.0.0.1:1", "/healthz", &stderr); code != 1 || !strings.Contains(stderr.String(), "503") {
		t.Fatalf("unhealthy server: exit %d (%s), want 1 naming 503", code, stderr.String())
	}
	if code := Main("styx-test", []string{"extra"}, "127.0.0.1:1", "/healthz", &stderr); code != 2 {
		t.Fatalf("extra argument: exit %d, want 2", code)
	}
}
