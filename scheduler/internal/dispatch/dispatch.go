// Package dispatch holds the pure decisions of handing out work: which
// worker gets the next batch, and how a batch that keeps failing is split
// to isolate a poison address. No I/O, no clocks: testable on its own.
package dispatch

// Candidate is what Pick needs to know about a worker.
type Candidate struct {
	ID       string
	Capacity int    // credits it grants in total
	Credits  int    // credits it still has
	InFlight int    // batches it holds
	Done     uint64 // batches it has finished
}

// Pick returns the index of the worker that should get the next batch, or
// -1 when no worker has a credit. It favours the worker with the largest
// share of its capacity free, so hosts of different sizes fill in
// proportion. Among equals it picks the worker that has received the
// fewest batches for its capacity, so a lightly loaded fleet still shares
// the work; remaining ties go to the lower index (callers pass a stable
// order).
//
// Credit-based flow control does the rest: a worker that finishes faster
// grants credits back sooner and so receives more batches.
func Pick(cs []Candidate) int {
	best := -1
	var bestNum, bestDen int
	for i, c := range cs {
		if c.Credits <= 0 {
			continue
		}
		den := c.Capacity
		if den <= 0 {
			den = 1
		}
		if best < 0 {
			best, bestNum, bestDen = i, c.Credits, den
			continue
		}
		// compare c.Credits/den with bestNum/bestDen without floats
		l, r := c.Credits*bestDen, bestNum*den
		if l > r || (l == r && served(c)*uint64(bestDen) < served(cs[best])*uint64(den)) {
			best, bestNum, bestDen = i, c.Credits, den
		}
	}
	return best
}

// served is how many batches c has been given.
func served(c Candidate) uint64 { return c.Done + uint64(max(c.InFlight, 0)) }

// Retry says what to do with a batch whose worker failed.
type Retry int

const (
	// Requeue: try the batch again on another worker.
	Requeue Retry = iota
	// Split: the batch failed too often; split it in two halves.
	Split
	// GiveUp: a single address failed too often: it is poison; answer it
	// with an error verdict.
	GiveUp
)

// OnFailure decides the fate of a batch of size n that has now failed
// `failures` times, with maxFailures allowed before splitting.
func OnFailure(n int, failures, maxFailures uint32) Retry {
	if failures < maxFailures {
		return Requeue
	}
	if n <= 1 {
		return GiveUp
	}
	return Split
}

// Halves returns the split point of a batch of n addresses.
func Halves(n int) int { return n / 2 }
