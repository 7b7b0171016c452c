// Package recent is a bounded set of the keys seen recently, each with a
// value: the memory behind "was this answered a moment ago?" (a node's
// dedup window and its recently stored verdicts, the scheduler's recent
// verdicts and recently fed attack reports).
//
// A Set holds at most Limits.MaxLen keys; putting a new key into a full
// set evicts the key put longest ago. With Limits.MaxAge, a key is also
// gone once it is older than that: Get no longer returns it, and Put and
// Sweep drop it. Time is passed in (Unix nanoseconds, or any clock that
// only moves forward), so a Set is deterministic; it starts no goroutine
// and holds no lock.
package recent
