// Package nodehistory keeps a cluster node's history table (pkg/history),
// the one the schema 2 model in the node's real-time path reads, from
// what the node has at hand: its store.
//
// Fill loads the table when the node starts, from the stored verdicts and
// attack histories, the newest first kept within the table's bound and
// folded oldest first, so that the table is the same whatever order the
// store returns them in. Folder then keeps it current: its Landed and
// Attacked are the store's OnVerdicts and OnAttacks hooks, which see every
// verdict that changes the store and every attack report it counts (the
// node's own and the log's) in commit order. Folding happens on the
// store's writers (the uplink, the attack endpoint), never on a query;
// queries read the table through its lock-light Lookup.
//
//	t := history.New(history.Config{MaxAddrs: max, Locate: asnOf})
//	f := nodehistory.New(t)
//	s, _ := store.Open(store.Config{OnVerdicts: f.Landed, OnAttacks: f.Attacked, ...}, log)
//	nodehistory.Fill(t, s, max) // before anything writes to s
package nodehistory
