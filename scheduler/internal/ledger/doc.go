// Package ledger holds the rules of one leadership term as pure code: which
// sightings enter the pool, which batch goes to which worker, which result
// counts (fencing by term, worker, session and attempt), what a refusal, a
// lost session or a malformed result does to a batch (requeue, split,
// poison), expiry, shedding and drain.
//
// Events go in (Offer, Assign, OnResult, OnRefusal, OnSessionLost, Sweep,
// Drain, ...), effects come out (Effects: the batches to send to which
// worker session, the outcomes for which node, the verdicts to publish,
// the workers to send a drain). The ledger never sends, reads a clock,
// starts a goroutine or touches proto, etcd or gRPC: time is passed in,
// and the coordinator (the I/O shell around it) carries the effects out.
//
// A Ledger is not safe for concurrent use; the coordinator calls it under
// its lock. Its memdb state (State) may be read concurrently through
// snapshots.
package ledger
