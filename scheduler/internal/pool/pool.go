package pool

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"time"

	"github.com/styx-inference/styx/pkg/recent"
)

// Waiter is one sighting waiting for an outcome: the node that submitted it
// and the node's sighting id.
type Waiter struct {
	Node string
	ID   uint64
}

// Outcome kinds produced by the pool.
type Kind uint8

const (
	KindVerdict Kind = iota + 1
	KindExpired
	KindShed
)

// Delivery is one outcome for one waiter. V is the verdict's type (opaque
// to the pool).
type Delivery[V any] struct {
	Waiter  Waiter
	Addr    netip.Addr
	Kind    Kind
	Verdict V // for KindVerdict; the zero V otherwise
	Reason  string
}

// Entry is one address in the pool (pending or in flight).
type Entry struct {
	Addr     netip.Addr
	Seen     int64 // earliest sighting time (unix nanos); max age counts from it
	Enqueued int64 // when it entered the pool
	Waiters  []Waiter
	inFlight bool
	// resolved is set when the entry leaves the pool (resolve deletes it
	// from entries, and nothing else does), so that checking an entry
	// costs no map lookup.
	resolved bool
	first    [1]Waiter // Waiters' first backing array: most addresses have one sighting
}

// Shedding modes.
const (
	ShedSample = "sample" // while overloaded, admit 1 in N new addresses
	ShedNewest = "newest" // while full, refuse new addresses
	ShedOldest = "oldest" // while full, shed the oldest pending address
)

// Policy is the shedding policy.
type Policy struct {
	Mode    string
	SampleN int // for ShedSample, >= 2
}

// Validate reports a policy error.
func (p Policy) Validate() error {
	switch p.Mode {
	case ShedNewest, ShedOldest:
		return nil
	case ShedSample:
		if p.SampleN < 2 {
			return fmt.Errorf("shed policy sample: sample_n %d < 2", p.SampleN)
		}
		return nil
	}
	return fmt.Errorf("shed policy: unknown mode %q (want sample, newest or oldest)", p.Mode)
}

func (p Policy) String() string {
	if p.Mode == ShedSample {
		return fmt.Sprintf("sample 1/%d", p.SampleN)
	}
	return p.Mode
}

// Config bounds the pool.
type Config struct {
	// MaxPending is the most addresses waiting (not in flight).
	MaxPending int
	// MaxAge is the longest a sighting may wait for its verdict (nanos).
	MaxAge int64
	// DedupWindow is how long a verdict answers repeated sightings (nanos).
	DedupWindow int64
	// MaxRecent bounds the recent-verdict window by count: a verdict
	// evicted from it (by age first, then by count) answers no more
	// sightings, and its address is examined again when sighted.
	MaxRecent int
	// MaxWaiters bounds the sightings attached to one address.
	MaxWaiters int
	Policy     Policy
}

// Validate reports a configuration error.
//
// The checks are plain ifs rather than a switch: mutation testing sees
// conditions inside if statements only.
func (c Config) Validate() error {
	if c.MaxPending < 1 {
		return errors.New("pool: max pending < 1")
	}
	if c.MaxAge <= 0 {
		return errors.New("pool: max age <= 0")
	}
	if c.DedupWindow < 0 {
		return errors.New("pool: dedup window < 0")
	}
	if c.MaxRecent < 0 {
		return errors.New("pool: max recent < 0")
	}
	if c.MaxWaiters < 1 {
		return errors.New("pool: max waiters < 1")
	}
	return c.Policy.Validate()
}

// Stats are cumulative counters and current sizes.
type Stats struct {
	Received     uint64 // sightings offered
	Unique       uint64 // new addresses that entered the pool
	Deduplicated uint64 // sightings joined to an entry or answered from the recent window
	Examined     uint64 // addresses that got a verdict from inference
	Shed         uint64 // sightings shed
	Expired      uint64 // sightings expired
	// RecentEvictedAge and RecentEvictedCount count the verdicts the
	// recent window dropped: older than the dedup window, and the oldest
	// to make room for a new one when MaxRecent are held.
	RecentEvictedAge   uint64
	RecentEvictedCount uint64
	Pending            int
	InFlight           int
	Recent             int // verdicts in the recent window
}

// addrKey is an address as the entries map keys it: 16 bytes without a
// zone, cheaper to hash and compare than a netip.Addr. Addresses reach the
// pool unmapped, so IPv4 and IPv6 keys never collide.
type addrKey [16]byte

func keyOf(a netip.Addr) addrKey { return a.As16() }

// Pool is the pending-address pool of verdicts of type V. See the package
// comment.
type Pool[V any] struct {
	cfg     Config
	entries map[addrKey]*Entry // pending and in flight
	queue   []*Entry           // pending FIFO; queue[head:] are live, queue[:head] consumed (nil)
	head    int
	pending int
	inFl    int

	// recent is the recent-verdict window (nil when it is off): verdicts
	// by address, at most MaxRecent, none older than DedupWindow.
	recent *window[V]

	seed  maphash.Seed
	stats Stats
}

// New returns an empty pool whose recent window keeps verdicts as they
// are. NewVerdicts keeps them compact.
func New[V any](cfg Config) (*Pool[V], error) { return newPool(cfg, same[V]()) }

// newPool returns an empty pool whose recent window keeps its verdicts
// packed by c.
func newPool[V, R any](cfg Config, c codec[V, R]) (*Pool[V], error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Pool[V]{
		cfg:     cfg,
		entries: make(map[addrKey]*Entry),
		seed:    maphash.MakeSeed(),
	}
	if cfg.MaxRecent > 0 && cfg.DedupWindow > 0 {
		w, err := newWindow(recent.Limits{MaxLen: cfg.MaxRecent, MaxAge: time.Duration(cfg.DedupWindow)}, c)
		if err != nil {
			return nil, fmt.Errorf("pool: recent-verdict window: %w", err)
		}
		p.recent = w
	}
	return p, nil
}

// SetPolicy changes the shedding policy live.
func (p *Pool[V]) SetPolicy(pol Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	p.cfg.Policy = pol
	return nil
}

// Policy returns the current shedding policy.
func (p *Pool[V]) Policy() Policy { return p.cfg.Policy }

// Stats returns the counters.
func (p *Pool[V]) Stats() Stats {
	s := p.stats
	s.Pending, s.InFlight = p.pending, p.inFl
	if p.recent != nil {
		var ev recent.Evictions
		s.Recent, ev = p.recent.size()
		s.RecentEvictedAge, s.RecentEvictedCount = ev.ByAge, ev.ByCount
	}
	return s
}

// Overloaded reports whether the pool is above its high-water mark (half
// full), where the sample policy starts admitting 1 in N.
func (p *Pool[V]) Overloaded() bool { return p.pending >= p.cfg.MaxPending/2 }

// Offer adds a sighting. It returns a Delivery and true when the sighting is
// answered at once (a recent verdict, expiry or shedding); otherwise the
// sighting now waits in the pool. Sightings of the same node and id are
// idempotent: a re-sent sighting joins its existing entry once.
func (p *Pool[V]) Offer(now int64, w Waiter, addr netip.Addr, seen int64) (Delivery[V], bool, []Delivery[V]) {
	p.stats.Received++
	// Mutation testing: seen >= now is an equivalent mutant (at equality it
	// assigns the value seen already has).
	if seen <= 0 || seen > now {
		seen = now
	}
	if now-seen > p.cfg.MaxAge {
		p.stats.Expired++
		return Delivery[V]{Waiter: w, Addr: addr, Kind: KindExpired, Reason: "older than max age on arrival"}, true, nil
	}
	if v, ok := p.lookupRecent(now, addr); ok {
		p.stats.Deduplicated++
		return Delivery[V]{Waiter: w, Addr: addr, Kind: KindVerdict, Verdict: v}, true, nil
	}
	if e, ok := p.entries[keyOf(addr)]; ok {
		for _, x := range e.Waiters {
			if x == w {
				p.stats.Deduplicated++
				return Delivery[V]{}, false, nil
			}
		}
		if len(e.Waiters) >= p.cfg.MaxWaiters {
			p.stats.Shed++
			return Delivery[V]{Waiter: w, Addr: addr, Kind: KindShed, Reason: "too many sightings of this address waiting"}, true, nil
		}
		p.stats.Deduplicated++
		e.Waiters = append(e.Waiters, w)
		// Mutation testing: seen <= e.Seen is an equivalent mutant (at
		// equality it stores the value e.Seen already has).
		if seen < e.Seen {
			e.Seen = seen
		}
		return Delivery[V]{}, false, nil
	}
	// A new address: admission control.
	var evicted []Delivery[V]
	switch p.cfg.Policy.Mode {
	case ShedSample:
		if p.pending >= p.cfg.MaxPending {
			p.stats.Shed++
			return Delivery[V]{Waiter: w, Addr: addr, Kind: KindShed, Reason: "pool full"}, true, nil
		}
		if p.Overloaded() && maphash.Comparable(p.seed, addr)%uint64(p.cfg.Policy.SampleN) != 0 {
			p.stats.Shed++
			return Delivery[V]{Waiter: w, Addr: addr, Kind: KindShed, Reason: fmt.Sprintf("overloaded: sampling 1 in %d", p.cfg.Policy.SampleN)}, true, nil
		}
	case ShedNewest:
		if p.pending >= p.cfg.MaxPending {
			p.stats.Shed++
			return Delivery[V]{Waiter: w, Addr: addr, Kind: KindShed, Reason: "pool full: newest shed"}, true, nil
		}
	case ShedOldest:
		if p.pending >= p.cfg.MaxPending {
			if old := p.popFront(); old != nil {
				var none V
				evicted = p.resolve(nil, old, KindShed, none, "pool full: oldest shed")
				p.stats.Shed += uint64(len(old.Waiters))
			}
		}
	}
	p.stats.Unique++
	e := &Entry{Addr: addr, Seen: seen, Enqueued: now}
	e.first[0] = w
	e.Waiters = e.first[:1:1]
	p.entries[keyOf(addr)] = e
	p.push(e)
	return Delivery[V]{}, false, evicted
}

func (p *Pool[V]) push(e *Entry) {
	p.queue = append(p.queue, e)
	p.pending++
}

// pushFront puts entries back at the head of the queue (requeue).
func (p *Pool[V]) pushFront(es []*Entry) {
	if p.head >= len(es) {
		p.head -= len(es)
		copy(p.queue[p.head:], es)
	} else {
		q := make([]*Entry, 0, len(es)+len(p.queue)-p.head)
		q = append(q, es...)
		q = append(q, p.queue[p.head:]...)
		p.queue, p.head = q, 0
	}
	p.pending += len(es)
}

func (p *Pool[V]) popFront() *Entry {
	for p.head < len(p.queue) {
		e := p.queue[p.head]
		p.queue[p.head] = nil
		p.head++
		if e != nil {
			p.pending--
			p.compact()
			return e
		}
	}
	p.compact()
	return nil
}

// peekFront returns the oldest pending entry, or nil. queue[head:] holds no
// nil (popFront nils what it consumes, behind the head; compact clears only
// past the end), so there is nothing to skip over.
func (p *Pool[V]) peekFront() *Entry {
	if p.head < len(p.queue) {
		return p.queue[p.head]
	}
	return nil
}

// compact releases the consumed part of the queue's backing array.
func (p *Pool[V]) compact() {
	if p.head == len(p.queue) {
		p.queue, p.head = p.queue[:0], 0
		return
	}
	if p.head > 4096 && p.head > len(p.queue)/2 {
		n := copy(p.queue, p.queue[p.head:])
		clear(p.queue[n:])
		p.queue, p.head = p.queue[:n], 0
	}
}

// Pending returns the number of pending addresses.
func (p *Pool[V]) Pending() int { return p.pending }

// OldestEnqueued returns when the oldest pending address entered the pool,
// and false when nothing is pending.
func (p *Pool[V]) OldestEnqueued() (int64, bool) {
	if e := p.peekFront(); e != nil {
		return e.Enqueued, true
	}
	return 0, false
}

// OldestSeen returns the sighting time of the oldest pending address.
func (p *Pool[V]) OldestSeen() (int64, bool) {
	if e := p.peekFront(); e != nil {
		return e.Seen, true
	}
	return 0, false
}

// Take removes up to max pending addresses from the head of the queue and
// marks them in flight. Entries past their maximum age are resolved as
// expired instead and returned as deliveries.
func (p *Pool[V]) Take(now int64, max int) ([]*Entry, []Delivery[V]) {
	var out []*Entry
	var dead []Delivery[V]
	for len(out) < max {
		e := p.popFront()
		if e == nil {
			break
		}
		if now-e.Seen > p.cfg.MaxAge {
			dead = p.expire(dead, e)
			continue
		}
		e.inFlight = true
		p.inFl++
		out = append(out, e)
	}
	return out, dead
}

// Requeue puts in-flight entries back at the head of the queue (a worker
// failed or refused). Entries past their maximum age expire instead.
func (p *Pool[V]) Requeue(now int64, es []*Entry) []Delivery[V] {
	var dead []Delivery[V]
	keep := es[:0:0]
	for _, e := range es {
		if e.resolved || !e.inFlight {
			continue // already resolved
		}
		e.inFlight = false
		p.inFl--
		if now-e.Seen > p.cfg.MaxAge {
			dead = p.expire(dead, e)
			continue
		}
		keep = append(keep, e)
	}
	p.pushFront(keep)
	return dead
}

// Complete resolves an in-flight entry with a verdict: every waiter gets
// it, and the verdict answers repeated sightings for the dedup window.
// examined says whether inference produced it (counted in coverage).
func (p *Pool[V]) Complete(now int64, e *Entry, verdict V, examined bool) []Delivery[V] {
	return p.AppendComplete(nil, now, e, verdict, examined)
}

// AppendComplete is Complete appending the deliveries to dst, so that a
// whole batch's results share one slice.
func (p *Pool[V]) AppendComplete(dst []Delivery[V], now int64, e *Entry, verdict V, examined bool) []Delivery[V] {
	if e.resolved || !e.inFlight {
		return dst // already resolved (a duplicate result)
	}
	e.inFlight = false
	p.inFl--
	if examined {
		p.stats.Examined++
	}
	p.remember(now, e.Addr, verdict)
	return p.resolve(dst, e, KindVerdict, verdict, "")
}

// Fail resolves an in-flight entry with an explicit reason (for example a
// poison address that failed on several workers). It is delivered as a
// verdict carrying the given (error) verdict.
func (p *Pool[V]) Fail(now int64, e *Entry, verdict V) []Delivery[V] {
	return p.Complete(now, e, verdict, false)
}

// expire resolves e as expired (past its maximum age).
func (p *Pool[V]) expire(dst []Delivery[V], e *Entry) []Delivery[V] {
	p.stats.Expired += uint64(len(e.Waiters))
	var none V
	return p.resolve(dst, e, KindExpired, none, "waited longer than max age")
}

// resolve removes e and appends a delivery per waiter to dst.
func (p *Pool[V]) resolve(dst []Delivery[V], e *Entry, k Kind, verdict V, reason string) []Delivery[V] {
	delete(p.entries, keyOf(e.Addr))
	e.resolved = true
	for _, w := range e.Waiters {
		dst = append(dst, Delivery[V]{Waiter: w, Addr: e.Addr, Kind: k, Verdict: verdict, Reason: reason})
	}
	return dst
}

func (p *Pool[V]) remember(now int64, addr netip.Addr, verdict V) {
	if p.recent != nil {
		p.recent.put(now, keyOf(addr), verdict)
	}
}

// Sweep expires pending sightings older than the maximum age, scanning from
// the head (the oldest), and forgets recent verdicts older than the dedup
// window. It returns the expiry deliveries.
func (p *Pool[V]) Sweep(now int64) []Delivery[V] {
	var dead []Delivery[V]
	for {
		e := p.peekFront()
		if e == nil || now-e.Seen <= p.cfg.MaxAge {
			break
		}
		p.popFront()
		dead = p.expire(dead, e)
	}
	if p.recent != nil {
		p.recent.sweep(now)
	}
	return dead
}

// ExpireInFlight resolves an in-flight entry as expired when it is past its
// maximum age (a batch that waited in the retry queue too long). It reports
// whether the entry was resolved.
func (p *Pool[V]) ExpireInFlight(now int64, e *Entry) ([]Delivery[V], bool) {
	if e.resolved || !e.inFlight || now-e.Seen <= p.cfg.MaxAge {
		return nil, false
	}
	e.inFlight = false
	p.inFl--
	return p.expire(nil, e), true
}

// Live reports whether e is still unresolved.
func (p *Pool[V]) Live(e *Entry) bool { return !e.resolved }

// lookupRecent returns the recent verdict for addr, if one answers it at
// now (not older than the dedup window).
func (p *Pool[V]) lookupRecent(now int64, addr netip.Addr) (V, bool) {
	if p.recent == nil {
		var none V
		return none, false
	}
	return p.recent.get(now, keyOf(addr))
}
