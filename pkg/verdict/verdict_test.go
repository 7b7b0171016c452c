package verdict

import (
	"testing"
	"time"
)

// TestUnixNano checks that 0 ns and the zero time stand for each other,
// and that every other time survives the trip in nanoseconds.
func TestUnixNano(t *testing.T) {
	for _, ns := range []int64{0, 1, -5, 1_700_000_000_123_456_789} {
		tm := UnixNano(ns)
		if tm.IsZero() != (ns == 0) {
			t.Errorf("UnixNano(%d) = %v, zero %v", ns, tm, tm.IsZero())
		}
		if got := UnixNanoOf(tm); got != ns {
			t.Errorf("UnixNanoOf(UnixNano(%d)) = %d", ns, got)
		}
		v := Verdict{Inferred: tm}
		if got := v.InferredUnixNano(); got != ns {
			t.Errorf("InferredUnixNano of %v = %d, want %d", tm, got, ns)
		}
	}
	if now := time.Now(); UnixNanoOf(now) != now.UnixNano() {
		t.Errorf("UnixNanoOf(now) = %d, want %d", UnixNanoOf(now), now.UnixNano())
	}
}
