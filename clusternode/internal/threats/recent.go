package threats

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/verdict"
)

// Bounds of Recent's capacity.
const (
	DefaultCapacity = 500
	MaxCapacity     = 100_000
)

// Entry is one proxy in the window.
type Entry struct {
	Addr netip.Addr
	Type string // "VPN", "Anonymizer", "SOCKS5", ...; may be ""
	Risk uint32
	Port uint32 // the open port an evidence plugin confirmed, or 0
	// Seen is the verdict's inference time: when post-processing last
	// examined the address, shortly after a node saw it queried.
	Seen time.Time
}

// newer orders entries by Seen, then by address, so that the window's
// content does not depend on arrival order.
func newer(a, b Entry) bool {
	if c := a.Seen.Compare(b.Seen); c != 0 {
		return c > 0
	}
	return a.Addr.Compare(b.Addr) > 0
}

// Recent is the bounded window of the newest proxy verdicts. Its methods
// are safe for concurrent use.
type Recent struct {
	mu   sync.Mutex // a leaf: nothing else is locked while it is held
	cap  int
	heap entries // min-heap: the oldest entry at the root
}

// entries is a container/heap of Entry with an index by address.
type entries struct {
	e   []Entry
	pos map[netip.Addr]int
}

func (h *entries) Len() int           { return len(h.e) }
func (h *entries) Less(i, j int) bool { return newer(h.e[j], h.e[i]) }
func (h *entries) Swap(i, j int) {
	h.e[i], h.e[j] = h.e[j], h.e[i]
	h.pos[h.e[i].Addr] = i
	h.pos[h.e[j].Addr] = j
}
func (h *entries) Push(x any) {
	e := x.(Entry)
	h.pos[e.Addr] = len(h.e)
	h.e = append(h.e, e)
}
func (h *entries) Pop() any {
	e := h.e[len(h.e)-1]
	h.e = h.e[:len(h.e)-1]
	delete(h.pos, e.Addr)
	return e
}

// New returns an empty window of capacity addresses (1..MaxCapacity).
func New(capacity int) (*Recent, error) {
	if capacity < 1 || capacity > MaxCapacity {
		return nil, fmt.Errorf("threats: capacity %d outside 1..%d", capacity, MaxCapacity)
	}
	return &Recent{cap: capacity, heap: entries{
		e:   make([]Entry, 0, capacity),
		pos: make(map[netip.Addr]int, capacity),
	}}, nil
}

// Capacity is the most addresses the window holds.
func (r *Recent) Capacity() int { return r.cap }

// Len is the number of addresses held.
func (r *Recent) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.heap.Len()
}

// Update takes the newest verdict about e.Addr: a proxy verdict enters (or
// refreshes) the window when it is among the Capacity newest; a verdict
// saying e.Addr is not a proxy removes the address. A verdict older than
// the one held for the same address changes nothing.
func (r *Recent) Update(e Entry, proxy bool) {
	e.Addr = store.Normalize(e.Addr)
	r.mu.Lock()
	defer r.mu.Unlock()
	h := &r.heap
	if i, ok := h.pos[e.Addr]; ok {
		if e.Seen.Before(h.e[i].Seen) {
			return
		}
		if !proxy {
			heap.Remove(h, i)
			return
		}
		h.e[i] = e
		heap.Fix(h, i)
		return
	}
	switch {
	case !proxy:
	case h.Len() < r.cap:
		heap.Push(h, e)
	case newer(e, h.e[0]):
		delete(h.pos, h.e[0].Addr)
		h.e[0] = e
		h.pos[e.Addr] = 0
		heap.Fix(h, 0)
	}
}

// Wants reports whether a proxy verdict inferred at t could enter the
// window now (Fill's filter, which spares decoding the rest).
func (r *Recent) Wants(t time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.heap.Len() < r.cap || !t.Before(r.heap.e[0].Seen)
}

// Landed is the store's Config.OnVerdicts hook.
func (r *Recent) Landed(vs []store.Landed) {
	for _, l := range vs {
		r.Update(entryOf(l.Addr, l.Verdict), l.Verdict.Proxy)
	}
}

// Take is Update for the stored verdict v of addr: what Fill does with
// each verdict its scan reads.
func (r *Recent) Take(addr netip.Addr, v verdict.Verdict) {
	r.Update(entryOf(addr, v), v.Proxy)
}

func entryOf(addr netip.Addr, v verdict.Verdict) Entry {
	return Entry{Addr: addr, Type: v.Type, Risk: v.Risk, Port: v.Port, Seen: v.Inferred}
}

// Scanner is what Fill reads: store.Store.ScanVerdicts.
type Scanner interface {
	ScanVerdicts(want func(inferred time.Time) bool, fn func(addr netip.Addr, v verdict.Verdict)) error
}

// Fill loads the newest proxy verdicts of s into the window. Call it
// before verdicts start landing: a verdict that lands during Fill may be
// overtaken by the older one Fill reads for the same address.
func (r *Recent) Fill(s Scanner) error {
	return s.ScanVerdicts(r.Wants, r.Take)
}

// Sample returns up to n addresses drawn at random from the window without
// replacement, newest first. It costs O(n), whatever the capacity.
func (r *Recent) Sample(n int) []Entry {
	r.mu.Lock()
	size := r.heap.Len()
	n = max(0, min(n, size))
	// Floyd's algorithm: n distinct indices, each n-subset equally likely.
	picked := make(map[int]struct{}, n)
	out := make([]Entry, 0, n)
	for j := size - n; j < size; j++ {
		t := rand.IntN(j + 1)
		if _, dup := picked[t]; dup {
			t = j
		}
		picked[t] = struct{}{}
		out = append(out, r.heap.e[t])
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b Entry) int {
		if newer(a, b) {
			return -1
		}
		return 1
	})
	return out
}
