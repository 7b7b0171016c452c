// Package service implements styx.v1.WorkerService: the session a STYX
// leader keeps with a worker, over which batches of addresses go down and
// credit grants, results and refusals come up.
//
// A session starts with an Open carrying the leader's fencing term. The
// service remembers the newest term it has seen (for the whole process, not
// per stream): an Open from an older term is refused with
// FAILED_PRECONDITION, and an Open from the newest term ends the previous
// session (its in-flight batches are dropped; their results are never
// sent). At most one session is current at a time.
//
// Flow control is credit based: Ready grants Capacity credits, every batch
// consumes one, every answer (Result or Refusal of a batch that consumed a
// credit) grants one back, except while draining, when the window shrinks
// to zero. A batch sent without credit is refused and grants nothing.
//
// Batches are cut into chunks examined by a fixed pool of goroutines fed
// through a bounded channel; the receive loop blocks when the pool is
// behind, so memory is bounded by Capacity × MaxBatch addresses.
//
// Goroutines per session: the gRPC handler is the only sender on the
// stream; a receive goroutine reads it. Locks: Service.mu and session.mu are
// never held together.
package service
