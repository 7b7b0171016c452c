// Package store is a cluster node's durable memory: the verdicts it learnt
// (from its own sightings' outcomes and from the verdict log), when each
// address was last queried, the attack history of each reported address,
// the attack reports still to be forwarded to the leader, the sightings
// still waiting for their outcome, the cursor of
// each verdict log stream to resume from, and the high-water mark of
// sighting ids. It is one bbolt file.
//
// Buckets (address keys are 16 bytes, IPv4 as IPv4-mapped IPv6):
//
//	verdicts       address -> encoded styx.v1.Verdict (address field cleared)
//	seen           address -> last query time, 8-byte big-endian Unix nanoseconds
//	attacks        address -> attack history: counts per kind and the newest
//	               reports (see encodeHistory)
//	attack_outbox  8-byte big-endian sequence -> encoded styx.v1.AttackReport
//	sighting_outbox  8-byte big-endian sighting id -> address (16 bytes) and
//	                 the time it was seen (8-byte big-endian Unix nanoseconds)
//	meta           "log_seq/<stream>", "sighting_hwm", "attack_outbox_len" -> 8-byte big-endian
//
// Verdicts are written as they came over the wire (Item holds a
// styx.v1.Verdict, from an outcome or the log) and read back as the one
// domain type, verdict.Verdict.
//
// ApplyLog writes one burst of a verdict log stream (verdicts and attack
// reports) and moves that stream's cursor, log_seq/<stream>, to the burst's
// last sequence in the same transaction; a burst at or below the stored
// cursor changes nothing. A node killed at any point therefore resumes from
// the cursor (Cursor) and applies every log message exactly once.
//
// Verdict writes are idempotent and ordered by inference time: putting a
// verdict already stored changes nothing, and a verdict inferred earlier
// than the stored one is dropped. Two different verdicts with the same
// inference time are ordered by their encoding, so every node converges on
// the same one whatever order they arrive in.
//
// Config.OnVerdicts, when set, learns after each commit which verdicts
// changed the store (the threats page and the history table follow them),
// and Config.OnAttacks which attack reports were new (the history table).
// The hooks see the writes in commit order. ScanVerdicts and ScanAttacks
// read the whole store back (to fill those at start).
//
// Attack reports are idempotent too: (address, time, kind, reporter) is a
// report's identity. An address keeps its newest Config.AttackEvents
// reports (100) and a count per kind of every distinct report applied. A
// report already kept is a duplicate; one older than every kept report of
// a full history is ignored, because a second copy of it could no longer be
// recognised. Reports accepted here (AddAttacks) also enter the outbox in
// the same transaction, and leave it when the leader has taken them
// (AckAttacks), so none is lost across a restart.
//
// Last-seen times are not written per query: Touch records them in a
// bounded in-memory table that Run flushes every Config.FlushInterval (and
// Close at the end), in bounded transactions.
//
// Config.Retention is the product's retention policy, the same as the
// verdict log's: verdicts that found no proxy are kept Clean (1 h) from
// their inference time, proxy verdicts Proxy (30 d), attack histories
// Proxy from their newest report, and last-seen times as long as their
// address's verdict (Clean without one). Run sweeps every
// Config.SweepEvery (Sweep, in bounded transactions); the pages freed are
// reused, so the file's size levels off.
//
// The sighting outbox holds what the uplink accepted and has not seen
// resolved (SaveSightings, in group commits); a restarted node loads it
// (PendingSightings) and submits it again.
package store
