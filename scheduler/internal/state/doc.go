// Package state is the scheduler's live state in go-memdb: workers, batches
// (a row is a batch of addresses) and submitters (connected cluster nodes).
//
// Every public write opens one write transaction and calls a ...Txn helper,
// so several changes can share a transaction. Rows read from the store are
// never mutated: writers copy, change and insert (a batch row's Entries
// point at pool entries, which belong to the pool). Readers (the admin
// API, the dashboard) take snapshots and watch sets. Time is passed in.
package state
