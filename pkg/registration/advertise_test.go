package registration

import "testing"

func TestAdvertise(t *testing.T) {
	tests := []struct{ bound, host, want string }{
		{"127.0.0.1:7070", "sched-a", "127.0.0.1:7070"},
		{"0.0.0.0:7070", "sched-a", "sched-a:7070"},
		{"[::]:7070", "sched-a", "sched-a:7070"},
		{"[::1]:7070", "sched-a", "[::1]:7070"},
		{"0.0.0.0:7070", "", "0.0.0.0:7070"},
		{"not an address", "sched-a", "not an address"},
	}
	for _, tt := range tests {
		if got := Advertise(tt.bound, tt.host); got != tt.want {
			t.Errorf("Advertise(%q, %q) = %q, want %q", tt.bound, tt.host, got, tt.want)
		}
	}
}
