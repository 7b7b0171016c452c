package locdb

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"github.com/styx-inference/styx/pkg/locdb/internal/format"
)

// IPv4 addresses live at ::ffff:a.b.c.d, 96 bits down the trie. The jump
// table indexes their first jumpBits bits. 14 bits rather than 16: on the
// real database, lookups measured within noise of 16 bits (the upper IPv4
// levels are few and stay cached), while the first Open in a process took
// half the time, as it builds a quarter of the table from a quarter of the
// nodes.
const (
	v4Depth  = 96
	jumpBits = 14
)

// v4MappedHi and v4MappedLo are the 128-bit ::ffff:0:0.
const (
	v4MappedHi = 0
	v4MappedLo = 0xffff << 32
)

// A jump entry says where an IPv4 walk resumes for one value of the first
// jumpBits bits: node<<32 | best<<7 | depth, where node is the trie node at
// depth 96+jumpBits (0 when the path ends above it) and best (jumpNone for
// none) and depth the deepest network met strictly above that node. best
// must fit in 25 bits; a trie with more networks gets no jump table.
const (
	jumpNone      = 1<<25 - 1
	jumpDepthMask = 1<<7 - 1
)

func jumpEntry(node, best uint32, depth int) uint64 {
	if best == format.NoNetwork {
		best = jumpNone
	}
	return uint64(node)<<32 | uint64(best)<<7 | uint64(depth)
}

// unpackJump returns node, best (format.NoNetwork for none) and depth.
func unpackJump(e uint64) (uint32, uint32, int) {
	best := uint32(e>>7) & jumpNone
	if best == jumpNone {
		best = format.NoNetwork
	}
	return uint32(e >> 32), best, int(e & jumpDepthMask)
}

func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// child returns the child of node n for bit (0 or 1), or 0 when there is
// none or the index points outside the tree (a corrupt file ends the walk
// instead of reading out of range). n must be < nodeCount.
func (db *DB) child(n uint32, bit uint32) uint32 {
	off := uint(n)*format.NodeSize + uint(bit)*4
	c := binary.BigEndian.Uint32(db.tree[off : off+4])
	if c >= db.nodeCount {
		return 0
	}
	return c
}

// network returns the network index of node n, or format.NoNetwork when it
// has none or the index is out of range. n must be < nodeCount.
func (db *DB) network(n uint32) uint32 {
	off := uint(n)*format.NodeSize + 8
	i := binary.BigEndian.Uint32(db.tree[off : off+4])
	if i >= db.netCount {
		return format.NoNetwork
	}
	return i
}

// walk128 descends from node n at depth d along the 128-bit address hi:lo,
// starting with best/bestDepth as the deepest network already seen, and
// returns the deepest network on the path (format.NoNetwork if none).
func (db *DB) walk128(hi, lo uint64, n uint32, d int, best uint32, bestDepth int) (uint32, int) {
	for {
		if i := db.network(n); i != format.NoNetwork {
			best, bestDepth = i, d
		}
		if d >= 128 {
			return best, bestDepth
		}
		var bit uint64
		if d < 64 {
			bit = hi >> (63 - d) & 1
		} else {
			bit = lo >> (127 - d) & 1
		}
		c := db.child(n, uint32(bit))
		if c == 0 {
			return best, bestDepth
		}
		n, d = c, d+1
	}
}

// walk4 is walk128 for the IPv4 part of the trie: n sits at depth d >= 96
// and the remaining bits come from the IPv4 address v.
func (db *DB) walk4(v uint32, n uint32, d int, best uint32, bestDepth int) (uint32, int) {
	tree, nodes, nets := db.tree, db.nodeCount, db.netCount
	bits := v << uint(d-v4Depth)
	for {
		off := uint(n) * format.NodeSize
		rec := tree[off : off+format.NodeSize]
		if i := binary.BigEndian.Uint32(rec[8:]); i < nets {
			best, bestDepth = i, d
		}
		if d >= 128 {
			return best, bestDepth
		}
		c := binary.BigEndian.Uint32(rec[(bits>>31)*4:])
		if c == 0 || c >= nodes {
			return best, bestDepth
		}
		n, d, bits = c, d+1, bits<<1
	}
}

// buildIPv4Start finds the node of ::ffff:0:0/96 and fills the jump table
// below it. It reads at most the 2^(jumpBits+1) nodes of the first IPv4
// levels.
func (db *DB) buildIPv4Start() {
	db.v4Node, db.v4Best, db.v4BestDepth = 0, format.NoNetwork, 0
	if db.nodeCount == 0 {
		return
	}
	n, d, best, bestDepth := uint32(0), 0, uint32(format.NoNetwork), 0
	for ; d < v4Depth; d++ {
		if i := db.network(n); i != format.NoNetwork {
			best, bestDepth = i, d
		}
		var bit uint64
		if d < 64 {
			bit = v4MappedHi >> (63 - d) & 1
		} else {
			bit = v4MappedLo >> (127 - d) & 1
		}
		c := db.child(n, uint32(bit))
		if c == 0 {
			break
		}
		n = c
	}
	db.v4Best, db.v4BestDepth = best, uint8(bestDepth)
	if d < v4Depth {
		return // no IPv4 part: every IPv4 lookup ends at v4Best
	}
	db.v4Node = n
	if db.netCount >= jumpNone {
		return // best would not fit a jump entry: walk from v4Node
	}
	db.jump = make([]uint64, 1<<jumpBits)
	db.fillJump(n, v4Depth, 0, best, bestDepth)
}

// fillJump fills the entries under node n at depth d, whose path so far is
// the top (d-96) bits of prefix.
func (db *DB) fillJump(n uint32, d int, prefix uint32, best uint32, bestDepth int) {
	level := d - v4Depth
	if level == jumpBits {
		db.jump[prefix] = jumpEntry(n, best, bestDepth)
		return
	}
	if i := db.network(n); i != format.NoNetwork {
		best, bestDepth = i, d
	}
	for bit := range uint32(2) {
		p := prefix | bit<<(jumpBits-1-level)
		if c := db.child(n, bit); c != 0 {
			db.fillJump(c, d+1, p, best, bestDepth)
			continue
		}
		// The path ends here: the whole range answers best.
		span := uint32(1) << (jumpBits - 1 - level)
		e := jumpEntry(0, best, bestDepth)
		for k := p; k < p+span; k++ {
			db.jump[k] = e
		}
	}
}

// Lookup returns the most specific network covering addr; false when none
// does. IPv4-mapped IPv6 addresses are looked up, and reported, as IPv4. It
// never allocates and is safe for concurrent use.
func (db *DB) Lookup(addr netip.Addr) (n Network, ok bool) {
	if db.nodeCount == 0 || !addr.IsValid() {
		return Network{}, false
	}
	ix := db.index.Load()
	if addr.Is4() || addr.Is4In6() {
		a := addr.Unmap().As4()
		if ix != nil && ix.v4 != nil {
			ok = db.lookup4Index(&n, ix, binary.BigEndian.Uint32(a[:]))
			return n, ok
		}
		return db.lookup4(a)
	}
	a := addr.As16()
	if ix != nil && ix.v6 != nil {
		ok = db.lookup6Index(&n, ix, a)
		return n, ok
	}
	return db.lookup6Walk(a)
}

// lookup6Walk answers the IPv6 address a by walking the trie from the root.
func (db *DB) lookup6Walk(a [16]byte) (Network, bool) {
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	best, depth := db.walk128(hi, lo, 0, 0, format.NoNetwork, 0)
	if best == format.NoNetwork {
		return Network{}, false
	}
	return db.result(best, netip.PrefixFrom(netip.AddrFrom16(a), depth).Masked()), true
}

func (db *DB) lookup4(a [4]byte) (Network, bool) {
	v := binary.BigEndian.Uint32(a[:])
	best, depth := db.v4Best, int(db.v4BestDepth)
	if db.jump != nil {
		var node uint32
		node, best, depth = unpackJump(db.jump[v>>(32-jumpBits)])
		if node != 0 {
			best, depth = db.walk4(v, node, v4Depth+jumpBits, best, depth)
		}
	} else if db.v4Node != 0 {
		best, depth = db.walk4(v, db.v4Node, v4Depth, best, depth)
	}
	return db.result4(v, best, depth)
}

// lookupNoIndex is Lookup without the index: the jump table and the trie
// walk. Kept for tests and as the benchmark baseline.
func (db *DB) lookupNoIndex(addr netip.Addr) (Network, bool) {
	if db.nodeCount == 0 || !addr.IsValid() {
		return Network{}, false
	}
	if addr.Is4() || addr.Is4In6() {
		return db.lookup4(addr.Unmap().As4())
	}
	return db.lookup6Walk(addr.As16())
}

// lookup4Walk is lookup4 without the jump table: a plain walk from the
// ::ffff:0:0/96 node. Kept for tests and as the benchmark baseline.
func (db *DB) lookup4Walk(addr netip.Addr) (Network, bool) {
	if db.nodeCount == 0 || !addr.Is4() {
		return Network{}, false
	}
	a := addr.As4()
	v := binary.BigEndian.Uint32(a[:])
	best, depth := db.v4Best, int(db.v4BestDepth)
	if db.v4Node != 0 {
		best, depth = db.walk4(v, db.v4Node, v4Depth, best, depth)
	}
	return db.result4(v, best, depth)
}

// lookupFromRoot walks all 128 bits from the root, ignoring every IPv4
// shortcut. Kept for tests.
func (db *DB) lookupFromRoot(addr netip.Addr) (Network, bool) {
	if db.nodeCount == 0 || !addr.IsValid() {
		return Network{}, false
	}
	a := addr.Unmap().As16()
	hi, lo := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
	best, depth := db.walk128(hi, lo, 0, 0, format.NoNetwork, 0)
	if best == format.NoNetwork {
		return Network{}, false
	}
	if addr.Unmap().Is4() {
		return db.result4(binary.BigEndian.Uint32(a[12:]), best, depth)
	}
	return db.result(best, netip.PrefixFrom(netip.AddrFrom16(a), depth).Masked()), true
}

func (db *DB) result4(v uint32, best uint32, depth int) (Network, bool) {
	if best == format.NoNetwork {
		return Network{}, false
	}
	return db.result(best, v4Prefix(v, depth)), true
}

// v4Prefix is the prefix of the network found at trie depth depth for the
// IPv4 address v.
func v4Prefix(v uint32, depth int) netip.Prefix {
	if depth >= v4Depth {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), depth-v4Depth).Masked()
	}
	// An IPv6 network above ::ffff:0:0/96 (such as ::/8) covers it.
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff,
		12: byte(v >> 24), 13: byte(v >> 16), 14: byte(v >> 8), 15: byte(v)}), depth).Masked()
}

// result decodes network record i (< netCount) for prefix p.
func (db *DB) result(i uint32, p netip.Prefix) Network {
	n := db.record(i, p)
	if n.ASN != 0 {
		n.ASName = db.asName(n.ASN)
	}
	return n
}

// record decodes network record i (< netCount) for prefix p, all but the
// AS name.
func (db *DB) record(i uint32, p netip.Prefix) Network {
	off := uint(i) * format.NetworkSize
	rec := db.networks[off : off+format.NetworkSize]
	n := Network{
		Prefix: p,
		ASN:    binary.BigEndian.Uint32(rec[4:]),
		Flags:  Flags(binary.BigEndian.Uint16(rec[8:])),
	}
	db.setCountry(&n, codeIndex(rec[0], rec[1]))
	return n
}

// setCountry fills the country fields of n for code slot (-1 for none).
func (db *DB) setCountry(n *Network, slot int) {
	if slot < 0 {
		return
	}
	n.Country = codeString(slot)
	if ci := db.countryIdx[slot]; ci >= 0 {
		c := &db.countries[ci]
		n.CountryName, n.Continent, n.ContinentName = c.name, c.continent, c.continentName
	}
}

// asName returns the name of AS number asn, "" when it has no record.
func (db *DB) asName(asn uint32) string {
	off, ok := db.asNameOffset(asn)
	if !ok {
		return ""
	}
	s, _ := db.poolString(off)
	return s
}

// asNameOffset returns the pool offset of the name of AS number asn; false
// when it has no record.
func (db *DB) asNameOffset(asn uint32) (uint32, bool) {
	top := db.asTop
	if len(top) == 0 || asn < top[0] {
		return 0, false
	}
	// Branch-free search for the last block starting at or below asn.
	base, n := 0, len(top)
	for n > 1 {
		half := n / 2
		if top[base+half] <= asn {
			base += half
		}
		n -= half
	}
	start := base * asBlock * format.ASSize
	block := db.as[start:min(start+asBlock*format.ASSize, len(db.as))]
	for i := 0; i+format.ASSize <= len(block); i += format.ASSize {
		if binary.BigEndian.Uint32(block[i:]) == asn {
			return binary.BigEndian.Uint32(block[i+4:]), true
		}
	}
	return 0, false
}

// ASNOf turns a lookup (DB.Lookup, or any Locator's) into the AS number
// of an address's network, 0 when it has none: the Locate function of a
// history table (pkg/history).
func ASNOf(lookup func(netip.Addr) (Network, bool)) func(netip.Addr) uint32 {
	return func(a netip.Addr) uint32 {
		n, _ := lookup(a)
		return n.ASN
	}
}
