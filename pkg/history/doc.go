// Package history is what STYX has learnt about addresses from its own
// verdict log: per address, its newest verdict and the attack reports
// against it; per IPv4 /24 (IPv6 /48) bucket and per AS, how many
// addresses got a verdict, how many of those were found to be proxies, and
// how many attack reports name them. Raven's feature schema 2
// (pkg/features) reads it.
//
// A worker fills a Table by folding the messages of the verdict log
// (pkg/verdictlog) with ApplyBatch; a node folds what lands in its store
// with AddVerdict and AddAttack. The fold does not depend on how the log's
// two streams interleave: per address the table holds the verdict with the
// newest inference time (of two made at the same time, the proxy one), so
// a verdict older than the one held changes nothing, and the attack sums
// are sums. Two tables that folded the same messages in any interleaving
// hold the same entries and statistics, as long as neither was full. The
// bucket and AS statistics are kept as running sums, updated as each
// verdict or report arrives, so an address never seen before reads its
// bucket's and its AS's figures as they are, without any per-address work.
//
// Memory is bounded by Config.MaxAddrs addresses. The bucket and AS sums
// are always exactly the sums over the addresses held: when the address
// updated longest ago is evicted to make room, its contribution is taken
// out of its bucket and its AS, and a bucket or AS that no held address
// names any more is dropped. So there are never more buckets or ASes than
// addresses. Which address a full table evicts depends on the order of the
// folds (never on a random seed or a clock): tables that fold the same
// messages in the same order are identical even once full.
//
//	t := history.New(history.Config{MaxAddrs: 1 << 20, Locate: asnOf, Attacks: attackTable})
//	f, err := t.ApplyBatch(batch) // for every log message (styx.v1.LogBatch)
//	s := t.Lookup(addr, asn)      // the address left out of its own bucket and AS
package history
