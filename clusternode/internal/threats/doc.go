// Package threats keeps what a cluster node's public threats page shows:
// the most recent addresses that STYX post-processing (the workers) found
// to be proxies, as their verdicts land in the node's store.
//
// Recent holds at most Capacity addresses, each with its newest verdict.
// It is a bounded window over the verdict stream, ordered by inference
// time rather than by arrival: verdicts from the node's own sightings and
// from the verdict log interleave, and a node catching up on the log gets
// older ones late, so a min-heap by time decides which address leaves when
// a newer one comes.
// An address whose newer verdict says it is not a proxy leaves at once.
//
// Fill loads the window from the store when the node starts, so a restart
// does not empty the page; Landed is the store's Config.OnVerdicts hook
// that keeps it current. Sample draws a random sample without replacement
// for each request. Local real-time answers are never stored, so they never
// reach the window.
package threats
