package attacks

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// History is what an engine may ask about an address's attacks: how many
// distinct reports name it and when the latest attack was (zero time when
// none). Implementations are safe for concurrent use and cheap enough for
// the examining hot path.
type History interface {
	Attacks(addr netip.Addr) (count uint32, last time.Time)
}

// HistoryUser is implemented by an engine that wants the attack history;
// the worker hands it its Table at start.
type HistoryUser interface {
	UseAttackHistory(History)
}

// Counts is a table's knowledge of one address.
type Counts struct {
	Total  uint32
	ByKind [NumKinds]uint32
	Last   time.Time // the latest attack time reported
}

// DefaultTableMax is the default bound on a Table's addresses.
const DefaultTableMax = 1_000_000

const (
	tableShards = 64
	// recentKeys is how many report fingerprints an entry keeps to drop a
	// report seen again (a re-sent batch, a replayed feed).
	recentKeys = 8
	// evictSample is how many entries a full shard looks at to evict the
	// one attacked longest ago.
	evictSample = 8
)

// Table holds, for a bounded number of addresses, the number of distinct
// reports per kind and the latest attack time. It is sharded by address;
// each shard has its own lock, so readers on the examining path rarely
// wait. When a shard is full, a new address evicts the entry (among a few
// sampled) whose latest attack is oldest. A report whose fingerprint is
// among the address's last 8 is a duplicate and not counted again.
type Table struct {
	seed     maphash.Seed
	perShard int
	shards   [tableShards]shard
	evicted  atomic.Uint64
	dups     atomic.Uint64
}

type shard struct {
	mu sync.RWMutex
	m  map[netip.Addr]*entry
}

type entry struct {
	counts [NumKinds]uint32
	total  uint32
	last   int64 // Unix nanoseconds
	recent [recentKeys]uint64
	next   uint8
}

// NewTable returns a table of at most maxAddrs addresses (DefaultTableMax
// when maxAddrs < 1), rounded to a multiple of 64.
func NewTable(maxAddrs int) *Table {
	if maxAddrs < 1 {
		maxAddrs = DefaultTableMax
	}
	t := &Table{seed: maphash.MakeSeed(), perShard: max(1, maxAddrs/tableShards)}
	for i := range t.shards {
		t.shards[i].m = make(map[netip.Addr]*entry)
	}
	return t
}

func (t *Table) shard(a netip.Addr) *shard {
	return &t.shards[maphash.Comparable(t.seed, a)%tableShards]
}

func (t *Table) fingerprint(r Report) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	var b [9]byte
	ns := r.Time.UnixNano()
	for i := range 8 {
		b[i] = byte(ns >> (8 * i))
	}
	b[8] = byte(r.Kind)
	_, _ = h.Write(b[:])
	_, _ = h.WriteString(r.Reporter)
	return h.Sum64() | 1 // never 0, the empty slot
}

// Add counts r; it returns false when r is invalid or a duplicate.
func (t *Table) Add(r Report) bool {
	if !r.Kind.Valid() || !r.Addr.IsValid() {
		return false
	}
	a := r.Addr.Unmap()
	fp := t.fingerprint(r)
	ns := r.Time.UnixNano()
	s := t.shard(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[a]
	if e == nil {
		if len(s.m) >= t.perShard {
			t.evictLocked(s)
		}
		e = &entry{}
		s.m[a] = e
	}
	for _, k := range e.recent {
		if k == fp {
			t.dups.Add(1)
			return false
		}
	}
	e.recent[e.next] = fp
	e.next = (e.next + 1) % recentKeys
	e.counts[r.Kind]++
	e.total++
	e.last = max(e.last, ns)
	return true
}

func (t *Table) evictLocked(s *shard) {
	var victim netip.Addr
	var oldest int64
	n := 0
	for a, e := range s.m { // map order is random: a random sample
		if n == 0 || e.last < oldest {
			victim, oldest = a, e.last
		}
		if n++; n == evictSample {
			break
		}
	}
	if n > 0 {
		delete(s.m, victim)
		t.evicted.Add(1)
	}
}

// Attacks implements History.
func (t *Table) Attacks(addr netip.Addr) (uint32, time.Time) {
	a := addr.Unmap()
	s := t.shard(a)
	s.mu.RLock()
	e := s.m[a]
	if e == nil {
		s.mu.RUnlock()
		return 0, time.Time{}
	}
	n, last := e.total, e.last
	s.mu.RUnlock()
	return n, time.Unix(0, last)
}

// Counts returns what the table knows about addr.
func (t *Table) Counts(addr netip.Addr) (Counts, bool) {
	a := addr.Unmap()
	s := t.shard(a)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m[a]
	if e == nil {
		return Counts{}, false
	}
	return Counts{Total: e.total, ByKind: e.counts, Last: time.Unix(0, e.last)}, true
}

// Len returns the number of addresses held.
func (t *Table) Len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// Evicted counts addresses dropped to make room.
func (t *Table) Evicted() uint64 { return t.evicted.Load() }

// Duplicates counts reports not counted because they were seen before.
func (t *Table) Duplicates() uint64 { return t.dups.Load() }
