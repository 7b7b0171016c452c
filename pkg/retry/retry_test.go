package retry

import (
	"context"
	"testing"
	"time"
)

func TestNewBackoff(t *testing.T) {
	const ms = time.Millisecond
	for _, tc := range []struct {
		name       string
		minW, maxW time.Duration
		want       []time.Duration // the base wait d of each NextBackOff
	}{
		{"doubles to the cap", 100 * ms, time.Second, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}},
		{"cap not a power of two away", 10 * ms, 50 * ms, []time.Duration{10 * ms, 20 * ms, 40 * ms, 50 * ms, 50 * ms}},
		{"min equals max", 40 * ms, 40 * ms, []time.Duration{40 * ms, 40 * ms, 40 * ms}},
		{"zero never waits", 0, 0, []time.Duration{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bo := NewBackoff(tc.minW, tc.maxW)
			check := func(round string) {
				t.Helper()
				for i, d := range tc.want {
					got := bo.NextBackOff()
					// [d/2, d], give or take the nanosecond the library
					// adds and float rounding.
					if got < d/2-2 || got > d+2 {
						t.Fatalf("%s wait %d: %s outside [%s, %s]", round, i, got, d/2, d)
					}
				}
			}
			check("first")
			bo.Reset()
			check("after Reset")
		})
	}
}

// The waits are spread over [d/2, d], not all at one end.
func TestNewBackoffJitters(t *testing.T) {
	const d = 100 * time.Millisecond
	lo, hi := d, time.Duration(0)
	for range 200 {
		bo := NewBackoff(d, d)
		w := bo.NextBackOff()
		lo, hi = min(lo, w), max(hi, w)
	}
	if lo > 6*d/10 || hi < 9*d/10 {
		t.Fatalf("200 waits of base %s all within [%s, %s]", d, lo, hi)
	}
}

func TestSleep(t *testing.T) {
	live := context.Background()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		d       time.Duration
		want    bool
		atLeast time.Duration
	}{
		{"live, waits", live, 20 * time.Millisecond, true, 20 * time.Millisecond},
		{"live, zero", live, 0, true, 0},
		{"live, negative", live, -time.Second, true, 0},
		{"ended, long wait", ended, time.Hour, false, 0},
		{"ended, zero", ended, 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			if got := Sleep(tc.ctx, tc.d); got != tc.want {
				t.Fatalf("Sleep = %v, want %v", got, tc.want)
			}
			if took := time.Since(start); took < tc.atLeast || took > tc.atLeast+5*time.Second {
				t.Fatalf("Sleep took %s, want %s", took, tc.atLeast)
			}
		})
	}
}

// A context that ends during the wait cuts it short.
func TestSleepEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now() // before the timer: it never fires early
	time.AfterFunc(20*time.Millisecond, cancel)
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep = true after its context ended")
	}
	if took := time.Since(start); took < 20*time.Millisecond || took > 5*time.Second {
		t.Fatalf("Sleep took %s", took)
	}
}
