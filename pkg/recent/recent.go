package recent

import (
	"fmt"
	"hash/maphash"
	"math"
	"time"
)

// Limits bound a Set.
type Limits struct {
	// MaxLen is the most keys held, at least 1. Putting a new key into a
	// full set evicts the key put longest ago.
	MaxLen int
	// MaxAge, when positive, is how long a key is held after its last
	// Put: at now-put == MaxAge it is still there, a nanosecond later it
	// is gone. 0 keeps keys until MaxLen evicts them.
	MaxAge time.Duration
}

// Validate reports a limit out of range.
func (l Limits) Validate() error {
	if l.MaxLen < 1 || l.MaxLen > math.MaxInt32 {
		return fmt.Errorf("recent: max len %d outside 1..%d", l.MaxLen, math.MaxInt32)
	}
	if l.MaxAge < 0 {
		return fmt.Errorf("recent: negative max age %s", l.MaxAge)
	}
	return nil
}

// Evictions count the keys a Set dropped, by the limit that dropped them.
// A key put again is not evicted, only moved.
type Evictions struct {
	ByAge   uint64 // older than MaxAge (Put, Sweep)
	ByCount uint64 // the oldest, to make room for a new key (Put)
}

// none is the null node index: nodes are numbered from 0.
const none int32 = math.MinInt32

// node is one key. Nodes live in one slice and link by index, oldest put
// first, so that moving a key to the newest end or dropping the oldest
// costs neither an allocation nor a search.
type node[K comparable, V any] struct {
	key        K
	val        V
	at         int64 // when it was last put
	prev, next int32 // toward the oldest, the newest; next chains free nodes
}

// minSlots is the size of a new set's index, and the first capacity of
// its nodes.
const minSlots = 8

// Set is a bounded set of recently put keys with their values; see the
// package comment. Not safe for concurrent use.
//
// Its index is a table of its own rather than a Go map: a set is used as
// a window, every key put once and dropped a while later, and under that
// churn a map's deleted slots make it grow to about twice its live size
// (and slow). The table is open-addressed with linear probing and
// backward-shift deletion, so it never holds a deleted slot; it holds at
// most 3/4 of its slots, 8 bytes each (a full set of a million keys: 2^21
// slots, 16 bytes a key).
type Set[K comparable, V any] struct {
	lim Limits
	// hash is the key's hash, under a random seed of the set's own (so
	// that nobody can choose keys, such as addresses, that collide).
	hash func(K) uint64
	// slots is the index, a power of two long: 0 when empty, else the
	// key's 32-bit tag (the low half of its hash; its low bits are the
	// slot the key's probe starts at, its home) above its node + 1.
	slots      []uint64
	n          int // keys held
	nodes      []node[K, V]
	head, tail int32 // the oldest and the newest key; none when empty
	free       int32 // a reusable node, chained by next; none when none
	ev         Evictions
	onDrop     func(K, V) // nil: nobody asked
}

// New returns an empty Set bounded by l.
func New[K comparable, V any](l Limits) (*Set[K, V], error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	seed := maphash.MakeSeed()
	return &Set[K, V]{
		lim:   l,
		hash:  func(k K) uint64 { return maphash.Comparable(seed, k) },
		slots: make([]uint64, minSlots),
		head:  none, tail: none, free: none,
	}, nil
}

// Limits returns the set's limits.
func (s *Set[K, V]) Limits() Limits { return s.lim }

// Len is how many keys the set holds, expired ones that no Put or Sweep
// has dropped yet among them.
func (s *Set[K, V]) Len() int { return s.n }

// OnDrop has fn called with every key the set drops (evicted by age or
// count) and its value, and with a key put again and the value it had:
// each value the set lets go of, once, after it has. A caller that keeps
// something per value (a reference count) releases it there. fn must not
// call the set.
func (s *Set[K, V]) OnDrop(fn func(k K, v V)) { s.onDrop = fn }

// Evictions returns the evictions since New.
func (s *Set[K, V]) Evictions() Evictions { return s.ev }

// Get returns k's value, unless k is not held or is older than MaxAge at
// now. It changes nothing: a key got is as old as it was.
func (s *Set[K, V]) Get(now int64, k K) (V, bool) {
	if _, i := s.lookup(k, s.tag(k)); i != none && !s.expired(now, s.nodes[i].at) {
		return s.nodes[i].val, true
	}
	var zero V
	return zero, false
}

// Put holds k with v as put at now, the newest key. It first drops the
// keys older than MaxAge; a new key in a full set then evicts the oldest.
// A key already held takes v and now and becomes the newest.
func (s *Set[K, V]) Put(now int64, k K, v V) {
	s.Sweep(now)
	tag := s.tag(k)
	if _, i := s.lookup(k, tag); i != none {
		n := &s.nodes[i]
		old := n.val
		n.val, n.at = v, now
		s.unlink(i)
		s.linkNewest(i)
		s.dropped(k, old)
		return
	}
	if s.n >= s.lim.MaxLen {
		s.drop(s.head)
		s.ev.ByCount++
	}
	i := s.alloc()
	s.nodes[i] = node[K, V]{key: k, val: v, at: now}
	s.linkNewest(i)
	s.index(tag, i)
}

// Sweep drops the keys older than MaxAge at now and returns how many it
// dropped. Without MaxAge it does nothing.
func (s *Set[K, V]) Sweep(now int64) int {
	n := 0
	for s.head != none && s.expired(now, s.nodes[s.head].at) {
		s.drop(s.head)
		n++
	}
	s.ev.ByAge += uint64(n)
	return n
}

func (s *Set[K, V]) expired(now, at int64) bool {
	return s.lim.MaxAge > 0 && time.Duration(now-at) > s.lim.MaxAge
}

// alloc returns a free node, reusing a dropped one first. The nodes
// double as they fill, but never past MaxLen: a full set's nodes are one
// slice of MaxLen, with no room to spare.
func (s *Set[K, V]) alloc() int32 {
	if i := s.free; i != none {
		s.free = s.nodes[i].next
		return i
	}
	if len(s.nodes) == cap(s.nodes) {
		grown := make([]node[K, V], len(s.nodes), min(max(2*len(s.nodes), minSlots), s.lim.MaxLen))
		copy(grown, s.nodes)
		s.nodes = grown
	}
	s.nodes = append(s.nodes, node[K, V]{})
	return int32(len(s.nodes) - 1)
}

// drop forgets the key at node i and frees the node.
func (s *Set[K, V]) drop(i int32) {
	s.unlink(i)
	k, v := s.nodes[i].key, s.nodes[i].val
	j, _ := s.lookup(k, s.tag(k))
	s.unindex(j)
	s.nodes[i] = node[K, V]{next: s.free} // no key or value kept alive
	s.free = i
	s.dropped(k, v)
}

// dropped tells OnDrop's fn that the set let go of v.
func (s *Set[K, V]) dropped(k K, v V) {
	if s.onDrop != nil {
		s.onDrop(k, v)
	}
}

func (s *Set[K, V]) unlink(i int32) {
	n := &s.nodes[i]
	if n.prev != none {
		s.nodes[n.prev].next = n.next
	} else {
		s.head = n.next
	}
	if n.next != none {
		s.nodes[n.next].prev = n.prev
	} else {
		s.tail = n.prev
	}
	n.prev, n.next = none, none
}

func (s *Set[K, V]) linkNewest(i int32) {
	n := &s.nodes[i]
	n.prev, n.next = s.tail, none
	if s.tail != none {
		s.nodes[s.tail].next = i
	} else {
		s.head = i
	}
	s.tail = i
}

func (s *Set[K, V]) tag(k K) uint32 { return uint32(s.hash(k)) }

// lookup returns the slot of k, whose tag is tag, and its node; none when
// k is not held.
func (s *Set[K, V]) lookup(k K, tag uint32) (int, int32) {
	mask := len(s.slots) - 1
	for j := int(tag) & mask; ; j = (j + 1) & mask {
		e := s.slots[j]
		if e == 0 {
			return j, none
		}
		if i := int32(uint32(e)) - 1; uint32(e>>32) == tag && s.nodes[i].key == k {
			return j, i
		}
	}
}

// index adds node i, whose key's tag is tag, to the index, which it first
// doubles if it would hold more than 3/4 of its slots. Slots stay empty
// for probes to end at.
func (s *Set[K, V]) index(tag uint32, i int32) {
	s.n++
	if 4*s.n > 3*len(s.slots) {
		old := s.slots
		s.slots = make([]uint64, 2*len(old))
		for _, e := range old {
			if e != 0 {
				s.place(e)
			}
		}
	}
	s.place(uint64(tag)<<32 | uint64(i+1))
}

// place puts slot entry e in the first empty slot from its home.
func (s *Set[K, V]) place(e uint64) {
	mask := len(s.slots) - 1
	j := int(uint32(e>>32)) & mask
	for s.slots[j] != 0 {
		j = (j + 1) & mask
	}
	s.slots[j] = e
}

// unindex empties slot j, then moves back every entry after it (up to the
// next empty slot) whose probe would otherwise cross the hole: one whose
// home is no nearer the entry than j is. So no entry is ever behind an
// empty slot from its home, and no slot is marked deleted.
func (s *Set[K, V]) unindex(j int) {
	s.n--
	mask := len(s.slots) - 1
	for k := (j + 1) & mask; s.slots[k] != 0; k = (k + 1) & mask {
		home := int(uint32(s.slots[k]>>32)) & mask
		if (k-home)&mask >= (k-j)&mask {
			s.slots[j] = s.slots[k]
			j = k
		}
	}
	s.slots[j] = 0
}
