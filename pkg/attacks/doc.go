// Package attacks is what STYX knows about attacks coming from an address,
// shared by the cluster nodes, the scheduler and the workers:
//
//   - the kinds of attack a report may name (Kind: a fixed list of short
//     words, each shown under the label the public proxycheck.io v2 API
//     uses in its "attack history");
//   - Report, one attack (address, time, kind, reporter), its validation
//     and its wire form (styx.v1.AttackReport);
//   - Scanner, the reader of report lines: CSV "address,time,kind" or JSON
//     objects, one per line, used by the node's POST /v2/attacks endpoint
//     and by styx-node import-attacks;
//   - Table, a bounded in-memory table of per-address history that a worker
//     fills from the leader's feed, and History, the small interface an
//     engine reads it through.
//
// A report is identified by (address, time, kind, reporter): every consumer
// applies a report at most once, so re-sending one is harmless.
package attacks
