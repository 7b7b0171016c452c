package cli

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHealthcheck runs `styx-scheduler healthcheck` against a server that
// answers /healthz, then against one that is gone.
func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	addr := srv.Listener.Addr().String()
	var stdout, stderr bytes.Buffer
	if code := Main(t.Context(), []string{"healthcheck", "--http-addr", addr}, &stdout, &stderr); code != 0 {
		t.Fatalf("healthy scheduler: exit %d: %s", code, stderr.String())
	}
	srv.Close()
	if code := Main(t.Context(), []string{"healthcheck", "--http-addr", addr}, &stdout, &stderr); code != 1 {
		t.Fatalf("no scheduler: exit %d, want 1", code)
	}
}
