package uplink

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/leader"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// One embedded etcd serves every test of the package; each test clears the
// leader prefix first.
var etcd *embedetcd.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "uplink-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	etcd, err = embedetcd.Start(embedetcd.Config{Dir: dir, ClientAddr: "127.0.0.1:0"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	etcd.Close()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

type harness struct {
	t     *testing.T
	cli   *clientv3.Client
	store *store.Store
	up    *Uplink

	mu       sync.Mutex
	outcomes map[uint64][]styxv1.OutcomeKind

	cancel context.CancelFunc
	done   chan error
}

func newHarness(t *testing.T, mod func(*Config)) *harness {
	t.Helper()
	cli, err := etcd.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	if _, err := cli.Delete(context.Background(), keyspace.LeaderPrefix, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "node.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	h := &harness{t: t, cli: cli, store: st, outcomes: map[uint64][]styxv1.OutcomeKind{}}
	cfg := Config{
		NodeID:        "node-a",
		Leaders:       func(ctx context.Context) <-chan keyspace.LeaderInfo { return leader.Observe(ctx, cli) },
		Store:         st,
		DedupWindow:   time.Minute,
		DedupMax:      1000,
		MaxPending:    1000,
		BatchSize:     64,
		BatchInterval: 5 * time.Millisecond,
		BackoffMin:    10 * time.Millisecond,
		BackoffMax:    100 * time.Millisecond,
		OnOutcome: func(id uint64, _ netip.Addr, kind styxv1.OutcomeKind) {
			h.mu.Lock()
			h.outcomes[id] = append(h.outcomes[id], kind)
			h.mu.Unlock()
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	h.up, err = New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.up.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("uplink did not stop")
	}
}

func (h *harness) fake(cfg fakesched.Config, suffix string) *fakesched.Server {
	h.t.Helper()
	f, err := fakesched.Start(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(f.Stop)
	if err := f.Register(context.Background(), h.cli, suffix); err != nil {
		h.t.Fatal(err)
	}
	return f
}

func (h *harness) outcomeCalls() map[uint64][]styxv1.OutcomeKind {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[uint64][]styxv1.OutcomeKind, len(h.outcomes))
	for k, v := range h.outcomes {
		m[k] = append([]styxv1.OutcomeKind(nil), v...)
	}
	return m
}

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})
	}
	return out
}

func TestSightingsReachLeaderAndVerdictsAreStored(t *testing.T) {
	h := newHarness(t, nil)
	f := h.fake(fakesched.Config{ID: "styx-1", Answer: fakesched.VerdictFor}, "x")
	h.start()

	now := time.Now()
	as := append(addrs(10), netip.MustParseAddr("2001:db8::1"))
	for _, a := range as {
		if !h.up.Offer(a, now) {
			t.Fatalf("Offer(%s) = false", a)
		}
	}
	// Within the dedup window: not submitted again.
	if h.up.Offer(as[0], now.Add(time.Second)) {
		t.Fatal("address offered again within the window was submitted")
	}
	testwait.For(t, testwait.Timeout, "every verdict", func() bool { return h.up.Stats().Verdicts == uint64(len(as)) })

	st := h.up.Stats()
	if st.Submitted != uint64(len(as)) || st.Pending != 0 || st.Deduplicated != 1 || st.DuplicateOutcomes != 0 {
		t.Fatalf("stats %+v", st)
	}
	got := f.Sightings()
	if len(got) != len(as) {
		t.Fatalf("leader got %d sightings, want %d", len(got), len(as))
	}
	sent := map[netip.Addr]bool{}
	for _, a := range as {
		sent[a] = true
	}
	for _, sg := range got {
		if !sent[sg.Addr] || sg.Seen != now.UnixNano() {
			t.Fatalf("sighting %+v", sg)
		}
	}
	if hs := f.Hellos(); len(hs) != 1 || hs[0] != "node-a" {
		t.Fatalf("hellos %v", hs)
	}
	for _, a := range as {
		e, err := h.store.Lookup(a)
		if err != nil || !e.HasVerdict || !e.Verdict.Proxy || e.Verdict.Type != "VPN" {
			t.Fatalf("store for %s: %+v, %v", a, e, err)
		}
	}
	for id, kinds := range h.outcomeCalls() {
		if len(kinds) != 1 || kinds[0] != styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
			t.Fatalf("OnOutcome for %d: %v", id, kinds)
		}
	}
	// After the window the address goes again, with a new id.
	if !h.up.Offer(as[0], now.Add(2*time.Minute)) {
		t.Fatal("address offered after the window was not submitted")
	}
	testwait.For(t, testwait.Timeout, "the second sighting's verdict", func() bool { return h.up.Stats().Verdicts == uint64(len(as)+1) })
}

func TestOutcomeKindsCountedAndDuplicatesIgnored(t *testing.T) {
	h := newHarness(t, nil)
	f := h.fake(fakesched.Config{}, "x")
	h.start()
	for _, a := range addrs(4) {
		h.up.Offer(a, time.Now())
	}
	testwait.For(t, testwait.Timeout, "4 sightings at the leader", func() bool { return len(f.Sightings()) == 4 })
	ids := sortedIDs(f.Sightings())
	kinds := []styxv1.OutcomeKind{
		styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, styxv1.OutcomeKind_OUTCOME_KIND_EXPIRED,
		styxv1.OutcomeKind_OUTCOME_KIND_SHED, styxv1.OutcomeKind_OUTCOME_KIND_REJECTED,
	}
	var outs []*columns.Outcome
	for i, id := range ids {
		o := &columns.Outcome{SightingID: id, Kind: kinds[i], Reason: "test"}
		if kinds[i] == styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
			o = fakesched.VerdictFor(f.Sightings()[id])
		}
		outs = append(outs, o)
	}
	// Every outcome twice, plus one for an id never submitted.
	outs = append(outs, outs...)
	outs = append(outs, &columns.Outcome{SightingID: 12345, Kind: styxv1.OutcomeKind_OUTCOME_KIND_SHED})
	if err := f.SendOutcomes(outs...); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "all resolved", func() bool { s := h.up.Stats(); return s.Pending == 0 && s.DuplicateOutcomes == 5 })
	st := h.up.Stats()
	if st.Verdicts != 1 || st.Expired != 1 || st.Shed != 1 || st.Rejected != 1 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
	calls := h.outcomeCalls()
	for i, id := range ids {
		if k := calls[id]; len(k) != 1 || k[0] != kinds[i] {
			t.Fatalf("OnOutcome for %d: %v, want once %v", id, k, kinds[i])
		}
	}
}

func sortedIDs(m map[uint64]columns.Sighting) []uint64 {
	ids := make([]uint64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
	return ids
}

// A broken stream and a leader change both re-send every pending sighting;
// outcomes then resolve each exactly once.
func TestReconnectAndLeaderChangeResendPending(t *testing.T) {
	h := newHarness(t, nil)
	f1 := h.fake(fakesched.Config{ID: "styx-1"}, "x")
	h.start()
	for _, a := range addrs(5) {
		h.up.Offer(a, time.Now())
	}
	testwait.For(t, testwait.Timeout, "5 sightings at the leader", func() bool { return len(f1.Sightings()) == 5 })
	first := sortedIDs(f1.Sightings())
	// Resolve one before the break: it must not be sent again.
	if err := f1.SendOutcomes(fakesched.VerdictFor(f1.Sightings()[first[0]])); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "first verdict", func() bool { return h.up.Stats().Verdicts == 1 })

	f1.Disconnect()
	testwait.For(t, testwait.Timeout, "the pending 4 sent again", func() bool {
		r := f1.Received()
		for _, id := range first[1:] {
			if r[id] != 2 {
				return false
			}
		}
		return f1.Sessions() == 2
	})
	if r := f1.Received(); r[first[0]] != 1 {
		t.Fatalf("resolved sighting sent %d times", r[first[0]])
	}
	if st := h.up.Stats(); st.Resent != 4 || st.Pending != 4 {
		t.Fatalf("after reconnect: %+v", st)
	}

	// A new leader appears (lower create revision wins: delete the old key).
	f2 := h.fake(fakesched.Config{ID: "styx-2", Term: 2}, "y")
	if _, err := h.cli.Delete(context.Background(), keyspace.LeaderPrefix+"x"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "the pending 4 at the new leader", func() bool { return len(f2.Sightings()) == 4 })
	if st := h.up.Stats(); st.Resent != 8 {
		t.Fatalf("after leader change: %+v", st)
	}
	// The new leader answers everything, twice; the old id once more.
	var outs []*columns.Outcome
	for _, sg := range f2.Sightings() {
		outs = append(outs, fakesched.VerdictFor(sg))
	}
	outs = append(outs, outs...)
	outs = append(outs, fakesched.VerdictFor(f1.Sightings()[first[0]]))
	if err := f2.SendOutcomes(outs...); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "all resolved", func() bool { return h.up.Stats().Pending == 0 && h.up.Stats().DuplicateOutcomes == 5 })
	if st := h.up.Stats(); st.Verdicts != 5 {
		t.Fatalf("final stats %+v", st)
	}
	for _, id := range first {
		if k := h.outcomeCalls()[id]; len(k) != 1 {
			t.Fatalf("OnOutcome for %d called %d times", id, len(k))
		}
	}
}

func TestFollowerRefusesThenLeaderAccepts(t *testing.T) {
	h := newHarness(t, nil)
	fol := h.fake(fakesched.Config{ID: "follower", Follower: true}, "x")
	h.start()
	h.up.Offer(addrs(1)[0], time.Now())
	// A stream opens only after the one before it has ended: at the
	// second refusal, the uplink has finished with the first.
	testwait.For(t, testwait.Timeout, "two refused attempts", func() bool { return fol.Refused() >= 2 })
	if st := h.up.Stats(); st.Sessions != 0 || st.Connected {
		t.Fatalf("a refused stream counted as a session: %+v", st)
	}
	lead := h.fake(fakesched.Config{ID: "leader", Answer: fakesched.VerdictFor}, "y")
	if _, err := h.cli.Delete(context.Background(), keyspace.LeaderPrefix+"x"); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "verdict from the leader", func() bool { return h.up.Stats().Verdicts == 1 })
	if lead.Sessions() != 1 {
		t.Fatalf("leader sessions %d", lead.Sessions())
	}
}

func TestPendingIsBounded(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxPending = 3 })
	h.start() // no leader at all
	for _, a := range addrs(5) {
		h.up.Offer(a, time.Now())
	}
	st := h.up.Stats()
	if st.Submitted != 3 || st.NotSubmitted != 2 || st.Pending != 3 {
		t.Fatalf("stats %+v", st)
	}
	// Not-submitted addresses were not remembered by the dedup window: once
	// there is room they go.
	f := h.fake(fakesched.Config{Answer: fakesched.VerdictFor}, "x")
	testwait.For(t, testwait.Timeout, "the 3 resolved", func() bool { return h.up.Stats().Pending == 0 })
	if !h.up.Offer(addrs(5)[4], time.Now()) {
		t.Fatal("address refused while full not submitted later")
	}
	testwait.For(t, testwait.Timeout, "4 at the leader", func() bool { return len(f.Sightings()) == 4 })
}

func TestBatchesRespectMaxBatch(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.BatchSize = 8; c.BatchInterval = time.Hour })
	h.start() // no leader yet: the sightings wait in the queue
	for _, a := range addrs(8) {
		h.up.Offer(a, time.Now())
	}
	// The eighth filled a batch of BatchSize and left a kick, which the
	// sender takes once a session is up. The leader lowers batches to 3:
	// two full ones go at once; the last two wait for the interval.
	f := h.fake(fakesched.Config{MaxBatch: 3}, "x")
	testwait.For(t, testwait.Timeout, "two full batches", func() bool { return len(f.Batches()) >= 2 })
	// The sender takes kicks one at a time: once it has taken this second
	// one, it is done with the first, and a partial batch sent for it
	// would be counted by now.
	select {
	case h.up.notify <- struct{}{}:
	default:
		t.Fatal("the first kick was not taken")
	}
	testwait.For(t, testwait.Timeout, "the second kick taken", func() bool { return len(h.up.notify) == 0 })
	if st := h.up.Stats(); st.BatchesSent != 2 || st.Pending != 8 {
		t.Fatalf("stats %+v, want 2 batches sent and 8 pending", st)
	}
	if b := f.Batches(); len(b) != 2 || b[0] != 3 || b[1] != 3 {
		t.Fatalf("batches %v", b)
	}
	// Stopping flushes the partial batch.
	h.stop()
	if b := f.Batches(); len(b) != 3 || b[2] != 2 {
		t.Fatalf("batches after stop %v", b)
	}
}

// The dedup window holds an address for exactly DedupWindow after it was
// submitted, and at most DedupMax addresses (the oldest go first). Offers
// inside the window do not extend it.
func TestDedupWindow(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DedupWindow = 10 * time.Second; c.DedupMax = 3 })
	t0 := time.Unix(1_700_000_000, 0)
	as := addrs(4)
	for _, tc := range []struct {
		addr netip.Addr
		at   time.Duration
		want bool // submitted
	}{
		{as[0], 0, true},
		{as[0], time.Second, false},
		{as[0], 10 * time.Second, false}, // the window's last instant
		{as[0], 10*time.Second + 1, true},
		{as[1], 11 * time.Second, true},
		{as[2], 12 * time.Second, true},
		{as[3], 13 * time.Second, true}, // the fourth: as[0] is forgotten
		{as[0], 14 * time.Second, true},
		{as[2], 15 * time.Second, false},
	} {
		if got := h.up.Offer(tc.addr, t0.Add(tc.at)); got != tc.want {
			t.Fatalf("Offer(%s) at +%s = %v, want %v", tc.addr, tc.at, got, tc.want)
		}
	}
	if st := h.up.Stats(); st.Submitted != 6 || st.Deduplicated != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// Without a window every offer is submitted.
func TestNoDedupWindow(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.DedupWindow = 0 })
	a := addrs(1)[0]
	now := time.Now()
	for range 3 {
		if !h.up.Offer(a, now) {
			t.Fatal("offer not submitted without a dedup window")
		}
	}
}

func TestIDsNeverReusedAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	var last uint64
	for round := range 3 {
		st, err := store.Open(store.Config{Path: path}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		up, err := New(Config{
			NodeID: "n", Store: st, MaxPending: 10, BatchSize: 1, BatchInterval: time.Second,
			Leaders: func(context.Context) <-chan keyspace.LeaderInfo { return nil },
		}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		// A clock far in the past must not matter.
		up.Offer(netip.MustParseAddr("192.0.2.1"), time.Unix(0, 0))
		up.Offer(netip.MustParseAddr("192.0.2.2"), time.Unix(0, 0))
		ids := sortedIDs(map[uint64]columns.Sighting{})
		for id := range up.pending {
			ids = append(ids, id)
		}
		for _, id := range ids {
			if id <= last {
				t.Fatalf("round %d: id %d not above %d", round, id, last)
			}
		}
		last = max(ids[0], ids[1])
		st.Close()
	}
}

func TestStoredVerdictsBounded(t *testing.T) {
	h := newHarness(t, nil)
	item := func(i int, inferred int64) store.Item {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		return store.Item{Addr: a, Verdict: &styxv1.Verdict{Address: a.AsSlice(), InferredUnixNano: inferred}}
	}
	written := make([]store.Item, storedVerdictsMax+1)
	for i := range written {
		written[i] = item(i, int64(i))
	}
	h.up.addStored(written)
	// The newest storedVerdictsMax are remembered; the first is forgotten.
	again := append([]store.Item(nil), written...)
	if got := h.up.dropStored(again); len(got) != 1 || got[0].Addr != written[0].Addr {
		t.Fatalf("after %d written, %d kept of them again, want only the first", len(written), len(got))
	}
	// Another inference of a remembered address is another verdict.
	if got := h.up.dropStored([]store.Item{item(5, 6)}); len(got) != 1 {
		t.Fatal("another inference of the same address taken as stored")
	}
}

// The uplink reports the node's log position on its Submit stream, when
// the stream opens and every StatusEvery after.
func TestLogStatusReportedToLeader(t *testing.T) {
	var calls atomic.Int64
	h := newHarness(t, func(c *Config) {
		c.StatusEvery = 20 * time.Millisecond
		c.LogStatus = func() *styxv1.NodeStatus {
			calls.Add(1)
			return &styxv1.NodeStatus{LogLagMessages: 5, LogLagSeconds: 1.5, LogConnected: true}
		}
	})
	f := h.fake(fakesched.Config{ID: "styx-1", Answer: fakesched.VerdictFor}, "x")
	h.start()
	testwait.For(t, testwait.Timeout, "three reports", func() bool { return len(f.Statuses()) >= 3 })
	for _, st := range f.Statuses() {
		if st.GetLogLagMessages() != 5 || st.GetLogLagSeconds() != 1.5 || !st.GetLogConnected() || st.GetLogStalled() {
			t.Fatalf("report %v", st)
		}
	}
	// Sightings still flow beside the reports.
	if !h.up.Offer(addrs(1)[0], time.Now()) {
		t.Fatal("not submitted")
	}
	testwait.For(t, testwait.Timeout, "the verdict", func() bool { return h.up.Stats().Verdicts == 1 })
}
