package testwait

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeTB records Fatalf instead of ending the goroutine. Embedding the
// interface supplies testing.TB's unexported method; anything not
// overridden panics, which fails the test as loudly as it should.
type fakeTB struct {
	testing.TB
	helpers int
	fatals  []string
}

func (f *fakeTB) Helper() { f.helpers++ }

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.fatals = append(f.fatals, fmt.Sprintf(format, args...))
}

func TestFor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		holdsFrom int // the call from which cond holds; 0: never
		timeout   time.Duration
		wantCalls int // exactly, when positive
		wantFail  bool
	}{
		{name: "at once", holdsFrom: 1, timeout: time.Second, wantCalls: 1},
		{name: "on the third call", holdsFrom: 3, timeout: time.Second, wantCalls: 3},
		{name: "never", holdsFrom: 0, timeout: 30 * time.Millisecond, wantFail: true},
		// A condition that holds is returned on even with no time left.
		{name: "at once, zero timeout", holdsFrom: 1, timeout: 0, wantCalls: 1},
		{name: "never, zero timeout", holdsFrom: 0, timeout: 0, wantCalls: 1, wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fakeTB{}
			calls := 0
			start := time.Now()
			For(tb, tc.timeout, "the thing", func() bool {
				calls++
				return tc.holdsFrom > 0 && calls >= tc.holdsFrom
			})
			took := time.Since(start)
			if tc.wantCalls > 0 && calls != tc.wantCalls {
				t.Errorf("cond called %d times, want %d", calls, tc.wantCalls)
			}
			if tb.helpers == 0 {
				t.Error("For did not mark itself a helper")
			}
			if !tc.wantFail {
				if len(tb.fatals) != 0 {
					t.Fatalf("failed: %q", tb.fatals)
				}
				return
			}
			if len(tb.fatals) != 1 {
				t.Fatalf("Fatalf called %d times, want once", len(tb.fatals))
			}
			want := fmt.Sprintf("timed out after %s waiting for the thing", tc.timeout)
			if tb.fatals[0] != want {
				t.Errorf("failure %q, want %q", tb.fatals[0], want)
			}
			if took < tc.timeout {
				t.Errorf("failed after %s, before the %s timeout", took, tc.timeout)
			}
			// Polling, not spinning: at most one call per Poll, plus the first.
			if most := int(took/Poll) + 1; calls > most {
				t.Errorf("cond called %d times in %s, more than every %s", calls, took, Poll)
			}
		})
	}
}

func TestEveryWaitsTheInterval(t *testing.T) {
	tb := &fakeTB{}
	calls := 0
	start := time.Now()
	Every(tb, 100*time.Millisecond, 40*time.Millisecond, "the thing", func() bool { calls++; return false })
	took := time.Since(start)
	if len(tb.fatals) != 1 || !strings.Contains(tb.fatals[0], "the thing") {
		t.Fatalf("failures %q", tb.fatals)
	}
	// Calls at 0, 40, 80 and 120 ms at the earliest; a slow machine makes
	// fewer, never more.
	if calls < 2 || calls > 4 {
		t.Fatalf("cond called %d times in %s at a 40ms interval", calls, took)
	}
}

// The real testing.T: a condition that holds later passes the test.
func TestForWithTestingT(t *testing.T) {
	ready := make(chan struct{})
	time.AfterFunc(20*time.Millisecond, func() { close(ready) })
	For(t, Timeout, "the timer", func() bool {
		select {
		case <-ready:
			return true
		default:
			return false
		}
	})
}
