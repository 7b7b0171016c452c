package retry

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// NewBackoff returns the house backoff: the base wait d starts at minWait
// and doubles up to maxWait, and each NextBackOff is drawn at random from
// [d/2, d], so that many clients cut off at once do not come back at once,
// and no wait is longer than maxWait. Reset starts again from minWait.
// minWait must be at most maxWait; a minWait of 0 never waits. Not safe
// for concurrent use.
func NewBackoff(minWait, maxWait time.Duration) *backoff.ExponentialBackOff {
	// backoff draws from [c(1-r), c(1+r)]: with r = 1/3 and c = 3d/4 that
	// is [d/2, d] (to the nanosecond).
	return &backoff.ExponentialBackOff{
		InitialInterval:     minWait / 4 * 3,
		RandomizationFactor: 1.0 / 3,
		Multiplier:          2,
		MaxInterval:         maxWait / 4 * 3,
	}
}

// Sleep waits d, or less when ctx ends first; it reports whether the whole
// wait passed with ctx still live. A d of 0 or less does not wait.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
