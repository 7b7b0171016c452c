// Package uplink is a cluster node's link to the STYX leader.
//
// Offer turns every address not seen within the dedup window into a
// Sighting with a node-local id (reserved in blocks from the store, so never
// reused across restarts) and keeps it in a bounded pending table until its
// Outcome arrives. Run follows the leader through etcd, keeps one Submit
// stream to it (Hello, Welcome, then SightingBatches up; Acks and
// OutcomeBatches down, in any order) and follows its verdict Feed.
//
// Every (re)connection re-sends every pending sighting: the scheduler
// dedups, and an Outcome for an id no longer pending is counted and ignored,
// so delivery is idempotent. VERDICT outcomes and feed events go to the
// store; EXPIRED, SHED and REJECTED outcomes are counted by kind. When the
// pending table is full new sightings are not submitted, and counted.
//
// Attack reports accepted on the node wait in the store's outbox; a third
// loop per leader forwards them with ReportAttacks (when kicked, and every
// AttackRetry) and deletes a batch once the leader has answered for it.
// Attack reports on the feed go to the store with the verdicts. A verdict
// the node asked for arrives twice (outcome and feed) and is written once.
//
// With Config.DirectWorker, Run speaks WorkerService to one worker instead
// (direct.go): the same pending table and store, batches under the
// worker's credits, no feed and no attack forwarding. The end-to-end
// benchmark measures the node's path without the scheduler hop with it.
//
// Lock order: Uplink.mu is a leaf; it is never held across I/O except the
// rare id-block reservation (one small bbolt write per IDBlock sightings).
// Uplink.storedMu (the recently written verdicts) is a leaf too, never
// held with Uplink.mu.
package uplink
