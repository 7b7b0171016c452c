package recent

import (
	"fmt"
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

// Set is a bounded set of recently put keys with their values; see the
// package comment. Not safe for concurrent use.
type Set[K comparable, V any] struct {
	lim        Limits
	idx        map[K]int32
	nodes      []node[K, V]
	head, tail int32 // the oldest and the newest key; none when empty
	free       int32 // a reusable node, chained by next; none when none
	ev         Evictions
}

// New returns an empty Set bounded by l.
func New[K comparable, V any](l Limits) (*Set[K, V], error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Set[K, V]{lim: l, idx: make(map[K]int32), head: none, tail: none, free: none}, nil
}

// Limits returns the set's limits.
func (s *Set[K, V]) Limits() Limits { return s.lim }

// Len is how many keys the set holds, expired ones that no Put or Sweep
// has dropped yet among them.
func (s *Set[K, V]) Len() int { return len(s.idx) }

// Evictions returns the evictions since New.
func (s *Set[K, V]) Evictions() Evictions { return s.ev }

// Get returns k's value, unless k is not held or is older than MaxAge at
// now. It changes nothing: a key got is as old as it was.
func (s *Set[K, V]) Get(now int64, k K) (V, bool) {
	if i, ok := s.idx[k]; ok && !s.expired(now, s.nodes[i].at) {
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
	if i, ok := s.idx[k]; ok {
		n := &s.nodes[i]
		n.val, n.at = v, now
		s.unlink(i)
		s.linkNewest(i)
		return
	}
	if len(s.idx) >= s.lim.MaxLen {
		s.drop(s.head)
		s.ev.ByCount++
	}
	i := s.alloc()
	s.nodes[i] = node[K, V]{key: k, val: v, at: now}
	s.linkNewest(i)
	s.idx[k] = i
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

// alloc returns a free node, reusing a dropped one first.
func (s *Set[K, V]) alloc() int32 {
	if i := s.free; i != none {
		s.free = s.nodes[i].next
		return i
	}
	s.nodes = append(s.nodes, node[K, V]{})
	return int32(len(s.nodes) - 1)
}

// drop forgets the key at node i and frees the node.
func (s *Set[K, V]) drop(i int32) {
	s.unlink(i)
	delete(s.idx, s.nodes[i].key)
	s.nodes[i] = node[K, V]{next: s.free} // no key or value kept alive
	s.free = i
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
