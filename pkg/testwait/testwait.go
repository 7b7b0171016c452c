package testwait

import (
	"testing"
	"time"
)

// Timeout is the wait most tests give a condition: far above what it takes
// on an idle machine, so that only a real hang fails on a loaded one.
const Timeout = 10 * time.Second

// Poll is how often For calls the condition.
const Poll = 5 * time.Millisecond

// For calls cond every Poll until it returns true. Once timeout has passed
// without that, it fails tb with Fatalf, naming what; it returns only when
// cond held (or when tb's Fatalf returns, as a fake's may).
func For(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	Every(tb, timeout, Poll, what, cond)
}

// Every is For calling cond every interval instead: for conditions costly
// to evaluate, such as a metrics scrape through a container.
func Every(tb testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if !time.Now().Before(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
			return
		}
		time.Sleep(interval)
	}
}
