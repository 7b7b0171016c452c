// Package store is a cluster node's durable memory: the verdicts it learnt
// (from its own sightings' outcomes and from the leader's verdict feed), when
// each address was last queried, the feed revision to resume from, and the
// high-water mark of sighting ids. It is one bbolt file.
//
// Buckets (keys are 16-byte addresses, IPv4 as IPv4-mapped IPv6):
//
//	verdicts  address -> encoded styx.v1.Verdict (address field cleared)
//	seen      address -> last query time, 8-byte big-endian Unix nanoseconds
//	meta      "feed_revision", "sighting_hwm" -> 8-byte big-endian
//
// Verdict writes are idempotent and ordered by inference time: putting a
// verdict already stored changes nothing, and a verdict inferred earlier
// than the stored one is dropped. Two different verdicts with the same
// inference time are ordered by their encoding, so every node converges on
// the same one whatever order they arrive in.
//
// Last-seen times are not written per query: Touch records them in a
// bounded in-memory table that Run flushes once a second (and Close at the
// end), one transaction per flush.
package store
