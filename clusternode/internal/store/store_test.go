package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(Config{Path: path}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var (
	addr4 = netip.MustParseAddr("192.0.2.7")
	addr6 = netip.MustParseAddr("2001:db8::7")
	t0    = time.Unix(1_700_000_000, 0)
)

func wireVerdict(proxy bool, typ string, risk uint32, inferred time.Time) *styxv1.Verdict {
	return &styxv1.Verdict{
		Proxy: proxy, Type: typ, Risk: risk, ModelVersion: "m1",
		Evidence: []string{"test:e"}, Port: 8080, InferredUnixNano: inferred.UnixNano(),
	}
}

func mustGet(t *testing.T, s *Store, a netip.Addr) Entry {
	t.Helper()
	e, err := s.Lookup(a)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := open(t, path)
	if _, err := s.Put([]Item{{addr4, wireVerdict(true, "VPN", 80, t0)}, {addr6, wireVerdict(false, "", 0, t0)}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ApplyLog(testStream, 42, nil, nil); err != nil {
		t.Fatal(err)
	}
	s.Touch(addr4, t0.Add(time.Minute))
	first, err := s.ReserveIDs(100, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	s = open(t, path)
	defer s.Close()
	e := mustGet(t, s, addr4)
	want := verdict.Verdict{Proxy: true, Type: "VPN", Risk: 80, Port: 8080, ModelVersion: "m1", Evidence: []string{"test:e"}, Inferred: t0}
	if !e.HasVerdict || !equalVerdict(e.Verdict, want) {
		t.Fatalf("after reopen: %+v, want %+v", e, want)
	}
	if !e.LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("last seen %v, want %v (flushed by Close)", e.LastSeen, t0.Add(time.Minute))
	}
	if e := mustGet(t, s, addr6); !e.HasVerdict || e.Verdict.Proxy {
		t.Fatalf("v6 after reopen: %+v", e)
	}
	if seq, err := s.Cursor(testStream); err != nil || seq != 42 {
		t.Fatalf("cursor %d, %v; want 42", seq, err)
	}
	// Ids never go back, even when the clock does.
	next, err := s.ReserveIDs(10, t0.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if next < first+100 {
		t.Fatalf("reserved %d after reopen, overlaps the block [%d, %d)", next, first, first+100)
	}
	if s.Len() != 2 {
		t.Fatalf("Len %d, want 2", s.Len())
	}
}

func equalVerdict(a, b verdict.Verdict) bool {
	return a.Proxy == b.Proxy && a.Type == b.Type && a.Risk == b.Risk && a.Port == b.Port &&
		a.ModelVersion == b.ModelVersion && slices.Equal(a.Evidence, b.Evidence) && a.Inferred.Equal(b.Inferred)
}

func TestPutOrdering(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "node.db"))
	defer s.Close()

	put := func(v *styxv1.Verdict) int {
		t.Helper()
		n, err := s.Put([]Item{{addr4, v}})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	v1 := wireVerdict(true, "VPN", 80, t0)
	if n := put(v1); n != 1 {
		t.Fatalf("first put changed %d", n)
	}
	if n := put(wireVerdict(true, "VPN", 80, t0)); n != 0 {
		t.Fatalf("same verdict again changed %d, want 0 (idempotent)", n)
	}
	if n := put(wireVerdict(false, "", 0, t0.Add(-time.Second))); n != 0 {
		t.Fatalf("older verdict changed %d, want 0", n)
	}
	if e := mustGet(t, s, addr4); !e.Verdict.Proxy {
		t.Fatalf("older verdict overwrote a newer one: %+v", e)
	}
	if n := put(wireVerdict(false, "", 5, t0.Add(time.Second))); n != 1 {
		t.Fatalf("newer verdict changed %d, want 1", n)
	}
	if e := mustGet(t, s, addr4); e.Verdict.Proxy || e.Verdict.Risk != 5 {
		t.Fatalf("newer verdict not applied: %+v", e)
	}
	// Same address spelt as IPv4-mapped IPv6 is the same key.
	if e := mustGet(t, s, netip.MustParseAddr("::ffff:192.0.2.7")); !e.HasVerdict || e.Verdict.Risk != 5 {
		t.Fatalf("mapped lookup: %+v", e)
	}
}

// Two different verdicts with the same inference time converge on the same
// winner whatever the arrival order.
func TestPutTieBreakConverges(t *testing.T) {
	a, b := wireVerdict(true, "VPN", 70, t0), wireVerdict(true, "Hosting", 60, t0)
	var got []verdict.Verdict
	for _, order := range [][]*styxv1.Verdict{{a, b}, {b, a}, {a, b, a, b}} {
		s := open(t, filepath.Join(t.TempDir(), "node.db"))
		for _, v := range order {
			if _, err := s.Put([]Item{{addr4, v}}); err != nil {
				t.Fatal(err)
			}
		}
		got = append(got, mustGet(t, s, addr4).Verdict)
		s.Close()
	}
	for i := range got {
		if !equalVerdict(got[i], got[0]) {
			t.Fatalf("order %d converged on %+v, order 0 on %+v", i, got[i], got[0])
		}
	}
}

// testStream names a verdict log stream in tests.
const testStream = "STYX_PROXY"

// ApplyLog applies a burst once: the same sequence again, or an older
// one, changes nothing and calls no hook, even after a reopen. Each stream
// has its own cursor.
func TestApplyLogExactlyOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	var landed, added int
	openHooked := func() *Store {
		t.Helper()
		s, err := Open(Config{
			Path:       path,
			OnVerdicts: func(ls []Landed) { landed += len(ls) },
			OnAttacks:  func(rs []attacks.Report) { added += len(rs) },
		}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := openHooked()
	if seq, err := s.Cursor(testStream); err != nil || seq != 0 {
		t.Fatalf("cursor of a new store %d, %v", seq, err)
	}
	a := netip.MustParseAddr("203.0.113.7")
	// Each burst carries a newer verdict and a new report, so that a
	// second application would show in the store and in the hooks.
	burst := func(i int) ([]Item, []attacks.Report) {
		return []Item{{addr6, wireVerdict(i%2 == 0, "VPN", 1, t0.Add(time.Duration(i)*time.Second))}},
			[]attacks.Report{{Addr: a, Time: t0.Add(time.Duration(i) * time.Second), Kind: attacks.KindLogin, Reporter: "n1"}}
	}
	apply := func(s *Store, stream string, seq uint64, i int) (int, AttackResult) {
		t.Helper()
		items, reports := burst(i)
		changed, ar, err := s.ApplyLog(stream, seq, items, reports)
		if err != nil {
			t.Fatal(err)
		}
		return changed, ar
	}
	if changed, ar := apply(s, testStream, 5, 1); changed != 1 || ar.New != 1 {
		t.Fatalf("first burst: changed %d, %+v", changed, ar)
	}
	// The same sequence again, with other data (as a second delivery would
	// not have): skipped whole.
	for _, seq := range []uint64{5, 4, 1} {
		if changed, ar := apply(s, testStream, seq, 2); changed != 0 || ar != (AttackResult{}) {
			t.Fatalf("seq %d again: changed %d, %+v", seq, changed, ar)
		}
	}
	// Another stream has its own cursor.
	if changed, ar := apply(s, "STYX_CLEAN", 3, 3); changed != 1 || ar.New != 1 {
		t.Fatalf("other stream: changed %d, %+v", changed, ar)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openHooked()
	defer s.Close()
	for stream, want := range map[string]uint64{testStream: 5, "STYX_CLEAN": 3, "STYX_OTHER": 0} {
		if seq, err := s.Cursor(stream); err != nil || seq != want {
			t.Fatalf("cursor of %s after reopen %d, %v; want %d", stream, seq, err, want)
		}
	}
	if changed, ar := apply(s, testStream, 5, 4); changed != 0 || ar != (AttackResult{}) {
		t.Fatalf("seq 5 after reopen: changed %d, %+v", changed, ar)
	}
	if h, _ := s.Attacks(a); h.Total() != 2 {
		t.Fatalf("attack history %+v, want the 2 reports applied", h)
	}
	if e := mustGet(t, s, addr6); !e.Verdict.Inferred.Equal(t0.Add(3 * time.Second)) {
		t.Fatalf("verdict %+v, want the one of the burst at 3", e.Verdict)
	}
	if landed != 2 || added != 2 {
		t.Fatalf("hooks: %d verdicts, %d reports; want 2 and 2", landed, added)
	}
	// The next sequence applies; a bad stream or sequence is an error.
	if changed, _ := apply(s, testStream, 6, 6); changed != 1 {
		t.Fatalf("seq 6: changed %d", changed)
	}
	if _, _, err := s.ApplyLog(testStream, 0, nil, nil); err == nil {
		t.Fatal("sequence 0 accepted")
	}
	if _, _, err := s.ApplyLog("", 7, nil, nil); err == nil {
		t.Fatal("empty stream accepted")
	}
}

func TestTouchBoundedAndFlushed(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "node.db"), TouchMax: 2, FlushInterval: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	s.Touch(a, t0)
	s.Touch(a, t0.Add(-time.Minute)) // older: ignored
	s.Touch(b, t0)
	s.Touch(c, t0) // table full: dropped
	if s.TouchesDropped() != 1 {
		t.Fatalf("dropped %d, want 1", s.TouchesDropped())
	}
	// A full table wakes Run at once, long before the hour.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.touches)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("full touch table not flushed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e := mustGet(t, s, a); !e.LastSeen.Equal(t0) {
		t.Fatalf("last seen of a = %v, want %v", e.LastSeen, t0)
	}
	if e := mustGet(t, s, c); !e.LastSeen.IsZero() {
		t.Fatalf("dropped touch stored: %v", e.LastSeen)
	}
}

// A flush larger than one transaction writes every time, in order of the
// keys, and LastSeen sees each address's time throughout: held, being
// written, or stored. The times survive a reopen.
func TestFlushInChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s, err := Open(Config{Path: path, FlushInterval: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	n := 3*flushChunk + 17
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		// IPv4 and IPv6, interleaved, so the chunks span both key ranges.
		if i%2 == 0 {
			addrs[i] = netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		} else {
			addrs[i] = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
		}
		s.Touch(addrs[i], t0.Add(time.Duration(i)*time.Second))
	}
	// Readers check every address while the flush runs.
	stop := make(chan struct{})
	var bad atomic.Int64
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			for i := r; ; i = (i + 2) % n {
				select {
				case <-stop:
					return
				default:
				}
				got, err := s.LastSeen(addrs[i])
				if err != nil || !got.Equal(t0.Add(time.Duration(i)*time.Second)) {
					bad.Add(1)
				}
			}
		})
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d last-seen reads during the flush missed the held time", bad.Load())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	for i, a := range addrs {
		if e := mustGet(t, s, a); !e.LastSeen.Equal(t0.Add(time.Duration(i) * time.Second)) {
			t.Fatalf("last seen of %s after reopen = %v, want %v", a, e.LastSeen, t0.Add(time.Duration(i)*time.Second))
		}
	}
}

// A Flush that commits and clears between a reader's two reads (memory and
// snapshot) must not hide the time from it: LastSeen and Lookup read memory
// first, so the time is either still held or already in the snapshot. The
// hook runs a whole Flush in that window; in the other order the reader
// would see neither.
func TestLastSeenFlushBetweenReads(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "node.db"))
	defer s.Close()
	reads := map[string]func(netip.Addr) (time.Time, error){
		"LastSeen": s.LastSeen,
		"Lookup": func(a netip.Addr) (time.Time, error) {
			e, err := s.Lookup(a)
			return e.LastSeen, err
		},
	}
	for name, read := range reads {
		t.Run(name, func(t *testing.T) {
			a := netip.AddrFrom4([4]byte{192, 0, 2, byte(len(name))})
			at := t0.Add(time.Duration(len(name)) * time.Minute)
			s.Touch(a, at)
			flushed := 0
			s.betweenReads = func() {
				flushed++
				if err := s.Flush(); err != nil {
					t.Error(err)
				}
			}
			got, err := read(a)
			s.betweenReads = nil
			if err != nil {
				t.Fatal(err)
			}
			if flushed != 1 {
				t.Fatalf("the hook ran %d times, want 1", flushed)
			}
			if !got.Equal(at) {
				t.Fatalf("last seen read across a flush = %v, want %v", got, at)
			}
		})
	}
}

// OnVerdicts hears of every verdict that changed the store, from Put and
// ApplyLog, after the commit, and of nothing else.
func TestOnVerdicts(t *testing.T) {
	var calls [][]Landed
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "n.db"), OnVerdicts: func(ls []Landed) {
		calls = append(calls, slices.Clone(ls))
	}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mapped := netip.AddrFrom16(addr4.As16())
	if _, err := s.Put([]Item{{Addr: mapped, Verdict: wireVerdict(true, "VPN", 80, t0)}, {Addr: addr6, Verdict: wireVerdict(false, "", 0, t0)}}); err != nil {
		t.Fatal(err)
	}
	// The same verdict again, and an older one: nothing changes, no call.
	if _, err := s.Put([]Item{{Addr: addr4, Verdict: wireVerdict(true, "VPN", 80, t0)}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ApplyLog(testStream, 5, []Item{{Addr: addr4, Verdict: wireVerdict(true, "SOCKS5", 100, t0.Add(-time.Hour))}}, nil); err != nil {
		t.Fatal(err)
	}
	// A newer one from the log.
	if _, _, err := s.ApplyLog(testStream, 6, []Item{{Addr: addr4, Verdict: wireVerdict(false, "", 0, t0.Add(time.Minute))}}, nil); err != nil {
		t.Fatal(err)
	}
	// A failed write (an invalid item) commits nothing and calls nothing.
	if _, err := s.Put([]Item{{Addr: addr6, Verdict: wireVerdict(true, "VPN", 80, t0.Add(time.Hour))}, {Addr: netip.Addr{}}}); err == nil {
		t.Fatal("invalid item accepted")
	}
	if len(calls) != 2 || len(calls[0]) != 2 || len(calls[1]) != 1 {
		t.Fatalf("calls %+v", calls)
	}
	if l := calls[0][0]; l.Addr != addr4 || !l.Verdict.Proxy || l.Verdict.Type != "VPN" || !l.Verdict.Inferred.Equal(t0) {
		t.Fatalf("first landed %+v", l)
	}
	if l := calls[1][0]; l.Addr != addr4 || l.Verdict.Proxy || !l.Verdict.Inferred.Equal(t0.Add(time.Minute)) {
		t.Fatalf("log landed %+v", l)
	}
	// ScanVerdicts filters by time before decoding.
	var scanned []netip.Addr
	err = s.ScanVerdicts(func(inferred time.Time) bool { return inferred.After(t0) }, func(a netip.Addr, v verdict.Verdict) {
		scanned = append(scanned, a)
	})
	if err != nil || !slices.Equal(scanned, []netip.Addr{addr4}) {
		t.Fatalf("scan %v %v", scanned, err)
	}
}

// LookupVerdict and LastSeen, the query path's halves of Lookup, agree
// with it, before and after a flush.
func TestLookupHalvesAgree(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "node.db"))
	defer s.Close()
	if _, err := s.Put([]Item{{Addr: addr4, Verdict: wireVerdict(true, "VPN", 80, t0)}}); err != nil {
		t.Fatal(err)
	}
	s.Touch(addr4, t0.Add(time.Minute))
	s.Touch(addr6, t0.Add(2*time.Minute))
	for _, flush := range []bool{false, true} {
		if flush {
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		for _, a := range []netip.Addr{addr4, addr6, netip.MustParseAddr("::ffff:192.0.2.7")} {
			e := mustGet(t, s, a)
			v, ok, err := s.LookupVerdict(a)
			if err != nil {
				t.Fatal(err)
			}
			seen, err := s.LastSeen(a)
			if err != nil {
				t.Fatal(err)
			}
			if ok != e.HasVerdict || v.Proxy != e.Verdict.Proxy || v.Type != e.Verdict.Type || !v.Inferred.Equal(e.Verdict.Inferred) || !seen.Equal(e.LastSeen) {
				t.Errorf("flushed %v, %s: LookupVerdict %+v %v, LastSeen %v; Lookup %+v", flush, a, v, ok, seen, e)
			}
		}
	}
}
