// Package recent is a bounded set of the keys seen recently, each with a
// value: the memory behind "was this answered a moment ago?" (a node's
// dedup window and its recently stored verdicts, the scheduler's recent
// verdicts and the attack reports it published recently).
//
// A Set holds at most Limits.MaxLen keys; putting a new key into a full
// set evicts the key put longest ago. With Limits.MaxAge, a key is also
// gone once it is older than that: Get no longer returns it, and Put and
// Sweep drop it. Time is passed in (Unix nanoseconds, or any clock that
// only moves forward), so a Set is deterministic; it starts no goroutine
// and holds no lock.
//
// A Set's memory is bounded by MaxLen alone, however many keys pass
// through it: a key costs its node (key, value, time and two links, in
// one slice that stops growing at MaxLen) and 11 to 21 bytes of an index
// of its own (8-byte slots, at most 3/4 in use), which never keeps a
// deleted slot. A node's dedup window of a million addresses holds about
// 57 MB. OnDrop tells a caller which values the set let go of, for one
// that interns them.
package recent
