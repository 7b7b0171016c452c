package scheduler

import "testing"

// The leader publishes an HTTP address a browser can reach: the host of
// its advertised gRPC address when it listens on every interface.
func TestAdvertiseHTTP(t *testing.T) {
	for _, c := range []struct{ http, grpc, want string }{
		{"127.0.0.1:7080", "127.0.0.1:7070", "127.0.0.1:7080"},
		{"0.0.0.0:7080", "sched-a.example:7070", "sched-a.example:7080"},
		{"[::]:7080", "10.0.0.5:7070", "10.0.0.5:7080"},
		{":7080", "10.0.0.5:7070", "10.0.0.5:7080"},
		{"0.0.0.0:7080", "", "0.0.0.0:7080"},
	} {
		if got := advertiseHTTP(c.http, c.grpc); got != c.want {
			t.Errorf("advertiseHTTP(%q, %q) = %q, want %q", c.http, c.grpc, got, c.want)
		}
	}
}
