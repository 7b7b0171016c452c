package api

import (
	"encoding/json"
	"testing"
)

// /healthz answers 503 with the reason while Unhealthy names one, and 200
// again once it does not; Health's fields show either way.
func TestHealthzUnhealthy(t *testing.T) {
	reason := "stalled"
	f := newFixture(t, func(c *Config) {
		c.Health = func() map[string]any { return map[string]any{"uplink_connected": true} }
		c.Unhealthy = func() string { return reason }
	})
	for _, tc := range []struct {
		reason string
		code   int
		status string
	}{
		{"stalled", 503, "unhealthy"},
		{"", 200, "ok"},
	} {
		reason = tc.reason
		w := f.do("GET", "/healthz", "", "")
		var got map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if w.Code != tc.code || got["status"] != tc.status || got["uplink_connected"] != true {
			t.Fatalf("reason %q: %d %v", tc.reason, w.Code, got)
		}
		if r, ok := got["reason"]; (tc.reason != "") != ok || (ok && r != tc.reason) {
			t.Fatalf("reason %q: reason field %v", tc.reason, r)
		}
	}
}
