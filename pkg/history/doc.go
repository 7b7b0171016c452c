// Package history is what STYX has learnt about addresses from its own
// feed: per address, its latest verdict and the attack reports against it;
// per IPv4 /24 (IPv6 /48) bucket and per AS, how many addresses got a
// verdict, how many of those were found to be proxies, and how many attack
// reports name them. Raven's feature schema 2 (pkg/features) reads it.
//
// A Table is filled by folding the scheduler's feed (verdicts and attack
// reports, in revision order) with Apply, so every process that follows
// the same feed from the same revision holds the same statistics. The
// bucket and AS statistics are kept as running sums, updated as each event
// arrives, so an address never seen before reads its bucket's and its AS's
// figures as they are, without any per-address work.
//
// Memory is bounded by Config.MaxAddrs addresses. The bucket and AS sums
// are always exactly the sums over the addresses held: when the address
// updated longest ago is evicted to make room, its contribution is taken
// out of its bucket and its AS, and a bucket or AS that no held address
// names any more is dropped. So there are never more buckets or ASes than
// addresses. Eviction depends only on the order of the events, never on a
// random seed or a clock, which keeps tables that fold the same feed
// identical even once full.
//
//	t := history.New(history.Config{MaxAddrs: 1 << 20, Locate: asnOf, Attacks: attackTable})
//	t.Apply(ev)                 // for every feed event, in revision order
//	s := t.Lookup(addr, asn)    // the address left out of its own bucket and AS
package history
