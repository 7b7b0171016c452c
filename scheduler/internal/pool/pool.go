// Package pool holds the addresses waiting for inference: a FIFO of pending
// addresses, the dedup window (one entry per address, however many nodes
// sighted it) and the recent-verdict window that answers repeated
// sightings without another inference. It decides admission under overload
// (the shedding policy) and expiry by maximum age.
//
// Pool is a plain data structure, not safe for concurrent use: the
// coordinator owns it under its lock. Time is always passed in.
package pool

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
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

// Delivery is one outcome for one waiter.
type Delivery struct {
	Waiter  Waiter
	Addr    netip.Addr
	Kind    Kind
	Verdict any // the verdict for KindVerdict (opaque to the pool)
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
	// MaxRecent bounds the recent-verdict window.
	MaxRecent int
	// MaxWaiters bounds the sightings attached to one address.
	MaxWaiters int
	Policy     Policy
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.MaxPending < 1:
		return errors.New("pool: max pending < 1")
	case c.MaxAge <= 0:
		return errors.New("pool: max age <= 0")
	case c.DedupWindow < 0:
		return errors.New("pool: dedup window < 0")
	case c.MaxRecent < 0:
		return errors.New("pool: max recent < 0")
	case c.MaxWaiters < 1:
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
	Pending      int
	InFlight     int
	Recent       int
}

// addrKey is an address as the entries map keys it: 16 bytes without a
// zone, cheaper to hash and compare than a netip.Addr. Addresses reach the
// pool unmapped, so IPv4 and IPv6 keys never collide.
type addrKey [16]byte

func keyOf(a netip.Addr) addrKey { return a.As16() }

type recent struct {
	verdict any
	at      int64
}

// Pool is the pending-address pool. See the package comment.
type Pool struct {
	cfg     Config
	entries map[addrKey]*Entry // pending and in flight
	queue   []*Entry           // pending FIFO; queue[head:] are live (nil = removed)
	head    int
	pending int
	inFl    int

	recent      map[netip.Addr]recent
	recentOrder []netip.Addr // FIFO of recent insertions
	recentHead  int

	seed  maphash.Seed
	stats Stats
}

// New returns an empty pool.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Pool{
		cfg:     cfg,
		entries: make(map[addrKey]*Entry),
		recent:  make(map[netip.Addr]recent),
		seed:    maphash.MakeSeed(),
	}, nil
}

// SetPolicy changes the shedding policy live.
func (p *Pool) SetPolicy(pol Policy) error {
	if err := pol.Validate(); err != nil {
		return err
	}
	p.cfg.Policy = pol
	return nil
}

// Policy returns the current shedding policy.
func (p *Pool) Policy() Policy { return p.cfg.Policy }

// Stats returns the counters.
func (p *Pool) Stats() Stats {
	s := p.stats
	s.Pending, s.InFlight, s.Recent = p.pending, p.inFl, len(p.recent)
	return s
}

// Overloaded reports whether the pool is above its high-water mark (half
// full), where the sample policy starts admitting 1 in N.
func (p *Pool) Overloaded() bool { return p.pending >= p.cfg.MaxPending/2 }

// Offer adds a sighting. It returns a Delivery and true when the sighting is
// answered at once (a recent verdict, expiry or shedding); otherwise the
// sighting now waits in the pool. Sightings of the same node and id are
// idempotent: a re-sent sighting joins its existing entry once.
func (p *Pool) Offer(now int64, w Waiter, addr netip.Addr, seen int64) (Delivery, bool, []Delivery) {
	p.stats.Received++
	if seen <= 0 || seen > now {
		seen = now
	}
	if now-seen > p.cfg.MaxAge {
		p.stats.Expired++
		return Delivery{Waiter: w, Addr: addr, Kind: KindExpired, Reason: "older than max age on arrival"}, true, nil
	}
	if r, ok := p.lookupRecent(addr); ok && now-r.at <= p.cfg.DedupWindow {
		p.stats.Deduplicated++
		return Delivery{Waiter: w, Addr: addr, Kind: KindVerdict, Verdict: r.verdict}, true, nil
	}
	if e, ok := p.entries[keyOf(addr)]; ok {
		for _, x := range e.Waiters {
			if x == w {
				p.stats.Deduplicated++
				return Delivery{}, false, nil
			}
		}
		if len(e.Waiters) >= p.cfg.MaxWaiters {
			p.stats.Shed++
			return Delivery{Waiter: w, Addr: addr, Kind: KindShed, Reason: "too many sightings of this address waiting"}, true, nil
		}
		p.stats.Deduplicated++
		e.Waiters = append(e.Waiters, w)
		if seen < e.Seen {
			e.Seen = seen
		}
		return Delivery{}, false, nil
	}
	// A new address: admission control.
	var evicted []Delivery
	switch p.cfg.Policy.Mode {
	case ShedSample:
		if p.pending >= p.cfg.MaxPending {
			p.stats.Shed++
			return Delivery{Waiter: w, Addr: addr, Kind: KindShed, Reason: "pool full"}, true, nil
		}
		if p.Overloaded() && maphash.Comparable(p.seed, addr)%uint64(p.cfg.Policy.SampleN) != 0 {
			p.stats.Shed++
			return Delivery{Waiter: w, Addr: addr, Kind: KindShed, Reason: fmt.Sprintf("overloaded: sampling 1 in %d", p.cfg.Policy.SampleN)}, true, nil
		}
	case ShedNewest:
		if p.pending >= p.cfg.MaxPending {
			p.stats.Shed++
			return Delivery{Waiter: w, Addr: addr, Kind: KindShed, Reason: "pool full: newest shed"}, true, nil
		}
	case ShedOldest:
		if p.pending >= p.cfg.MaxPending {
			if old := p.popFront(); old != nil {
				evicted = p.resolve(nil, old, KindShed, nil, "pool full: oldest shed")
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
	return Delivery{}, false, evicted
}

func (p *Pool) push(e *Entry) {
	p.queue = append(p.queue, e)
	p.pending++
}

// pushFront puts entries back at the head of the queue (requeue).
func (p *Pool) pushFront(es []*Entry) {
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

func (p *Pool) popFront() *Entry {
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

func (p *Pool) peekFront() *Entry {
	for p.head < len(p.queue) {
		if e := p.queue[p.head]; e != nil {
			return e
		}
		p.head++
	}
	return nil
}

// compact releases the consumed part of the queue's backing array.
func (p *Pool) compact() {
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
func (p *Pool) Pending() int { return p.pending }

// OldestEnqueued returns when the oldest pending address entered the pool,
// and false when nothing is pending.
func (p *Pool) OldestEnqueued() (int64, bool) {
	if e := p.peekFront(); e != nil {
		return e.Enqueued, true
	}
	return 0, false
}

// OldestSeen returns the sighting time of the oldest pending address.
func (p *Pool) OldestSeen() (int64, bool) {
	if e := p.peekFront(); e != nil {
		return e.Seen, true
	}
	return 0, false
}

// Take removes up to max pending addresses from the head of the queue and
// marks them in flight. Entries past their maximum age are resolved as
// expired instead and returned as deliveries.
func (p *Pool) Take(now int64, max int) ([]*Entry, []Delivery) {
	var out []*Entry
	var dead []Delivery
	for len(out) < max {
		e := p.popFront()
		if e == nil {
			break
		}
		if now-e.Seen > p.cfg.MaxAge {
			p.stats.Expired += uint64(len(e.Waiters))
			dead = p.resolve(dead, e, KindExpired, nil, "waited longer than max age")
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
func (p *Pool) Requeue(now int64, es []*Entry) []Delivery {
	var dead []Delivery
	keep := es[:0:0]
	for _, e := range es {
		if e.resolved || !e.inFlight {
			continue // already resolved
		}
		e.inFlight = false
		p.inFl--
		if now-e.Seen > p.cfg.MaxAge {
			p.stats.Expired += uint64(len(e.Waiters))
			dead = p.resolve(dead, e, KindExpired, nil, "waited longer than max age")
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
func (p *Pool) Complete(now int64, e *Entry, verdict any, examined bool) []Delivery {
	return p.AppendComplete(nil, now, e, verdict, examined)
}

// AppendComplete is Complete appending the deliveries to dst, so that a
// whole batch's results share one slice.
func (p *Pool) AppendComplete(dst []Delivery, now int64, e *Entry, verdict any, examined bool) []Delivery {
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
func (p *Pool) Fail(now int64, e *Entry, verdict any) []Delivery {
	return p.Complete(now, e, verdict, false)
}

// resolve removes e and appends a delivery per waiter to dst.
func (p *Pool) resolve(dst []Delivery, e *Entry, k Kind, verdict any, reason string) []Delivery {
	delete(p.entries, keyOf(e.Addr))
	e.resolved = true
	for _, w := range e.Waiters {
		dst = append(dst, Delivery{Waiter: w, Addr: e.Addr, Kind: k, Verdict: verdict, Reason: reason})
	}
	return dst
}

func (p *Pool) remember(now int64, addr netip.Addr, verdict any) {
	if p.cfg.MaxRecent == 0 || p.cfg.DedupWindow == 0 {
		return
	}
	if _, ok := p.recent[addr]; !ok {
		p.recentOrder = append(p.recentOrder, addr)
	}
	p.recent[addr] = recent{verdict: verdict, at: now}
	for len(p.recent) > p.cfg.MaxRecent {
		p.dropOldestRecent()
	}
}

func (p *Pool) dropOldestRecent() {
	if p.recentHead >= len(p.recentOrder) {
		return
	}
	delete(p.recent, p.recentOrder[p.recentHead])
	p.recentOrder[p.recentHead] = netip.Addr{}
	p.recentHead++
	if p.recentHead > 4096 && p.recentHead > len(p.recentOrder)/2 {
		n := copy(p.recentOrder, p.recentOrder[p.recentHead:])
		p.recentOrder, p.recentHead = p.recentOrder[:n], 0
	}
}

// Sweep expires pending sightings older than the maximum age, scanning from
// the head (the oldest), and forgets recent verdicts older than the dedup
// window. It returns the expiry deliveries.
func (p *Pool) Sweep(now int64) []Delivery {
	var dead []Delivery
	for {
		e := p.peekFront()
		if e == nil || now-e.Seen <= p.cfg.MaxAge {
			break
		}
		p.popFront()
		p.stats.Expired += uint64(len(e.Waiters))
		dead = p.resolve(dead, e, KindExpired, nil, "waited longer than max age")
	}
	for p.recentHead < len(p.recentOrder) {
		a := p.recentOrder[p.recentHead]
		r, ok := p.recent[a]
		if ok && now-r.at <= p.cfg.DedupWindow {
			break
		}
		if ok {
			delete(p.recent, a)
		}
		p.recentOrder[p.recentHead] = netip.Addr{}
		p.recentHead++
	}
	if p.recentHead == len(p.recentOrder) {
		p.recentOrder, p.recentHead = p.recentOrder[:0], 0
	}
	return dead
}

// ExpireInFlight resolves an in-flight entry as expired when it is past its
// maximum age (a batch that waited in the retry queue too long). It reports
// whether the entry was resolved.
func (p *Pool) ExpireInFlight(now int64, e *Entry) ([]Delivery, bool) {
	if e.resolved || !e.inFlight || now-e.Seen <= p.cfg.MaxAge {
		return nil, false
	}
	e.inFlight = false
	p.inFl--
	p.stats.Expired += uint64(len(e.Waiters))
	return p.resolve(nil, e, KindExpired, nil, "waited longer than max age"), true
}

// Live reports whether e is still unresolved.
func (p *Pool) Live(e *Entry) bool { return !e.resolved }

// lookupRecent returns the recent verdict for addr; an empty window (the
// dedup window off, or nothing answered yet) costs no hashing.
func (p *Pool) lookupRecent(addr netip.Addr) (recent, bool) {
	if len(p.recent) == 0 {
		return recent{}, false
	}
	r, ok := p.recent[addr]
	return r, ok
}
