package locdb

import "net/netip"

// Internal walks exposed to the external tests.

// LookupWalk is Lookup for IPv4 without the jump table.
func (db *DB) LookupWalk(addr netip.Addr) (Network, bool) { return db.lookup4Walk(addr) }

// LookupFromRoot walks every address from the trie root.
func (db *DB) LookupFromRoot(addr netip.Addr) (Network, bool) { return db.lookupFromRoot(addr) }

// DropJumpTable makes IPv4 lookups walk from the ::ffff:0:0/96 node, as for
// a database with too many networks to pack into jump entries.
func (db *DB) DropJumpTable() { db.jump = nil }
