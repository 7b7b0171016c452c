package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// DefaultMaxAddrs is the default bound on a Table's addresses.
const DefaultMaxAddrs = 1_000_000

// shards spreads readers over this many locks.
const shards = 64

// Config configures a Table.
type Config struct {
	// MaxAddrs bounds the addresses held (DefaultMaxAddrs when < 1). An
	// address costs at most about 320 bytes with its share of the bucket
	// and AS maps (every address in a /24 of its own), so the default
	// holds about 310 MB at most.
	MaxAddrs int
	// Locate returns the AS number of an address (0 when none), normally
	// from the location database. Nil: every address has AS 0 and the AS
	// statistics stay empty.
	Locate func(netip.Addr) uint32
	// Attacks, when set, is the per-address attack table (attacks.Table)
	// that the attack reports go to first: a report it does not count
	// (a duplicate) is not folded here either. Nil: every report counts.
	Attacks *attacks.Table
}

// Counts are the statistics of a bucket or an AS.
type Counts struct {
	Verdicts uint32 // addresses with a verdict
	Proxies  uint32 // of those, the ones whose newest verdict says proxy
	Attacks  uint32 // attack reports against its addresses
}

// Sub returns c without o, never below zero.
func (c Counts) Sub(o Counts) Counts {
	return Counts{Verdicts: sub(c.Verdicts, o.Verdicts), Proxies: sub(c.Proxies, o.Proxies), Attacks: sub(c.Attacks, o.Attacks)}
}

// Add returns c plus o.
func (c Counts) Add(o Counts) Counts {
	return Counts{Verdicts: c.Verdicts + o.Verdicts, Proxies: c.Proxies + o.Proxies, Attacks: c.Attacks + o.Attacks}
}

// Stats is what Lookup returns about one address: its own attack history,
// and its bucket's and its AS's counts without the address itself.
type Stats struct {
	Attacks    uint32 // attack reports against the address
	Kinds      uint8  // distinct kinds among them
	LastAttack int64  // Unix nanoseconds of the latest, 0 when none
	Bucket     Counts // the other addresses of its IPv4 /24 or IPv6 /48
	AS         Counts // the other addresses of its AS (zero when asn is 0)
	// Clock is the table's time: the newest event time folded (Unix
	// nanoseconds, 0 before any). Recency is measured against it, so that
	// it depends on what was folded alone, not on when or where it is
	// read.
	Clock int64
}

// Entry is what the table holds about one address (Each).
type Entry struct {
	Addr       netip.Addr
	Bucket     uint64 // BucketKey(Addr)
	ASN        uint32
	Verdict    bool // a verdict was folded
	Proxy      bool // the verdict held (the newest) says proxy
	Attacks    uint32
	Kinds      uint8 // bit k: a report of attacks.Kind k
	LastAttack int64
	// VerdictAt is the inference time of the verdict held (Unix
	// nanoseconds; 0 when unknown or none).
	VerdictAt int64
}

// Contribution is what the entry adds to its bucket's and AS's Counts.
func (e Entry) Contribution() Counts {
	c := Counts{Attacks: e.Attacks}
	if e.Verdict {
		c.Verdicts = 1
		if e.Proxy {
			c.Proxies = 1
		}
	}
	return c
}

// addrEntry is the folding goroutine's record of an address: its entry
// and its place in the recency list.
type addrEntry struct {
	Entry
	prev, next *addrEntry
}

// addrVal is what lookups read about an address, stored by value in its
// shard's map so that a lookup is one map probe.
type addrVal struct {
	lastAttack int64
	attacks    uint32
	kinds      uint8
	verdict    bool
	proxy      bool
}

func (e *Entry) val() addrVal {
	return addrVal{lastAttack: e.LastAttack, attacks: e.Attacks, kinds: e.Kinds, verdict: e.Verdict, proxy: e.Proxy}
}

func (v addrVal) contribution() Counts {
	return Entry{Verdict: v.verdict, Proxy: v.proxy, Attacks: v.attacks}.Contribution()
}

// shard holds what lookups read, by value: a lookup probes one map of
// three shards under their read locks.
type shard struct {
	mu      sync.RWMutex
	addrs   map[netip.Addr]addrVal
	buckets map[uint64]agg
	ases    map[uint32]agg
}

// agg is a bucket's or an AS's counts and how many held addresses name
// it (it is dropped at 0).
type agg struct {
	Counts
	refs uint32
}

// Table is safe for concurrent use. Folds (ApplyBatch, AddVerdict,
// AddAttack, AddAttackHistory)
// are serialised by one mutex, which also guards the folding side's
// records (entries, the recency list, the references of buckets and
// ASes). What lookups read lives in 64 shards, each a read-write lock over
// three maps of values; a fold writes the shards it changes one at a time.
// A lookup takes the read locks of the three shards it reads (the
// address's, its bucket's and its AS's), one at a time, so lookups run in
// parallel with each other and wait for a fold only when it writes the
// same shard. A lookup concurrent with a fold may see that fold in part.
//
// Lock order: Table.mu, then at most one shard's mu at a time.
type Table struct {
	cfg Config

	mu         sync.Mutex // serialises folds; guards entries, head and tail
	entries    map[netip.Addr]*addrEntry
	head, tail *addrEntry // most and least recently updated

	clock   atomic.Int64
	applied atomic.Uint64
	evicted atomic.Uint64
	shards  [shards]shard
}

// New returns an empty table.
func New(cfg Config) *Table {
	if cfg.MaxAddrs < 1 {
		cfg.MaxAddrs = DefaultMaxAddrs
	}
	t := &Table{cfg: cfg, entries: map[netip.Addr]*addrEntry{}}
	for i := range t.shards {
		s := &t.shards[i]
		s.addrs, s.buckets, s.ases = map[netip.Addr]addrVal{}, map[uint64]agg{}, map[uint32]agg{}
	}
	return t
}

// BucketKey is the key of the IPv4 /24 or IPv6 /48 that holds a: the
// family in the top bits, the prefix below.
func BucketKey(a netip.Addr) uint64 {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return 1<<62 | uint64(binary.BigEndian.Uint32(b[:]))>>8
	}
	b := a.As16()
	return 2<<62 | binary.BigEndian.Uint64(b[:8])>>16
}

// mix is a fixed hash (splitmix64's finaliser): shard choice must not
// depend on a random seed, so that every table evicts alike.
func mix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	return mix(binary.BigEndian.Uint64(b[:8]) ^ mix(binary.BigEndian.Uint64(b[8:])))
}

func (t *Table) addrShard(a netip.Addr) *shard { return &t.shards[addrHash(a)%shards] }
func (t *Table) bucketShard(k uint64) *shard   { return &t.shards[mix(k)%shards] }
func (t *Table) asShard(asn uint32) *shard     { return &t.shards[mix(uint64(asn)|1<<40)%shards] }

// ErrNotAddress is returned for a verdict whose address is not 4 or 16
// bytes.
var ErrNotAddress = errors.New("history: not an IPv4 or IPv6 address")

// Folded says what ApplyBatch did with a batch.
type Folded struct {
	Verdicts int // verdicts that changed the table
	Stale    int // verdicts not newer than the one held: nothing changed
	Attacks  int // attack reports counted
	Ignored  int // attack reports the attack table did not count (duplicates), and verdicts with an error
	Invalid  int // verdicts and reports that did not decode: skipped
}

// Add returns f plus o.
func (f Folded) Add(o Folded) Folded {
	return Folded{
		Verdicts: f.Verdicts + o.Verdicts, Stale: f.Stale + o.Stale, Attacks: f.Attacks + o.Attacks,
		Ignored: f.Ignored + o.Ignored, Invalid: f.Invalid + o.Invalid,
	}
}

// ApplyBatch folds one message of the verdict log: its verdicts (see
// AddVerdict; one with an error is not a verdict and is skipped), then its
// attack reports (see AddAttack), under one lock. An item that does not
// decode is skipped and counted as Invalid; the error then names the first
// one, and everything else in the batch is folded all the same.
//
// The verdict rule does not depend on the order of the batches, so the log's
// two streams may be interleaved in any way; attack reports are counted in
// the order they come (the attack table drops one it holds already), which
// is the order of their stream.
func (t *Table) ApplyBatch(b *styxv1.LogBatch) (Folded, error) {
	var f Folded
	var first error
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, v := range b.GetVerdicts() {
		if v.GetError() != "" {
			f.Ignored++
			continue
		}
		a, ok := netip.AddrFromSlice(v.GetAddress())
		if !ok {
			f.Invalid++
			if first == nil {
				first = fmt.Errorf("verdict: %w", ErrNotAddress)
			}
			continue
		}
		if t.addVerdictLocked(a.Unmap(), v.GetProxy(), v.GetInferredUnixNano()) {
			f.Verdicts++
		} else {
			f.Stale++
		}
	}
	for _, p := range b.GetAttacks() {
		r, err := attacks.FromProto(p)
		if err != nil {
			f.Invalid++
			if first == nil {
				first = fmt.Errorf("attack report: %w", err)
			}
			continue
		}
		if t.addAttackLocked(r) {
			f.Attacks++
		} else {
			f.Ignored++
		}
	}
	if first != nil {
		return f, fmt.Errorf("history: %d item(s) of log batch %d.%d skipped, the first: %w", f.Invalid, b.GetTerm(), b.GetSeq(), first)
	}
	return f, nil
}

// AddVerdict folds a verdict on addr made at (Unix nanoseconds; 0 when
// unknown). Per address the table holds the verdict with the newest
// inference time: an older one changes nothing, and of two made at the same
// time the proxy one is held. So the verdict held, and with it the
// bucket's and AS's counts, are the same whatever order the verdicts come
// in. It reports whether the verdict changed the table.
func (t *Table) AddVerdict(addr netip.Addr, proxy bool, at int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addVerdictLocked(addr.Unmap(), proxy, at)
}

// AddAttack folds an attack report; it reports false when the attack
// table (Config.Attacks) did not count it (a duplicate or invalid).
func (t *Table) AddAttack(r attacks.Report) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addAttackLocked(r)
}

// AddAttackHistory folds an address's attack history at once, as a store
// that kept it holds it: n reports, the kinds among them (bit k: a report
// of attacks.Kind k) and the latest one's time (Unix nanoseconds). It is
// the same as folding the n reports one by one with AddAttack, with no
// attack table in between (the store that kept them counted each once).
// n of 0 changes nothing.
func (t *Table) AddAttackHistory(addr netip.Addr, n uint32, kinds uint8, last int64) {
	if n == 0 || !addr.IsValid() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tick(last)
	t.update(addr.Unmap(), func(e *Entry) {
		e.Attacks += n
		e.Kinds |= kinds
		e.LastAttack = max(e.LastAttack, last)
	})
}

// newer reports whether a verdict (proxy, at) replaces the one e holds:
// it is newer, or as new and a proxy where the held one is not. This
// total order makes the verdict held independent of the order of folds.
func newer(e *Entry, proxy bool, at int64) bool {
	switch {
	case !e.Verdict || at > e.VerdictAt:
		return true
	case at < e.VerdictAt:
		return false
	}
	return proxy && !e.Proxy
}

func (t *Table) addVerdictLocked(a netip.Addr, proxy bool, at int64) bool {
	if e := t.entries[a]; e != nil && !newer(&e.Entry, proxy, at) {
		return false // not even its recency changes
	}
	t.tick(at)
	t.update(a, func(e *Entry) {
		e.Verdict, e.Proxy, e.VerdictAt = true, proxy, at
	})
	return true
}

func (t *Table) addAttackLocked(r attacks.Report) bool {
	if !r.Kind.Valid() || !r.Addr.IsValid() {
		return false
	}
	if t.cfg.Attacks != nil && !t.cfg.Attacks.Add(r) {
		return false
	}
	ns := r.Time.UnixNano()
	t.tick(ns)
	t.update(r.Addr.Unmap(), func(e *Entry) {
		e.Attacks++
		e.Kinds |= 1 << r.Kind
		e.LastAttack = max(e.LastAttack, ns)
	})
	return true
}

func (t *Table) tick(ns int64) {
	if ns > t.clock.Load() {
		t.clock.Store(ns)
	}
}

// update applies change to a's entry (a new one if needed, evicting the
// least recently updated when full), moves it to the front of the recency
// list, publishes it to its shard and carries the change of its
// contribution to its bucket and AS. Called with t.mu held.
func (t *Table) update(a netip.Addr, change func(*Entry)) {
	t.applied.Add(1)
	e := t.entries[a]
	ref := 0
	if e == nil {
		if len(t.entries) >= t.cfg.MaxAddrs {
			t.evictLocked()
		}
		var asn uint32
		if t.cfg.Locate != nil {
			asn = t.cfg.Locate(a)
		}
		e = &addrEntry{Entry: Entry{Addr: a, Bucket: BucketKey(a), ASN: asn}}
		t.entries[a] = e
		ref = 1
	} else {
		t.unlink(e)
	}
	t.pushFront(e)

	before := e.Contribution()
	change(&e.Entry)
	s := t.addrShard(a)
	s.mu.Lock()
	s.addrs[a] = e.val()
	s.mu.Unlock()
	t.shift(e.Bucket, e.ASN, before, e.Contribution(), ref)
}

// shift replaces a contribution to a bucket's and an AS's counts and adds
// ref (1: a new address, -1: an evicted one) to their references,
// dropping an entry that no address names any more.
func (t *Table) shift(bucket uint64, asn uint32, before, after Counts, ref int) {
	if before == after && ref == 0 {
		return
	}
	bs := t.bucketShard(bucket)
	shiftAgg(&bs.mu, bs.buckets, bucket, before, after, ref)
	if asn != 0 {
		as := t.asShard(asn)
		shiftAgg(&as.mu, as.ases, asn, before, after, ref)
	}
}

// shiftAgg applies shift's change to m[k] under mu.
func shiftAgg[K comparable](mu *sync.RWMutex, m map[K]agg, k K, before, after Counts, ref int) {
	mu.Lock()
	defer mu.Unlock()
	g := m[k]
	g.Counts = g.Counts.Sub(before).Add(after)
	g.refs = uint32(int(g.refs) + ref)
	if g.refs > 0 {
		m[k] = g
	} else {
		delete(m, k)
	}
}

func (t *Table) evictLocked() {
	e := t.tail
	if e == nil {
		return
	}
	t.unlink(e)
	delete(t.entries, e.Addr)
	s := t.addrShard(e.Addr)
	s.mu.Lock()
	delete(s.addrs, e.Addr)
	s.mu.Unlock()
	t.shift(e.Bucket, e.ASN, e.Contribution(), Counts{}, -1)
	t.evicted.Add(1)
}

func (t *Table) pushFront(e *addrEntry) {
	e.prev, e.next = nil, t.head
	if t.head != nil {
		t.head.prev = e
	}
	t.head = e
	if t.tail == nil {
		t.tail = e
	}
}

func (t *Table) unlink(e *addrEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		t.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// Lookup returns the statistics of addr, whose AS is asn (as the location
// database says; 0 for none): its own attack history, and the counts of
// its bucket and AS with its own contribution left out, so that an
// address's own verdict never feeds its own features. It probes one map in
// each of three shards under their read locks, one at a time, and does not
// allocate. A nil Table holds nothing: its Stats are zero (a schema 2
// model on a server that keeps no history).
func (t *Table) Lookup(addr netip.Addr, asn uint32) Stats {
	if t == nil {
		return Stats{}
	}
	a := addr.Unmap()
	st := Stats{Clock: t.clock.Load()}
	s := t.addrShard(a)
	s.mu.RLock()
	v, seen := s.addrs[a]
	s.mu.RUnlock()
	var self Counts
	if seen {
		st.Attacks, st.LastAttack, st.Kinds = v.attacks, v.lastAttack, uint8(bits.OnesCount8(v.kinds))
		self = v.contribution()
	}
	k := BucketKey(a)
	bs := t.bucketShard(k)
	bs.mu.RLock()
	b := bs.buckets[k]
	bs.mu.RUnlock()
	st.Bucket = b.Counts.Sub(self)
	if asn != 0 {
		as := t.asShard(asn)
		as.mu.RLock()
		c := as.ases[asn]
		as.mu.RUnlock()
		st.AS = c.Counts.Sub(self)
	}
	return st
}

// Bucket returns the counts of a bucket (BucketKey) with no one left out.
func (t *Table) Bucket(key uint64) Counts {
	s := t.bucketShard(key)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.buckets[key].Counts
}

// AS returns the counts of an AS with no one left out.
func (t *Table) AS(asn uint32) Counts {
	s := t.asShard(asn)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ases[asn].Counts
}

// Entry returns what the table holds about addr (waiting for a fold in
// progress).
func (t *Table) Entry(addr netip.Addr) (Entry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.entries[addr.Unmap()]; e != nil {
		return e.Entry, true
	}
	return Entry{}, false
}

// Each calls f for every address held, most recently updated first, while
// no fold runs (folds wait until it returns).
func (t *Table) Each(f func(Entry) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for e := t.head; e != nil; e = e.next {
		if !f(e.Entry) {
			return
		}
	}
}

// Sizes are the table's current sizes and counters.
type Sizes struct {
	Addrs, Buckets, ASes int
	Applied, Evicted     uint64 // address updates folded; addresses evicted
	Clock                time.Time
}

// Sizes returns the table's sizes.
func (t *Table) Sizes() Sizes {
	var z Sizes
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.RLock()
		z.Addrs += len(s.addrs)
		z.Buckets += len(s.buckets)
		z.ASes += len(s.ases)
		s.mu.RUnlock()
	}
	z.Applied, z.Evicted = t.applied.Load(), t.evicted.Load()
	if c := t.clock.Load(); c != 0 {
		z.Clock = time.Unix(0, c).UTC()
	}
	return z
}

func sub(a, b uint32) uint32 {
	if a < b {
		return 0
	}
	return a - b
}
