package uplink

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/testwait"
)

// outboxHarness is a harness whose uplink persists its pending table in
// the store at path.
func outboxHarness(t *testing.T, path string, mod func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, func(c *Config) {
		st, err := store.Open(store.Config{Path: path}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		c.Store, c.Outbox = st, st
		if mod != nil {
			mod(c)
		}
	})
	h.store = h.up.cfg.Store.(*store.Store)
	return h
}

// noLeader is a Leaders that never names one: nothing is sent.
func noLeader(context.Context) <-chan keyspace.LeaderInfo { return nil }

func pendingIn(t *testing.T, st *store.Store) []columns.Sighting {
	t.Helper()
	sgs, err := st.PendingSightings()
	if err != nil {
		t.Fatal(err)
	}
	return sgs
}

// Accepted sightings survive a restart: the ones resolved before it are
// gone from the outbox, the others are loaded and sent again to the
// leader on the first Welcome, with their ids and times, and resolved.
func TestOutboxRestoredAndResentAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	h := outboxHarness(t, path, nil)
	f := h.fake(fakesched.Config{ID: "styx-1"}, "x")
	h.start()
	now := time.Now()
	as := addrs(5)
	for _, a := range as {
		if !h.up.Offer(a, now) {
			t.Fatalf("Offer(%s) = false", a)
		}
	}
	testwait.For(t, testwait.Timeout, "5 sightings at the leader", func() bool { return len(f.Sightings()) == 5 })
	sent := f.Sightings()
	ids := sortedIDs(sent)
	if err := f.SendOutcomes(fakesched.VerdictFor(sent[ids[0]]), fakesched.VerdictFor(sent[ids[1]])); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "2 verdicts", func() bool { return h.up.Stats().Verdicts == 2 })
	h.stop()
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}

	// The store reopened: the 3 unresolved sightings are there.
	st, err := store.Open(store.Config{Path: path}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	got := pendingIn(t, st)
	want := []columns.Sighting{sent[ids[2]], sent[ids[3]], sent[ids[4]]}
	if !slices.Equal(got, want) {
		t.Fatalf("outbox after restart: %+v\nwant %+v", got, want)
	}
	st.Close()

	// A new uplink on it: restored, sent again to the leader on the first
	// Welcome, and resolved.
	h2 := outboxHarness(t, path, nil)
	if err := f.Register(context.Background(), h2.cli, "x"); err != nil { // the harness cleared the leader prefix
		t.Fatal(err)
	}
	if s, o := h2.up.Stats(), h2.up.OutboxStats(); s.Pending != 3 || o.Restored != 3 {
		t.Fatalf("restarted uplink: pending %d, restored %d; want 3, 3", s.Pending, o.Restored)
	}
	// Restored addresses are in the dedup window again.
	if h2.up.Offer(as[4], now.Add(time.Second)) {
		t.Fatal("a restored address was submitted again within the dedup window")
	}
	f.Disconnect()
	sessions := f.Sessions()
	h2.start()
	testwait.For(t, testwait.Timeout, "the 3 restored sightings sent again", func() bool {
		r := f.Received()
		return f.Sessions() > sessions && r[ids[2]] == 2 && r[ids[3]] == 2 && r[ids[4]] == 2
	})
	if r := f.Received(); r[ids[0]] != 1 || r[ids[1]] != 1 {
		t.Fatalf("resolved sightings sent again: %v", r)
	}
	if s := h2.up.Stats(); s.Resent != 3 {
		t.Fatalf("resent %d, want 3", s.Resent)
	}
	var outs []*columns.Outcome
	for _, id := range ids[2:] {
		outs = append(outs, fakesched.VerdictFor(sent[id]))
	}
	if err := f.SendOutcomes(outs...); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "the restored sightings resolved and deleted", func() bool {
		return h2.up.Stats().Pending == 0 && len(pendingIn(t, h2.store)) == 0
	})
	for _, a := range as[2:] {
		if e, err := h2.store.Lookup(a); err != nil || !e.HasVerdict {
			t.Fatalf("verdict of restored %s not stored: %+v, %v", a, e, err)
		}
	}
}

// slowOutbox delays every commit, as a slow disk would, and checks that
// none of the sightings it is committing has reached the leader yet.
type slowOutbox struct {
	*store.Store
	f     *fakesched.Server
	delay time.Duration

	mu    sync.Mutex
	early []uint64 // ids the leader had before their commit ended
	saved int
}

func (o *slowOutbox) SaveSightings(add []columns.Sighting, remove []uint64) error {
	time.Sleep(o.delay)
	r := o.f.Received()
	o.mu.Lock()
	for _, sg := range add {
		if r[sg.ID] > 0 {
			o.early = append(o.early, sg.ID)
		}
	}
	o.saved += len(add)
	o.mu.Unlock()
	return o.Store.SaveSightings(add, remove)
}

// A sighting goes to the leader only after its group commit.
func TestOutboxSendsOnlyCommitted(t *testing.T) {
	var box *slowOutbox
	h := outboxHarness(t, filepath.Join(t.TempDir(), "node.db"), func(c *Config) {
		box = &slowOutbox{Store: c.Store.(*store.Store), delay: 50 * time.Millisecond}
		c.Outbox = box
	})
	box.f = h.fake(fakesched.Config{ID: "styx-1", Answer: fakesched.VerdictFor}, "x")
	h.start()
	testwait.For(t, testwait.Timeout, "connected", func() bool { return h.up.Stats().Connected })
	const n = 300 // several batches of 64, several commits
	for i := range n {
		h.up.Offer(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), time.Now())
	}
	testwait.For(t, testwait.Timeout, "every verdict", func() bool { return h.up.Stats().Verdicts == n })
	box.mu.Lock()
	early, saved := len(box.early), box.saved
	box.mu.Unlock()
	if early > 0 || saved != n {
		t.Fatalf("%d of %d sightings reached the leader before their commit ended (%d saved)", early, n, saved)
	}
	testwait.For(t, testwait.Timeout, "the outbox emptied", func() bool { return len(pendingIn(t, h.store)) == 0 })
}

// A graceful stop persists every accepted sighting, also the ones
// accepted just before it.
func TestOutboxGracefulStopLosesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	h := outboxHarness(t, path, func(c *Config) {
		c.Leaders = noLeader
		c.BatchInterval = time.Hour // only the final commit
		c.BatchSize = 1 << 20       // no full batch kicks a commit
		c.MaxPending = 100_000
		c.DedupWindow = 0
	})
	h.start()
	accepted := 0
	for i := range 20_000 {
		if h.up.Offer(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), time.Now()) {
			accepted++
		}
	}
	if o := h.up.OutboxStats(); o.Unsaved != accepted || o.Commits != 0 {
		t.Fatalf("before the stop: %+v, want %d unsaved and no commit yet", o, accepted)
	}
	h.stop()
	if o := h.up.OutboxStats(); o.Unsaved != 0 || o.Commits != 1 {
		t.Fatalf("after the stop: %+v, want all committed in one commit", o)
	}
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: path}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := len(pendingIn(t, st)); got != accepted {
		t.Fatalf("%d of %d accepted sightings persisted by a graceful stop, want all", got, accepted)
	}
}

// The outbox never holds more than the pending table did.
func TestOutboxBoundedByMaxPending(t *testing.T) {
	h := outboxHarness(t, filepath.Join(t.TempDir(), "node.db"), func(c *Config) {
		c.Leaders = noLeader
		c.MaxPending = 50
		c.DedupWindow = 0
	})
	h.start()
	for i := range 200 {
		h.up.Offer(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), time.Now())
	}
	testwait.For(t, testwait.Timeout, "the pending table committed", func() bool { return h.up.OutboxStats().Unsaved == 0 })
	h.stop()
	if got := len(pendingIn(t, h.store)); got != 50 {
		t.Fatalf("outbox holds %d, want the pending table's 50", got)
	}
}

// A failed commit holds nothing back: its sightings are sent unpersisted,
// and its deletions are tried again.
type failingOutbox struct {
	*store.Store
	mu   sync.Mutex
	fail bool
}

func (o *failingOutbox) SaveSightings(add []columns.Sighting, remove []uint64) error {
	o.mu.Lock()
	fail := o.fail
	o.mu.Unlock()
	if fail {
		return errors.New("disk on fire")
	}
	return o.Store.SaveSightings(add, remove)
}

func (o *failingOutbox) setFail(b bool) {
	o.mu.Lock()
	o.fail = b
	o.mu.Unlock()
}

func TestOutboxCommitFailureSendsAnyway(t *testing.T) {
	var box *failingOutbox
	h := outboxHarness(t, filepath.Join(t.TempDir(), "node.db"), func(c *Config) {
		box = &failingOutbox{Store: c.Store.(*store.Store)}
		c.Outbox = box
	})
	f := h.fake(fakesched.Config{ID: "styx-1"}, "x")
	h.start()
	as := addrs(4)
	h.up.Offer(as[0], time.Now())
	h.up.Offer(as[1], time.Now())
	testwait.For(t, testwait.Timeout, "2 committed sightings at the leader", func() bool { return len(f.Sightings()) == 2 })
	box.setFail(true)
	h.up.Offer(as[2], time.Now())
	testwait.For(t, testwait.Timeout, "an unpersisted sighting at the leader", func() bool { return len(f.Sightings()) == 3 })
	// Resolving the first two while commits fail: their deletions wait.
	sent := f.Sightings()
	ids := sortedIDs(sent)
	if err := f.SendOutcomes(fakesched.VerdictFor(sent[ids[0]]), fakesched.VerdictFor(sent[ids[1]])); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "2 verdicts and a failed commit after them", func() bool {
		return h.up.Stats().Verdicts == 2 && h.up.OutboxStats().Errors >= 2
	})
	if got := len(pendingIn(t, h.store)); got != 2 {
		t.Fatalf("outbox holds %d while commits fail, want the 2 first", got)
	}
	box.setFail(false)
	testwait.For(t, testwait.Timeout, "the deletions done once commits work", func() bool { return len(pendingIn(t, h.store)) == 0 })
}

// The kill -9 loss bound, measured with a real process. The child runs an
// uplink with an outbox and no leader, offers addresses at a steady rate,
// and writes the index and time of each accepted one to a pipe; the parent
// kills it with SIGKILL, reopens its store and counts the accepted
// sightings that are not in the outbox. They must all have been accepted
// within the last batch interval plus one commit before the kill (with a
// margin for a loaded machine).
func TestOutboxKill9LossBound(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	dir := t.TempDir()
	const interval = 20 * time.Millisecond
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestOutboxKill9Child$")
	cmd.Env = append(os.Environ(), "STYX_OUTBOX_CHILD_DIR="+dir, "TMPDIR="+dir, "STYX_OUTBOX_CHILD_INTERVAL="+interval.String())
	cmd.ExtraFiles = []*os.File{pw} // the child's fd 3
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	r := bufio.NewReader(pr)
	type acc struct {
		index uint32
		at    int64 // Unix ns, the child's clock
	}
	var accs []acc
	read := func() bool {
		var b [12]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return false
		}
		accs = append(accs, acc{binary.BigEndian.Uint32(b[:]), int64(binary.BigEndian.Uint64(b[4:]))})
		return true
	}
	// Run under load for a while, then kill at whatever moment of a
	// commit cycle that is.
	const before = 30_000
	for len(accs) < before {
		if !read() {
			t.Fatalf("child ended after %d accepted sightings", len(accs))
		}
	}
	killAt := time.Now().UnixNano()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	for read() { // what the child wrote before it died
	}
	_ = cmd.Wait()

	st, err := store.Open(store.Config{Path: filepath.Join(dir, "node.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	persisted := map[netip.Addr]bool{}
	for _, sg := range pendingIn(t, st) {
		persisted[sg.Addr] = true
	}
	var lost []acc
	for _, a := range accs {
		if !persisted[childAddr(a.index)] {
			lost = append(lost, a)
		}
	}
	rate := float64(len(accs)) / (time.Duration(accs[len(accs)-1].at - accs[0].at)).Seconds()
	var span time.Duration // the oldest lost sighting was accepted this long before the kill
	if len(lost) > 0 {
		span = time.Duration(killAt - lost[0].at)
	}
	t.Logf("accepted %d at %.0f/s, persisted %d, lost %d (%.1f ms of offers; the oldest lost was accepted %s before the kill); batch interval %s",
		len(accs), rate, len(persisted), len(lost), float64(len(lost))/rate*1000, span.Round(100*time.Microsecond), interval)
	if len(persisted) > len(accs) {
		t.Fatalf("persisted %d, more than the %d accepted", len(persisted), len(accs))
	}
	// The bound is one interval and one commit. The margin covers a
	// loaded machine, not a missing commit (which would lose everything
	// after the first).
	if limit := 5*interval + 200*time.Millisecond; span > limit {
		t.Fatalf("a sighting accepted %s before the kill was lost, bound %s", span, limit)
	}
}

func childAddr(i uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], i|10<<24)
	return netip.AddrFrom4(b)
}

// TestOutboxKill9Child is TestOutboxKill9LossBound's child process.
func TestOutboxKill9Child(t *testing.T) {
	dir := os.Getenv("STYX_OUTBOX_CHILD_DIR")
	if dir == "" {
		t.Skip("the child of TestOutboxKill9LossBound")
	}
	interval, err := time.ParseDuration(os.Getenv("STYX_OUTBOX_CHILD_INTERVAL"))
	if err != nil {
		t.Fatal(err)
	}
	out := os.NewFile(3, "accepted")
	st, err := store.Open(store.Config{Path: filepath.Join(dir, "node.db")}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	up, err := New(Config{
		NodeID: "child", Leaders: noLeader, Store: st, Outbox: st,
		MaxPending: 10_000_000, BatchSize: 1024, BatchInterval: interval,
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = up.Run(context.Background()) }()
	// About 20,000 offers a second, 20 every millisecond; each accepted
	// one goes out unbuffered, so the parent has it when it kills.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var b [12]byte
	for i := uint32(0); ; i++ {
		if i%20 == 0 {
			<-tick.C
		}
		now := time.Now()
		if !up.Offer(childAddr(i), now) {
			continue
		}
		binary.BigEndian.PutUint32(b[:], i)
		binary.BigEndian.PutUint64(b[4:], uint64(now.UnixNano()))
		if _, err := out.Write(b[:]); err != nil {
			panic(fmt.Sprintf("write: %v", err))
		}
	}
}

// BenchmarkOfferOutbox measures what the outbox costs Offer: the same
// stream of new addresses offered with and without it, in one run, with
// the committer running (no leader, so nothing is sent or resolved). The
// time includes waiting for the last group commit. cpu-ns/offer is the
// process's CPU time (the committer's writes included).
func BenchmarkOfferOutbox(b *testing.B) {
	const chunk = 100_000
	var memNs, boxNs, memCPU, boxCPU time.Duration
	var offers int
	box := &timedOutbox{}
	for b.Loop() {
		for _, withOutbox := range []bool{false, true} {
			st, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "node.db")}, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			cfg := Config{
				NodeID: "bench", Leaders: noLeader, Store: st,
				MaxPending: chunk, BatchSize: 1024, BatchInterval: 20 * time.Millisecond,
			}
			if withOutbox {
				box.Store = st
				cfg.Outbox = box
			}
			up, err := New(cfg, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- up.Run(ctx) }()
			now := time.Now()
			c0, t0 := cpuTime(), time.Now()
			for i := range chunk {
				up.Offer(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now)
			}
			// Until every sighting is queued to be sent (with the outbox:
			// the last commit has ended).
			for {
				up.mu.Lock()
				q := len(up.queue) - up.head
				up.mu.Unlock()
				if q == chunk {
					break
				}
				time.Sleep(time.Millisecond)
			}
			wall, cpu := time.Since(t0), cpuTime()-c0
			cancel()
			<-done
			st.Close()
			if withOutbox {
				boxNs, boxCPU = boxNs+wall, boxCPU+cpu
			} else {
				memNs, memCPU = memNs+wall, memCPU+cpu
			}
		}
		offers += chunk
	}
	b.ReportMetric(float64(memNs.Nanoseconds())/float64(offers), "ns/offer-memory")
	b.ReportMetric(float64(boxNs.Nanoseconds())/float64(offers), "ns/offer-outbox")
	b.ReportMetric(float64(memCPU.Nanoseconds())/float64(offers), "cpu-ns/offer-memory")
	b.ReportMetric(float64(boxCPU.Nanoseconds())/float64(offers), "cpu-ns/offer-outbox")
	b.ReportMetric(memNs.Seconds()/boxNs.Seconds(), "throughput-ratio")
	b.ReportMetric(float64(boxCPU)/float64(memCPU), "cpu-ratio")
	b.ReportMetric(box.took.Seconds()*1000/float64(box.commits), "ms/commit")
	b.ReportMetric(float64(box.saved)/float64(box.commits), "sightings/commit")
}

// timedOutbox measures the commits.
type timedOutbox struct {
	*store.Store
	took           time.Duration
	commits, saved int
}

func (o *timedOutbox) SaveSightings(add []columns.Sighting, remove []uint64) error {
	start := time.Now()
	err := o.Store.SaveSightings(add, remove)
	o.took += time.Since(start)
	o.commits++
	o.saved += len(add)
	return err
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkOutboxEndToEnd measures the outbox on the whole path: new
// addresses offered, sent to a fake leader that answers each with a
// verdict, stored, resolved (and, with the outbox, added and deleted in
// group commits), with and without the outbox in one run. ns/sighting is
// the time until every verdict is stored; cpu-ns/sighting includes the
// fake leader's work, the same in both.
func BenchmarkOutboxEndToEnd(b *testing.B) {
	const chunk = 50_000
	f, err := fakesched.Start(fakesched.Config{ID: "bench", Answer: fakesched.VerdictFor, MaxBatch: 1024})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Stop()
	leaders := func(ctx context.Context) <-chan keyspace.LeaderInfo {
		ch := make(chan keyspace.LeaderInfo, 1)
		ch <- f.Info()
		go func() {
			<-ctx.Done()
			close(ch)
		}()
		return ch
	}
	var wall, cpu [2]time.Duration
	var sightings int
	next := 0
	for b.Loop() {
		for v, withOutbox := range []bool{false, true} {
			st, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "node.db")}, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			cfg := Config{
				NodeID: "bench", Leaders: leaders, Store: st,
				MaxPending: chunk, BatchSize: 1024, BatchInterval: 20 * time.Millisecond,
			}
			if withOutbox {
				cfg.Outbox = st
			}
			up, err := New(cfg, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- up.Run(ctx) }()
			for !up.Stats().Connected {
				time.Sleep(time.Millisecond)
			}
			c0, t0 := cpuTime(), time.Now()
			for range chunk {
				next++
				up.Offer(netip.AddrFrom4([4]byte{10, byte(next >> 16), byte(next >> 8), byte(next)}), time.Now())
			}
			for up.Stats().Verdicts < chunk {
				time.Sleep(time.Millisecond)
			}
			wall[v] += time.Since(t0)
			cpu[v] += cpuTime() - c0
			cancel()
			<-done
			st.Close()
		}
		sightings += chunk
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(sightings) }
	b.ReportMetric(per(wall[0]), "ns/sighting-memory")
	b.ReportMetric(per(wall[1]), "ns/sighting-outbox")
	b.ReportMetric(per(cpu[0]), "cpu-ns/sighting-memory")
	b.ReportMetric(per(cpu[1]), "cpu-ns/sighting-outbox")
	b.ReportMetric(wall[0].Seconds()/wall[1].Seconds(), "throughput-ratio")
}
