package ledger

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"testing/quick"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/scheduler/internal/pool"
)

// sim is a world of nodes and fake workers driving a ledger with random
// events, checking its promises as it goes.
type sim struct {
	t   *testing.T
	l   *Ledger
	rng *rand.Rand
	now time.Time

	nextID   uint64
	offered  map[pool.Waiter]bool
	outcomes map[pool.Waiter]int
	workers  []*simWorker
	poison   int // the address index that kills any worker examining it
}

type simWorker struct {
	id      string
	session uint64 // 0: down
	credits uint32 // granted at Ready
	out     []Send // outstanding on this session
	gone    bool   // deregistered
}

var nextSession uint64

func (s *sim) collect(fx Effects) {
	s.t.Helper()
	for _, o := range fx.Outcomes {
		if !s.offered[o.Waiter] {
			s.t.Fatalf("outcome for a sighting never offered: %+v", o)
		}
		s.outcomes[o.Waiter]++
	}
	for _, r := range fx.Rejected {
		w := pool.Waiter{Node: r.Node, ID: r.ID}
		s.outcomes[w]++
	}
	for _, snd := range fx.Sends {
		w := s.worker(snd.Worker)
		if w == nil || w.session != snd.Session {
			// Sent to a session the world has already seen end: the shell
			// would fail to enqueue it and the session's loss requeues it.
			continue
		}
		if snd.Term != term || len(snd.Addrs) == 0 {
			s.t.Fatalf("bad send %+v", snd)
		}
		w.out = append(w.out, snd)
		// Promise 5: never more batches outstanding than granted.
		if uint32(len(w.out)) > w.credits {
			s.t.Fatalf("%s holds %d batches with %d credits", w.id, len(w.out), w.credits)
		}
	}
}

func (s *sim) worker(id string) *simWorker {
	for _, w := range s.workers {
		if w.id == id {
			return w
		}
	}
	return nil
}

func (s *sim) open(w *simWorker) {
	nextSession++
	w.session, w.out = nextSession, nil
	w.credits = uint32(1 + s.rng.IntN(3))
	s.l.SessionOpened(w.id, w.session, false)
	s.l.OnReady(w.id, w.session, w.credits, "m", false)
}

func (s *sim) lose(w *simWorker) {
	s.collect(s.l.OnSessionLost(s.now, w.id, w.session, "sim"))
	s.open(w)
}

// answer makes w answer its outstanding batch i, as a worker would: it
// dies on the poison address, and sometimes sends garbage.
func (s *sim) answer(w *simWorker, i int) {
	snd := w.out[i]
	w.out = slices.Delete(w.out, i, i+1)
	if slices.Contains(snd.Addrs, addr(s.poison)) {
		s.lose(w)
		return
	}
	r := answer(snd)
	if s.rng.IntN(10) == 0 {
		r.Verdicts = r.Verdicts[:len(r.Verdicts)-1] // malformed
	}
	if s.rng.IntN(8) == 0 {
		s.l.OnRefusal(w.id, w.session, 1, snd.Batch, snd.Attempt, "busy")
		return
	}
	s.collect(s.l.OnResult(s.now, w.id, w.session, 1, r))
	if s.rng.IntN(6) == 0 { // a duplicate, or one on a wrong attempt or term
		bad := answer(snd)
		switch s.rng.IntN(3) {
		case 0:
			bad.Attempt++
		case 1:
			bad.Term--
		}
		s.collect(s.l.OnResult(s.now, w.id, w.session, 0, bad))
	}
}

func (s *sim) step() {
	switch k := s.rng.IntN(100); {
	case k < 35: // a node offers a few sightings
		node := fmt.Sprintf("n%d", s.rng.IntN(3))
		var ss []Sighting
		for range 1 + s.rng.IntN(6) {
			s.nextID++
			age := time.Duration(s.rng.IntN(600)) * time.Second
			if s.rng.IntN(20) == 0 { // at the edge of the maximum age
				age = time.Hour - time.Duration(s.rng.IntN(120))*time.Second
			}
			sg := Sighting{ID: s.nextID, Addr: addr(s.rng.IntN(40)), Seen: s.now.Add(-age).UnixNano()}
			if s.rng.IntN(60) == 0 {
				sg.Addr = netip.Addr{} // invalid: rejected
			}
			s.offered[pool.Waiter{Node: node, ID: sg.ID}] = true
			ss = append(ss, sg)
		}
		if s.rng.IntN(40) == 0 {
			ids := make([]uint64, len(ss))
			for i, sg := range ss {
				ids[i] = sg.ID
			}
			s.collect(s.l.Reject(node, ids, "malformed"))
			return
		}
		s.collect(s.l.Offer(s.now, node, ss))
	case k < 55:
		s.collect(s.l.Assign(s.now))
	case k < 80: // a worker answers one of its batches
		w := s.workers[s.rng.IntN(len(s.workers))]
		if len(w.out) > 0 && !w.gone {
			s.answer(w, s.rng.IntN(len(w.out)))
		}
	case k < 85: // a stream breaks
		w := s.workers[s.rng.IntN(len(s.workers))]
		if !w.gone {
			s.lose(w)
		}
	case k < 88: // a lease expires; the worker comes back later
		w := s.workers[s.rng.IntN(len(s.workers))]
		if !w.gone {
			fx, _, _ := s.l.Deregister(s.now, w.id, false)
			s.collect(fx)
			w.gone, w.out, w.session = true, nil, 0
		} else {
			s.l.Register(s.now, keyspace.WorkerRegistration{ID: w.id, Addr: w.id, Capacity: 2})
			w.gone = false
			s.open(w)
		}
	case k < 95:
		s.now = s.now.Add(time.Duration(s.rng.IntN(30)) * time.Second)
		s.collect(s.l.Sweep(s.now))
	default:
		s.now = s.now.Add(50 * time.Millisecond)
	}
}

// finish answers everything: workers come back and answer until nothing
// is sent, then time passes the maximum age.
func (s *sim) finish() {
	for _, w := range s.workers {
		if w.gone {
			s.l.Register(s.now, keyspace.WorkerRegistration{ID: w.id, Addr: w.id, Capacity: 2})
			w.gone = false
			s.open(w)
		}
	}
	for round := 0; round < 10_000; round++ {
		s.now = s.now.Add(time.Second)
		s.collect(s.l.Assign(s.now))
		busy := false
		for _, w := range s.workers {
			for len(w.out) > 0 {
				busy = true
				snd := w.out[0]
				w.out = w.out[1:]
				if slices.Contains(snd.Addrs, addr(s.poison)) {
					s.lose(w)
					continue
				}
				s.collect(s.l.OnResult(s.now, w.id, w.session, 1, answer(snd)))
			}
		}
		if !busy && s.l.pool.Pending() == 0 && len(queued(s.t, s.l)) == 0 {
			break
		}
	}
	s.now = s.now.Add(2 * time.Hour)
	s.collect(s.l.Sweep(s.now))
}

// Every sighting STYX accepts ends in exactly one outcome, whatever the
// sequence of offers, results (stale, duplicate, malformed), refusals,
// broken streams, lost leases, a poison address and expiry.
func TestEverySightingEndsOnce(t *testing.T) {
	policies := []pool.Policy{{Mode: pool.ShedNewest}, {Mode: pool.ShedOldest}, {Mode: pool.ShedSample, SampleN: 3}}
	var total Counters
	var expired, shed uint64
	prop := func(seed uint64, steps uint16) bool {
		cfg := testConfig()
		cfg.Pool.MaxPending = 30
		cfg.Pool.MaxWaiters = 3
		cfg.Pool.Policy = policies[seed%3]
		l, err := New(cfg, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		s := &sim{t: t, l: l, rng: rand.New(rand.NewPCG(seed, 42)), now: t0, offered: map[pool.Waiter]bool{}, outcomes: map[pool.Waiter]int{}, poison: int(seed % 40)}
		for i := range 3 {
			w := &simWorker{id: fmt.Sprintf("w%d", i)}
			l.Register(t0, keyspace.WorkerRegistration{ID: w.id, Addr: w.id, Capacity: 2})
			s.open(w)
			s.workers = append(s.workers, w)
		}
		for range int(steps%2000) + 200 {
			s.step()
		}
		s.finish()
		for w := range s.offered {
			if n := s.outcomes[w]; n != 1 {
				t.Logf("seed %d: sighting %+v ended in %d outcomes", seed, w, n)
				return false
			}
		}
		c := l.Counters()
		total.Poisoned += c.Poisoned
		total.StaleResults += c.StaleResults
		total.Malformed += c.Malformed
		total.Splits += c.Splits
		st, _, _ := l.PoolStats(s.now)
		expired += st.Expired
		shed += st.Shed
		return true
	}

	if err := quick.Check(prop, &quick.Config{MaxCount: 60}); err != nil {
		t.Fatal(err)
	}
	// The runs went through every path the promise is about.
	if total.Poisoned == 0 || total.StaleResults == 0 || total.Malformed == 0 || total.Splits == 0 || expired == 0 || shed == 0 {
		t.Fatalf("the random runs missed a path: %+v, expired %d, shed %d", total, expired, shed)
	}
	t.Logf("over the runs: %d poisoned, %d stale, %d malformed, %d splits, %d expired, %d shed",
		total.Poisoned, total.StaleResults, total.Malformed, total.Splits, expired, shed)
}
