package nodehistory

import (
	"container/heap"
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/verdict"
)

// Folder folds what lands in the node's store into a table.
type Folder struct{ t *history.Table }

// New returns the Folder of t.
func New(t *history.Table) *Folder { return &Folder{t: t} }

// Landed is the store's Config.OnVerdicts hook: the latest verdict of each
// address counts.
func (f *Folder) Landed(vs []store.Landed) {
	for _, l := range vs {
		f.t.AddVerdict(l.Addr, l.Verdict.Proxy, l.Verdict.InferredUnixNano())
	}
}

// Attacked is the store's Config.OnAttacks hook: the store has already
// dropped duplicates, so every report counts.
func (f *Folder) Attacked(rs []attacks.Report) {
	for _, r := range rs {
		f.t.AddAttack(r)
	}
}

// Scanner is what Fill reads: store.Store.
type Scanner interface {
	ScanVerdicts(want func(inferred time.Time) bool, fn func(addr netip.Addr, v verdict.Verdict)) error
	ScanAttacks(fn func(addr netip.Addr, h store.AttackHistory)) error
}

// FillStats says what Fill folded.
type FillStats struct {
	Verdicts int // stored verdicts folded
	Attacked int // stored attack histories folded
	Skipped  int // verdicts and attack histories older than the newest max of their kind: left out
}

// Fill folds the stored verdicts and attack histories of s into t: of
// each kind the newest max (a verdict by its inference time, an attack
// history by its latest attack), all of them in time order (ties by
// address, a verdict before an attack history), so that the addresses
// updated longest ago are the ones a full table lets go, as if the events
// had been folded as they came. A scan that fails leaves what it read
// folded, and the error is returned. Its transient memory is about 50 bytes
// per kept entry, 2*max at most. Call it before anything writes to s:
// an event that lands during the scans could be folded twice.
func Fill(t *history.Table, s Scanner, max int) (FillStats, error) {
	var st FillStats
	seen := 0
	vs := &newest{max: max}
	err := s.ScanVerdicts(func(inferred time.Time) bool {
		seen++
		return vs.wants(verdict.UnixNanoOf(inferred))
	}, func(addr netip.Addr, v verdict.Verdict) {
		vs.offer(entry{addr: addr, at: v.InferredUnixNano(), proxy: v.Proxy})
	})
	as := &newest{max: max}
	aerr := s.ScanAttacks(func(addr netip.Addr, h store.AttackHistory) {
		n := h.Total()
		if n == 0 {
			return
		}
		e := entry{addr: addr, at: h.Last().UnixNano(), attack: true, n: uint32(min(n, 1<<32-1))}
		if h.Last().IsZero() {
			e.at = 0
		}
		for k, c := range h.Counts {
			if c > 0 {
				e.kinds |= 1 << k
			}
		}
		seen++
		as.offer(e)
	})
	all := append(vs.e, as.e...)
	st.Skipped = seen - len(all)
	slices.SortFunc(all, compare)
	for _, e := range all {
		if e.attack {
			t.AddAttackHistory(e.addr, e.n, e.kinds, e.at)
			st.Attacked++
		} else {
			t.AddVerdict(e.addr, e.proxy, e.at)
			st.Verdicts++
		}
	}
	return st, errors.Join(err, aerr)
}

// entry is a stored verdict or attack history Fill may fold.
type entry struct {
	addr   netip.Addr
	at     int64 // Unix nanoseconds: inference time, or latest attack
	attack bool
	proxy  bool
	kinds  uint8
	n      uint32
}

func compare(a, b entry) int {
	switch {
	case a.at < b.at:
		return -1
	case a.at > b.at:
		return 1
	}
	if c := a.addr.Compare(b.addr); c != 0 {
		return c
	}
	switch {
	case a.attack == b.attack:
		return 0
	case b.attack:
		return -1
	}
	return 1
}

// newest keeps the max newest entries offered: a min-heap, the oldest at
// the root.
type newest struct {
	max int
	e   []entry
}

func (h *newest) Len() int           { return len(h.e) }
func (h *newest) Less(i, j int) bool { return compare(h.e[i], h.e[j]) < 0 }
func (h *newest) Swap(i, j int)      { h.e[i], h.e[j] = h.e[j], h.e[i] }
func (h *newest) Push(x any)         { h.e = append(h.e, x.(entry)) }
func (h *newest) Pop() any {
	e := h.e[len(h.e)-1]
	h.e = h.e[:len(h.e)-1]
	return e
}

// wants reports whether an entry at this time could be kept.
func (h *newest) wants(at int64) bool { return len(h.e) < h.max || at >= h.e[0].at }

// offer keeps e if it is among the max newest so far.
func (h *newest) offer(e entry) {
	switch {
	case len(h.e) < h.max:
		heap.Push(h, e)
	case compare(h.e[0], e) < 0:
		h.e[0] = e
		heap.Fix(h, 0)
	}
}

// Register adds the table's metrics to reg.
func Register(reg prometheus.Registerer, t *history.Table) error {
	return reg.Register(history.NewCollector(t, "styx_node"))
}
