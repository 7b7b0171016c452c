package locdb

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/styx-inference/styx/pkg/locdb/internal/format"
)

// The lookup index is a compact copy of what the trie answers, built in the
// heap from the trie after Open (see buildIndex), so that a lookup costs a
// few cache misses instead of one per address bit:
//
//   - The trie is flattened, per address family, into the sorted list of
//     disjoint address ranges that get the same answer; neighbouring ranges
//     whose answers are equal (same attributes, same prefix length) merge.
//   - The ranges are stored in a poptrie (Asai and Ohara, SIGCOMM 2015): a
//     direct table on the first 18 bits of the key (6 or 12 for a small
//     trie), then 64-way nodes whose children are found by counting the bits
//     of two bitmaps below the wanted position: which children are nodes,
//     and where runs of equal leaves start. A leaf is one uint32.
//   - A leaf names a tuple (country, ASN, flags, AS name), deduplicated, and
//     the prefix length; the tuple holds everything the network record and
//     the AS section would give, so the mapping is not read at all for an
//     indexed answer.
//
// The IPv4 key is the IPv4 address (the trie below ::ffff:0:0/96, plus what
// covers it above), complete to the last bit. The IPv6 key is the first
// v6KeyBits bits of the address; where the trie goes deeper, the leaf is a
// continuation that resumes the trie walk at depth v6KeyBits. In the real
// database, whose IPv6 networks end at /48, only ::/60 is one: the IPv4
// part of the trie hangs below it.
//
// Every range starts at a multiple of 1<<s, s the child shift of the
// deepest level, 64-topBits-popStride*levels for some levels: IPv4 ranges
// start at multiples of 1<<32 (28 = 64-18-3*6), IPv6 ones at multiples of
// 1<<4 (4 = 64-18-7*6), for top tables of 6, 12 or 18 bits alike.
const (
	popStride = 6
	v6KeyBits = 60
)

// popTopBits returns the top table size for a trie of nodes nodes: small
// tries (the test fixtures) get a small table.
func popTopBits(nodes uint32) uint {
	switch {
	case nodes >= 1<<16:
		return 18
	case nodes >= 1<<10:
		return 12
	}
	return 6
}

// Leaf encoding: id<<8 | depth, where id is an index into index.tuples and
// depth the trie depth of the network found (0 to 128). depth leafCont means
// id indexes index.conts instead. leafNone is "no network": its id is out
// of range of every tuples slice.
//
// In the top table, an entry with popNodeFlag set is a node index instead of
// a leaf; ids below leafMaxID keep leaves clear of that bit.
const (
	leafDepthBits = 8
	leafDepthMask = 1<<leafDepthBits - 1
	leafCont      = leafDepthMask
	leafMaxID     = 1<<23 - 1
	leafNone      = leafMaxID << leafDepthBits
	popNodeFlag   = 1 << 31
)

// maxIndexRanges bounds the ranges of one family, and so the index size
// (the real database has 647,000 IPv4 and 235,000 IPv6 ones): a larger trie
// is walked.
const maxIndexRanges = 1 << 22

// index is the immutable lookup index of a DB, published through DB.index
// once built. v4 or v6 is nil when that family is walked instead.
type index struct {
	v4, v6 *poptrie
	tuples []tuple
	conts  []cont
	bytes  int           // heap bytes held
	took   time.Duration // build time
}

// tuple is what a network record and the AS section answer, resolved.
type tuple struct {
	asn              uint32
	nameOff, nameLen uint32 // the AS name, in the string pool
	flags            Flags
	slot             int16 // codeIndex of the country, -1 for none
}

// cont resumes an IPv6 walk at node, depth v6KeyBits, with best and depth
// the deepest network seen above it.
type cont struct {
	node, best, depth uint32
}

// poptrie maps a 64-bit key (the address, left-aligned) to a leaf.
type poptrie struct {
	top      []uint32 // a leaf, or popNodeFlag|node index
	topShift uint     // the top entry of key is key>>topShift
	nodes    []popNode
	leaves   []uint32
}

// popNode covers 64 children. Bit c of vec says child c is a node: it is
// nodes[nodeBase+k-1], k the number of vec bits at or below c. Otherwise it
// is leaves[leafBase+k-1], k the number of leafVec bits at or below c; leafVec
// marks the leaf children whose leaf differs from the leaf child before.
type popNode struct {
	vec, leafVec       uint64
	nodeBase, leafBase uint32
}

// lookup returns the leaf for key. It only reads what build wrote, which is
// consistent by construction; every index is still bounds-checked.
func (t *poptrie) lookup(key uint64) uint32 {
	e := t.top[key>>t.topShift]
	if e&popNodeFlag == 0 {
		return e
	}
	nodes := t.nodes
	n := &nodes[e&^popNodeFlag]
	shift := t.topShift - popStride
	for {
		bit := uint64(1) << (key >> shift & 63)
		below := bit<<1 - 1 // bits 0..c (all ones for c = 63)
		if n.vec&bit == 0 {
			return t.leaves[n.leafBase+uint32(bits.OnesCount64(n.leafVec&below))-1]
		}
		n = &nodes[n.nodeBase+uint32(bits.OnesCount64(n.vec&below))-1]
		shift -= popStride
	}
}

func (t *poptrie) size() int {
	return 4*len(t.top) + 24*len(t.nodes) + 4*len(t.leaves)
}

// popBuilder builds a poptrie from ranges added in key order: add(s, v)
// starts a range at key s holding leaf v, up to the next range's start (or
// the end of the key space); the first range starts at 0, and every start
// is aligned as described above. A top entry is built as soon as the
// ranges reach past it, so only the ranges of the entry in progress are
// kept.
type popBuilder struct {
	t      poptrie
	starts []uint64 // pending ranges: the one holding the first key of top entry next, and those after
	vals   []uint32
	next   int // the first top entry not built yet
	added  int // ranges added
}

func newPopBuilder(topBits uint) *popBuilder {
	return &popBuilder{t: poptrie{top: make([]uint32, 1<<topBits), topShift: 64 - topBits}}
}

// add starts a range at key start with leaf v, unless the range before
// has the same leaf.
func (b *popBuilder) add(start uint64, v uint32) {
	if n := len(b.vals); n > 0 && b.vals[n-1] == v {
		return
	}
	if k := int(start >> b.t.topShift); k > b.next {
		b.buildTop(k) // the entries below k end at or before start
	}
	b.starts = append(b.starts, start)
	b.vals = append(b.vals, v)
	b.added++
}

// finish builds the remaining top entries and returns the poptrie.
func (b *popBuilder) finish() *poptrie {
	b.buildTop(len(b.t.top))
	b.t.nodes = slices.Clone(b.t.nodes)
	b.t.leaves = slices.Clone(b.t.leaves)
	return &b.t
}

// buildTop builds the top entries from next up to limit, all of whose keys
// the pending ranges cover: the last one runs at least to limit's first
// key.
func (b *popBuilder) buildTop(limit int) {
	span := b.t.topShift
	for b.next < limit {
		k := b.next
		lo := uint64(k) << span
		i := b.advance(0, lo)
		end := limit // entries k..end-1 lie wholly in range i
		if i+1 < len(b.starts) {
			end = int(b.starts[i+1] >> span)
		}
		if end > k {
			for j := k; j < end; j++ {
				b.t.top[j] = b.vals[i]
			}
			b.next = end
			continue
		}
		b.t.nodes = append(growDouble(b.t.nodes, 1), popNode{})
		n := len(b.t.nodes) - 1
		b.t.top[k] = popNodeFlag | uint32(n)
		b.fill(n, lo, span-popStride, i)
		b.next++
	}
	// Drop the ranges that end before the next entry.
	if b.next < len(b.t.top) {
		if i := b.advance(0, uint64(b.next)<<span); i > 0 {
			b.starts = b.starts[:copy(b.starts, b.starts[i:])]
			b.vals = b.vals[:copy(b.vals, b.vals[i:])]
		}
	}
}

// advance returns the index of the pending range holding key, searching
// forward from range i, which must start at or below key.
func (b *popBuilder) advance(i int, key uint64) int {
	for i+1 < len(b.starts) && b.starts[i+1] <= key {
		i++
	}
	return i
}

// fill builds node n covering the 64 children of 1<<shift keys from lo;
// range i holds lo. The node children of one node are allocated together,
// then filled in turn, so that they are adjacent as lookup requires.
func (b *popBuilder) fill(n int, lo uint64, shift uint, i int) {
	node := popNode{leafBase: uint32(len(b.t.leaves))}
	first := i
	for c := 0; c < 64; {
		i = b.advance(i, lo+uint64(c)<<shift)
		end := 64 // children c..end-1 lie wholly in range i
		if i+1 < len(b.starts) {
			if e := (b.starts[i+1] - lo) >> shift; e < 64 {
				end = int(e)
			}
		}
		if end == c { // the next range starts inside child c
			node.vec |= 1 << c
			c++
			continue
		}
		if v := b.vals[i]; node.leafVec == 0 || b.t.leaves[len(b.t.leaves)-1] != v {
			node.leafVec |= 1 << c
			b.t.leaves = append(growDouble(b.t.leaves, 1), v)
		}
		c = end
	}
	node.nodeBase = uint32(len(b.t.nodes))
	nk := bits.OnesCount64(node.vec)
	b.t.nodes = growDouble(b.t.nodes, nk)[:len(b.t.nodes)+nk]
	b.t.nodes[n] = node
	i = first
	for k, vec := 0, node.vec; vec != 0; k, vec = k+1, vec&(vec-1) {
		clo := lo + uint64(bits.TrailingZeros64(vec))<<shift
		i = b.advance(i, clo)
		b.fill(int(node.nodeBase)+k, clo, shift-popStride, i)
	}
}

// growDouble returns s with room for n more elements, doubling its
// capacity when it must grow: append grows large slices by a quarter,
// which for the index's slices allocates five times their final size in
// all.
func growDouble[S ~[]E, E any](s S, n int) S {
	if cap(s)-len(s) >= n {
		return s
	}
	return slices.Grow(s, max(n, len(s)))
}

// startIndex builds the index in a goroutine that Close stops and waits for.
func (db *DB) startIndex() {
	db.indexDone = make(chan struct{})
	go func() {
		defer close(db.indexDone)
		defer func() {
			// A bug in the builder must not take the process down: the
			// lookups keep walking the trie.
			if r := recover(); r != nil {
				db.indexPanic.Store(fmt.Sprint(r))
			}
		}()
		db.buildIndex(&db.indexStop)
	}()
}

// buildIndex flattens the trie and publishes the index: the IPv4 part as
// soon as it is ready, then again with the IPv6 part. A family whose trie
// is corrupt in a way that makes the flattening unbounded (children shared
// or cyclic beyond the node count), or too large, is left to the walk.
func (db *DB) buildIndex(stop *atomic.Bool) {
	if stop.Load() {
		return // closed already
	}
	start := time.Now()
	b := &indexBuilder{db: db, abort: stop, tupleOf: make(map[uint64]uint32), lastNet: format.NoNetwork}
	ix := &index{}
	if db.v4Node != 0 {
		b.reset(v4Depth, 128) // IPv4 keys hold every bit
		b.visit(db.v4Node, v4Depth, 0, db.v4Best, int(db.v4BestDepth))
		if b.aborted() {
			return
		}
		if !b.failed {
			ix.v4 = b.pop.finish()
			ix.tuples = b.tuples
			ix.finish(start)
			db.index.Store(ix)
		}
	}

	b.reset(0, v6KeyBits)
	b.visit(0, 0, 0, format.NoNetwork, 0)
	if b.aborted() || b.failed {
		return
	}
	ix = &index{v4: ix.v4, v6: b.pop.finish(), tuples: slices.Clone(b.tuples), conts: slices.Clone(b.conts)}
	ix.finish(start)
	db.index.Store(ix)
}

func (ix *index) finish(start time.Time) {
	ix.bytes = 16*len(ix.tuples) + 12*len(ix.conts)
	for _, t := range []*poptrie{ix.v4, ix.v6} {
		if t != nil {
			ix.bytes += t.size()
		}
	}
	ix.took = time.Since(start)
}

// indexBuilder flattens one family of the trie into ranges.
type indexBuilder struct {
	db    *DB
	abort *atomic.Bool

	// The family: keys are the address bits from trie depth base on,
	// left-aligned; the walk ends at depth 128, or at depth stop with a
	// continuation where the trie goes on.
	base, stop int
	visits     int  // node visits left
	failed     bool // the family cannot be indexed

	pop *popBuilder // the ranges go there

	tupleOf          map[uint64]uint32 // network record fields -> index in tuples
	tuples           []tuple
	conts            []cont
	lastNet, lastTup uint32 // the last network resolved, a one-entry cache
}

func (b *indexBuilder) reset(base, stop int) {
	b.base, b.stop = base, stop
	b.visits = int(b.db.nodeCount) // a tree visits each node once
	b.failed = false
	b.pop = newPopBuilder(popTopBits(b.db.nodeCount))
}

// aborted reports whether Close asked the build to stop.
func (b *indexBuilder) aborted() bool { return b.abort.Load() }

// visit flattens the subtree of node n at depth d, whose path is the key
// prefix key, with best/bestDepth the deepest network above n. It follows
// walk4 and walk128 step by step, so that the ranges answer what they would.
func (b *indexBuilder) visit(n uint32, d int, key uint64, best uint32, bestDepth int) {
	if b.failed {
		return
	}
	if b.visits--; b.visits < 0 {
		b.failed = true
		return
	}
	if b.abort.Load() {
		b.failed = true
		return
	}
	db := b.db
	if i := db.network(n); i != format.NoNetwork {
		best, bestDepth = i, d
	}
	if d >= 128 {
		b.emit(key, b.leaf(best, bestDepth))
		return
	}
	c0, c1 := db.child(n, 0), db.child(n, 1)
	if d == b.stop {
		if c0 == 0 && c1 == 0 {
			b.emit(key, b.leaf(best, bestDepth))
			return
		}
		if len(b.conts) == leafMaxID {
			b.failed = true
			return
		}
		b.emit(key, uint32(len(b.conts))<<leafDepthBits|leafCont)
		b.conts = append(b.conts, cont{node: n, best: best, depth: uint32(bestDepth)})
		return
	}
	kd := d - b.base // key bits so far
	for bit, c := range [2]uint32{c0, c1} {
		k := key | uint64(bit)<<(63-kd)
		if c == 0 {
			b.emit(k, b.leaf(best, bestDepth))
		} else {
			b.visit(c, d+1, k, best, bestDepth)
		}
	}
}

// emit starts a range at key, unless the previous range has the same leaf.
func (b *indexBuilder) emit(key uint64, leaf uint32) {
	if b.failed {
		// A failed or aborted build leaves gaps; the builder needs
		// contiguous ranges from key 0, so nothing more is added.
		return
	}
	if b.pop.added == maxIndexRanges {
		b.failed = true
		return
	}
	b.pop.add(key, leaf)
}

// leaf returns the leaf for network best (format.NoNetwork for none) found
// at depth.
func (b *indexBuilder) leaf(best uint32, depth int) uint32 {
	if best == format.NoNetwork {
		return leafNone
	}
	if best != b.lastNet {
		db := b.db
		off := uint(best) * format.NetworkSize
		rec := db.networks[off : off+format.NetworkSize]
		key := uint64(rec[0])<<56 | uint64(rec[1])<<48 | uint64(be32(rec[4:]))<<16 | uint64(be16(rec[8:]))
		id, ok := b.tupleOf[key]
		if !ok {
			if len(b.tuples) == leafMaxID {
				b.failed = true
				return leafNone
			}
			id = uint32(len(b.tuples))
			b.tupleOf[key] = id
			t := tuple{asn: be32(rec[4:]), flags: Flags(be16(rec[8:])), slot: int16(codeIndex(rec[0], rec[1]))}
			if t.asn != 0 {
				if off, ok := db.asNameOffset(t.asn); ok {
					s, _ := db.poolString(off)
					t.nameOff, t.nameLen = off, uint32(len(s))
				}
			}
			b.tuples = append(growDouble(b.tuples, 1), t)
		}
		b.lastNet, b.lastTup = best, id
	}
	return b.lastTup<<leafDepthBits | uint32(depth)
}

// fillTuple sets n, which must be zero, to the Network for tuple t and
// prefix p. Lookup fills its result in place: returning the large Network
// through each call level costs a copy per level.
func (db *DB) fillTuple(n *Network, t *tuple, p netip.Prefix) {
	n.Prefix, n.ASN, n.Flags = p, t.asn, t.flags
	db.setCountry(n, int(t.slot))
	if t.nameLen > 0 {
		n.ASName = unsafeString(db.pool[t.nameOff : uint64(t.nameOff)+uint64(t.nameLen)])
	}
}

// lookup4Index sets n to the answer for the IPv4 address v from ix, which
// has a v4 part, and reports whether there is one.
func (db *DB) lookup4Index(n *Network, ix *index, v uint32) bool {
	leaf := ix.v4.lookup(uint64(v) << 32)
	id := leaf >> leafDepthBits
	if id >= uint32(len(ix.tuples)) {
		return false // leafNone
	}
	db.fillTuple(n, &ix.tuples[id], v4Prefix(v, int(leaf&leafDepthMask)))
	return true
}

// lookup6Index sets n to the answer for the IPv6 address a from ix, which
// has a v6 part, and reports whether there is one.
func (db *DB) lookup6Index(n *Network, ix *index, a [16]byte) bool {
	hi := binary.BigEndian.Uint64(a[:8])
	leaf := ix.v6.lookup(hi)
	id, depth := leaf>>leafDepthBits, int(leaf&leafDepthMask)
	if depth == leafCont {
		if id >= uint32(len(ix.conts)) {
			return false // not built so: cannot happen
		}
		c := &ix.conts[id]
		best, d := db.walk128(hi, binary.BigEndian.Uint64(a[8:]), c.node, v6KeyBits, c.best, int(c.depth))
		if best == format.NoNetwork {
			return false
		}
		*n = db.result(best, netip.PrefixFrom(netip.AddrFrom16(a), d).Masked())
		return true
	}
	if id >= uint32(len(ix.tuples)) {
		return false // leafNone
	}
	db.fillTuple(n, &ix.tuples[id], netip.PrefixFrom(netip.AddrFrom16(a), depth).Masked())
	return true
}

// WaitIndex waits until the lookup index that Open builds in the background
// is ready, or its build has given up or been skipped (Config.NoIndex), or
// ctx is done. Lookups never need to wait: until the index is ready they
// walk the trie, with the same answers, several times slower. It returns
// ctx.Err() if ctx ends first.
func (db *DB) WaitIndex(ctx context.Context) error {
	if db.indexDone == nil {
		return nil
	}
	select {
	case <-db.indexDone:
		return nil
	default: // a done ctx must not win over a finished build
	}
	select {
	case <-db.indexDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
