// Package pool holds the addresses waiting for inference: a FIFO of pending
// addresses, the dedup window (one entry per address, however many nodes
// sighted it) and the recent-verdict window that answers repeated
// sightings without another inference. It decides admission under overload
// (the shedding policy) and expiry by maximum age.
//
// The recent window is bounded by age (Config.DedupWindow) and by count
// (Config.MaxRecent); evictions by each are counted in Stats. A pool made
// by NewVerdicts keeps each verdict there in a fixed-size record of 16
// bytes without pointers (its inference time and port, and the index of
// its shape: every other field, interned with a reference count). With
// its address, links and index a verdict costs about 65 bytes (measured
// by BenchmarkRecentBytesPerEntry), so a full window of a million holds
// some 65 MB of heap, whatever the rate, which the garbage collector
// does not scan.
//
// Pool is a plain data structure, not safe for concurrent use: the
// coordinator owns it under its lock. Time is always passed in.
package pool
