package locdb

import (
	"iter"
	"net/netip"

	"github.com/styx-inference/styx/pkg/locdb/internal/format"
)

// Networks yields every network of the trie in address order, a network
// before the more specific ones inside it. IPv4 networks (those inside
// ::ffff:0:0/96) are reported with IPv4 prefixes. Every tree node is visited
// at most once, so even a corrupt tree whose children are shared or cyclic
// costs no more than its node count. As with Lookup, ASName is valid only
// while the DB is open.
func (db *DB) Networks() iter.Seq[Network] {
	return func(yield func(Network) bool) {
		if db.nodeCount == 0 {
			return
		}
		seen := make([]uint64, (uint64(db.nodeCount)+63)/64)
		var a [16]byte
		var rec func(n uint32, d int) bool
		rec = func(n uint32, d int) bool {
			if seen[n/64]&(1<<(n%64)) != 0 {
				return true
			}
			seen[n/64] |= 1 << (n % 64)
			if i := db.network(n); i != format.NoNetwork {
				p := netip.PrefixFrom(netip.AddrFrom16(a), d)
				if d >= v4Depth && p.Addr().Is4In6() {
					p = netip.PrefixFrom(p.Addr().Unmap(), d-v4Depth)
				}
				if !yield(db.result(i, p)) {
					return false
				}
			}
			if d >= 128 {
				return true
			}
			for bit := range uint32(2) {
				c := db.child(n, bit)
				if c == 0 {
					continue
				}
				if bit == 1 {
					a[d/8] |= 0x80 >> (d % 8)
				}
				ok := rec(c, d+1)
				a[d/8] &^= 0x80 >> (d % 8)
				if !ok {
					return false
				}
			}
			return true
		}
		rec(0, 0)
	}
}
