package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHealthcheck runs `styx-node healthcheck` against a server that
// answers /healthz, then against one that is gone.
func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
		}
	}))
	addr := srv.Listener.Addr().String()
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"healthcheck", "--http-addr", addr}, &stdout, &stderr); code != 0 {
		t.Fatalf("healthy node: exit %d: %s", code, stderr.String())
	}
	srv.Close()
	if code := run(t.Context(), []string{"healthcheck", "--http-addr", addr}, &stdout, &stderr); code != 1 {
		t.Fatalf("no node: exit %d, want 1", code)
	}
}
