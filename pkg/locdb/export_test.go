package locdb

import (
	"net/netip"
	"time"
)

// Internal walks exposed to the external tests.

// LookupWalk is Lookup for IPv4 without the index or the jump table.
func (db *DB) LookupWalk(addr netip.Addr) (Network, bool) { return db.lookup4Walk(addr) }

// LookupFromRoot walks every address from the trie root.
func (db *DB) LookupFromRoot(addr netip.Addr) (Network, bool) { return db.lookupFromRoot(addr) }

// LookupNoIndex is Lookup without the index: the jump table and the walk.
func (db *DB) LookupNoIndex(addr netip.Addr) (Network, bool) { return db.lookupNoIndex(addr) }

// DropJumpTable makes IPv4 walks start from the ::ffff:0:0/96 node, as for
// a database with too many networks to pack into jump entries.
func (db *DB) DropJumpTable() { db.jump = nil }

// IndexInfo describes the published index: which families it answers, its
// heap size and how long it took to build.
type IndexInfo struct {
	V4, V6 bool
	Bytes  int
	Took   time.Duration
	Tuples int
}

func (db *DB) IndexInfo() IndexInfo {
	ix := db.index.Load()
	if ix == nil {
		return IndexInfo{}
	}
	return IndexInfo{V4: ix.v4 != nil, V6: ix.v6 != nil, Bytes: ix.bytes, Took: ix.took, Tuples: len(ix.tuples)}
}

// IndexPanic is what a panic of the index build recorded, nil for none.
func (db *DB) IndexPanic() any { return db.indexPanic.Load() }
