package visual

import (
	"context"
	"maps"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	memdb "github.com/hashicorp/go-memdb"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/retry"
	"github.com/styx-inference/styx/scheduler/internal/api"
	"github.com/styx-inference/styx/scheduler/internal/coordinator"
)

// Source is what the Hub reads: the scheduler's role and, while it leads,
// its coordinator.
type Source interface {
	ID() string
	// Current returns the coordinator while this scheduler leads, else nil.
	Current() *coordinator.Coordinator
	// Leader returns the known leader (possibly another scheduler).
	Leader() (keyspace.LeaderInfo, bool)
	// RoleChanged returns a channel closed at the next change of Current or
	// Leader.
	RoleChanged() <-chan struct{}
}

// Config tunes the Hub; zero values take the defaults.
type Config struct {
	// MinInterval is the shortest time between two Models (default 250 ms:
	// at most 4 updates a second).
	MinInterval time.Duration
	// Refresh is the longest time between two Models while someone watches
	// and nothing changes, so that time-based figures (the oldest
	// sighting's age, rates) move (default 2 s).
	Refresh time.Duration
	// KeepAlive is the interval of comment lines on an idle stream
	// (default 15 s).
	KeepAlive time.Duration
	// Now returns the time; time.Now when nil.
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.MinInterval <= 0 {
		c.MinInterval = 250 * time.Millisecond
	}
	if c.Refresh <= 0 {
		c.Refresh = 2 * time.Second
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Model is one picture of what the scheduler sees. Models are never
// changed once published.
type Model struct {
	Self       string
	Leading    bool
	Term       int64
	LeaderID   string
	LeaderHTTP string

	Pool    PoolView
	Rates   Rates
	Workers []WorkerView // ordered by Slot
	Nodes   []NodeView   // connected nodes, ordered by id
}

// NodeView is a connected cluster node and how far behind the verdict log
// it last said it is.
type NodeView struct {
	ID         string
	Reported   bool    // it has reported its log position this session
	Lag        uint64  // messages behind the log's heads
	LagSeconds float64 // rounded to 0.1 s, so that a steady lag sends no deltas
	Connected  bool    // its connection to the log is up
	Stalled    bool    // connected and behind, applying nothing
}

// PoolView holds the pool's figures.
type PoolView struct {
	Pending, InFlight                         uint64
	OldestMillis                              int64
	Received, Examined, Deduplicated          uint64
	Shed, Expired, Reassigned, Verdicts, Prox uint64
	Coverage                                  float64
	Policy                                    string
}

// Rates are derived from the counters over recent Models.
type Rates struct {
	SightingsPerSec, VerdictsPerSec, ProxiesPerHour float64
}

// WorkerView is one worker as the page shows it.
type WorkerView struct {
	Slot     int // stable small number within a term, used by deltas
	ID       string
	Host     string
	NUMA     int
	CPUs     string
	Cores    int
	Capacity int
	Credits  int
	InFlight int
	Batches  uint64  // batches answered this term
	Rate     float64 // addresses per second, as the coordinator measures it (WorkerRates)
	Model    string
	State    string
}

// StreamStats describes one open event stream.
type StreamStats struct {
	Bytes int64
	Open  time.Duration
}

// Hub builds Models and hands them to streams. See the package comment.
type Hub struct {
	cfg Config
	src Source
	log zerolog.Logger

	mu      sync.Mutex
	model   *Model
	changed chan struct{} // closed when model is replaced
	wakeSub chan struct{} // a first subscriber arrived (capacity 1)
	streams map[*stream]struct{}
	done    chan struct{} // closed when Run returns

	// The pool's figures need the coordinator's mutex, which a busy leader
	// can hold for long: a helper goroutine reads them (statsReq asks), and
	// build uses the latest it read without waiting. statsNew is signalled
	// when the figures changed.
	statsReq chan *coordinator.Coordinator
	statsNew chan struct{}
	stats    atomic.Pointer[poolStats]

	// Owned by Run.
	term     int64
	slots    map[string]int
	nextSlot int
	samples  []sample
}

type poolStats struct {
	co     *coordinator.Coordinator
	at     time.Time
	pool   PoolView
	counts sample
	rates  map[string]float64 // the coordinator's per-worker throughput
}

type sample struct {
	at                          time.Time
	received, verdicts, proxies uint64
}

// New returns a Hub reading src; Run builds Models.
func New(cfg Config, src Source, log zerolog.Logger) *Hub {
	cfg.defaults()
	return &Hub{
		cfg: cfg, src: src, log: logging.For(log, "visual"),
		changed: make(chan struct{}), wakeSub: make(chan struct{}, 1),
		streams: make(map[*stream]struct{}), done: make(chan struct{}),
		statsReq: make(chan *coordinator.Coordinator, 1), statsNew: make(chan struct{}, 1),
	}
}

// Run builds Models while someone watches, until ctx ends. Streams end when
// Run returns.
func (h *Hub) Run(ctx context.Context) {
	defer close(h.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() { defer wg.Done(); h.readStats(ctx) }()
	var last time.Time
	for ctx.Err() == nil {
		if h.subscribers() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-h.wakeSub:
			}
			continue
		}
		if wait := h.cfg.MinInterval - h.cfg.Now().Sub(last); wait > 0 {
			if !retry.Sleep(ctx, wait) {
				return
			}
		}
		ws := memdb.NewWatchSet()
		ws.Add(h.wakeSub) // a new watcher gets a fresh picture at once
		ws.Add(h.statsNew)
		m := h.build(ws)
		last = h.cfg.Now()
		h.publish(m)
		wctx, cancel := context.WithTimeout(ctx, h.cfg.Refresh)
		_ = ws.WatchCtx(wctx)
		cancel()
	}
}

func (h *Hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.streams)
}

func (h *Hub) publish(m *Model) {
	h.mu.Lock()
	h.model = m
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// latest returns the newest Model (nil before the first) and a channel
// closed when a newer one is published.
func (h *Hub) latest() (*Model, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.model, h.changed
}

func (h *Hub) subscribe(s *stream) {
	h.mu.Lock()
	h.streams[s] = struct{}{}
	h.mu.Unlock()
	select {
	case h.wakeSub <- struct{}{}:
	default:
	}
}

func (h *Hub) unsubscribe(s *stream) {
	h.mu.Lock()
	delete(h.streams, s)
	if len(h.streams) == 0 {
		h.model = nil // the next watcher starts from a fresh picture
	}
	h.mu.Unlock()
}

// Streams reports the open event streams.
func (h *Hub) Streams() []StreamStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.cfg.Now()
	out := make([]StreamStats, 0, len(h.streams))
	for s := range h.streams {
		out = append(out, StreamStats{Bytes: s.bytes.Load(), Open: now.Sub(s.since)})
	}
	return out
}

// build reads the scheduler's role and, while it leads, a memdb snapshot
// and the pool's figures. It adds to ws the channels whose closing means
// the picture changed.
func (h *Hub) build(ws memdb.WatchSet) *Model {
	ws.Add(h.src.RoleChanged()) // before reading the role, so no change is missed
	now := h.cfg.Now()
	m := &Model{Self: h.src.ID()}
	if li, ok := h.src.Leader(); ok {
		m.LeaderID, m.LeaderHTTP = li.ID, li.HTTPAddr
	}
	co := h.src.Current()
	if co == nil {
		h.resetTerm(0)
		return m
	}
	m.Leading, m.Term = true, co.Term()
	if m.Term != h.term {
		h.resetTerm(m.Term)
	}
	snap := co.State().Snapshot()
	rows, err := snap.Workers(ws)
	if err != nil {
		h.log.Warn().Err(err).Msg("list workers")
	}
	subs, err := snap.Submitters(ws)
	if err != nil {
		h.log.Warn().Err(err).Msg("list submitters")
	}
	for _, s := range subs {
		if s.Connected {
			m.Nodes = append(m.Nodes, NodeView{
				ID: s.NodeID, Reported: !s.Log.At.IsZero(), Lag: s.Log.Lag,
				LagSeconds: math.Round(s.Log.LagSeconds*10) / 10, Connected: s.Log.Connected, Stalled: s.Log.Stalled,
			})
		}
	}
	select {
	case h.statsReq <- co:
	default: // a read is under way
	}
	var rates map[string]float64
	if ps := h.stats.Load(); ps != nil && ps.co == co {
		m.Pool = ps.pool
		if age := now.Sub(ps.at); ps.pool.Pending > 0 && age > 0 {
			m.Pool.OldestMillis += age.Milliseconds()
		}
		m.Rates = h.rates(ps.counts)
		rates = ps.rates
	} else {
		m.Pool.Coverage = 1
	}

	seen := make(map[string]bool, len(rows))
	m.Workers = make([]WorkerView, 0, len(rows))
	for _, w := range rows {
		seen[w.ID] = true
		slot, ok := h.slots[w.ID]
		if !ok {
			h.nextSlot++
			slot = h.nextSlot
			h.slots[w.ID] = slot
		}
		m.Workers = append(m.Workers, WorkerView{
			Slot: slot, ID: w.ID, Host: w.Host, NUMA: w.NUMANode, CPUs: w.CPUs, Cores: countCPUs(w.CPUs),
			Capacity: w.Capacity, Credits: max(w.Credits, 0), InFlight: max(w.InFlight, 0),
			Batches: w.BatchesDone, Rate: rates[w.ID], Model: w.ModelVersion, State: w.State,
		})
	}
	for id := range h.slots {
		if !seen[id] {
			delete(h.slots, id)
		}
	}
	sort.Slice(m.Workers, func(i, j int) bool { return m.Workers[i].Slot < m.Workers[j].Slot })
	return m
}

// readStats reads the pool's figures whenever build asks, and signals
// statsNew when they changed.
func (h *Hub) readStats(ctx context.Context) {
	for {
		var co *coordinator.Coordinator
		select {
		case <-ctx.Done():
			return
		case co = <-h.statsReq:
		}
		ps, ctr, policy, age := co.Stats()
		rates := co.WorkerRates()
		at := h.cfg.Now()
		n := &poolStats{co: co, at: at, pool: PoolView{
			Pending: uint64(ps.Pending), InFlight: uint64(ps.InFlight), OldestMillis: age.Milliseconds(),
			Received: ps.Received, Examined: ps.Examined, Deduplicated: ps.Deduplicated, Shed: ps.Shed,
			Expired: ps.Expired, Reassigned: ctr.Reassigned, Verdicts: ctr.Verdicts, Prox: ctr.Proxies,
			Coverage: api.Coverage(ps), Policy: policy,
		}, counts: sample{at: at, received: ps.Received, verdicts: ctr.Verdicts, proxies: ctr.Proxies}, rates: rates}
		old := h.stats.Swap(n)
		if old != nil && old.co == co {
			a, b := old.pool, n.pool
			a.OldestMillis, b.OldestMillis = 0, 0 // the page moves the age on by itself
			if a == b && maps.Equal(old.rates, n.rates) {
				continue
			}
		}
		select {
		case h.statsNew <- struct{}{}:
		default:
		}
	}
}

func (h *Hub) resetTerm(term int64) {
	if term == h.term && h.slots != nil {
		return
	}
	h.term = term
	h.slots = make(map[string]int)
	h.samples = h.samples[:0]
}

// Sample history: one sample a second at most, ten minutes kept. Sightings
// and verdicts per second are measured over the last 5 s, proxies per hour
// over the whole history.
const (
	sampleEvery = time.Second
	sampleKeep  = 600
	shortWindow = 5 * time.Second
)

func (h *Hub) rates(cur sample) Rates {
	now := cur.at
	if n := len(h.samples); n == 0 || now.Sub(h.samples[n-1].at) >= sampleEvery {
		if n == sampleKeep {
			copy(h.samples, h.samples[1:])
			h.samples = h.samples[:n-1]
		}
		h.samples = append(h.samples, cur)
	}
	var r Rates
	if len(h.samples) < 2 {
		return r
	}
	oldest := h.samples[0]
	short := oldest
	for _, s := range h.samples {
		if now.Sub(s.at) <= shortWindow {
			short = s
			break
		}
	}
	if short.at.Equal(cur.at) {
		short = h.samples[len(h.samples)-2]
	}
	if dt := cur.at.Sub(short.at).Seconds(); dt > 0 {
		r.SightingsPerSec = float64(cur.received-short.received) / dt
		r.VerdictsPerSec = float64(cur.verdicts-short.verdicts) / dt
	}
	if dt := cur.at.Sub(oldest.at).Seconds(); dt > 0 {
		r.ProxiesPerHour = float64(cur.proxies-oldest.proxies) / dt * 3600
	}
	return r
}

// countCPUs counts the CPUs of a cpulist such as "0-3,8,10-11".
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, errA := atoi(lo)
		if !isRange {
			if errA {
				n++
			}
			continue
		}
		b, errB := atoi(hi)
		if errA && errB && b >= a {
			n += b - a + 1
		}
	}
	return n
}

func atoi(s string) (int, bool) {
	if s == "" || len(s) > 6 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
