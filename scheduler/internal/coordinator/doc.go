// Package coordinator is what a STYX leader runs for one term: it accepts
// sightings from cluster nodes into the pool, forms batches, hands them to
// workers under credit-based flow control, takes their results back, and
// routes every outcome to the node that asked (and every verdict to the
// verdict log, through Config.Log). It also publishes the attack reports
// nodes forward (ReportAttacks) to the log, dropping those it published
// recently. It watches /styx/workers/ to
// learn the fleet and keeps one Work stream per worker.
//
// Locking: one mutex (Coordinator.mu) guards the pool, the batch rows'
// entries, the submitter and worker-connection maps, the recent attack
// report keys, and every write to the memdb state, which therefore always
// changes together with the pool. Nothing blocks while holding it: sends to
// workers and nodes go through bounded channels with non-blocking writes,
// and a full channel is treated as a broken peer (the peer's work is
// requeued, or the node re-sends). memdb readers (admin API, dashboard)
// never take the mutex.
package coordinator
