// Package uplink is a cluster node's link to the STYX leader and its apply
// side of the verdict log.
//
// Offer turns every address not seen within the dedup window into a
// Sighting with a node-local id (reserved in blocks from the store, so never
// reused across restarts) and keeps it in a bounded pending table until its
// Outcome arrives. Run follows the leader through etcd and keeps one Submit
// stream to it (Hello, Welcome, then SightingBatches up; Acks and
// OutcomeBatches down, in any order).
//
// Every (re)connection re-sends every pending sighting: the scheduler
// dedups, and an Outcome for an id no longer pending is counted and ignored,
// so delivery is idempotent. VERDICT outcomes go to the store; EXPIRED,
// SHED and REJECTED outcomes are counted by kind. When the pending table is
// full new sightings are not submitted, and counted.
//
// With Config.Outbox (the store's sighting outbox, outbox.go) the pending
// table survives a restart. A committer writes the sightings accepted since
// its last commit, and deletes the ones resolved since, in one transaction
// every BatchInterval (at once when a full batch waits): a group commit. A
// sighting is queued to be sent only once committed, so the leader never
// holds one the node could lose. New loads what the outbox holds, and the
// first Welcome re-sends it. Run's last commit persists everything accepted
// before it returns, so a graceful stop loses nothing; a kill -9 loses the
// sightings accepted since the last completed commit began: at most one
// BatchInterval's worth plus what arrived during one commit. The outbox never
// holds more than the pending table did at its last commit (MaxPending).
//
// Attack reports accepted on the node wait in the store's outbox; a second
// loop per leader forwards them with ReportAttacks (when kicked, and every
// AttackRetry) and deletes a batch once the leader has answered for it.
//
// Every verdict and attack report STYX makes reaches the node through the
// verdict log (pkg/verdictlog) instead: the node runs a verdictlog.Follower
// whose Apply is ApplyLog, which writes each burst of a stream to the store
// with the stream's cursor in one transaction (Store.ApplyLog). A verdict
// the node asked for arrives twice (outcome and log) and is written once:
// the verdicts written recently are remembered (dropStored, addStored).
//
// With Config.DirectWorker, Run speaks WorkerService to one worker instead
// (direct.go): the same pending table and store, batches under the
// worker's credits, no attack forwarding, and the node follows no log. The
// end-to-end benchmark measures the node's path without the scheduler hop
// with it.
//
// Lock order: Uplink.commitMu (one group commit at a time), then
// Uplink.mu. Uplink.mu is never held across I/O except the rare id-block
// reservation (one small bbolt write per IDBlock sightings); commitMu is
// held across the commit's write.
// Uplink.storedMu (the recently written verdicts) is a leaf too, never
// held with Uplink.mu.
package uplink
