package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

var testRetention = Retention{Clean: time.Hour, Proxy: 720 * time.Hour}

func openRetained(t *testing.T, path string, r Retention) *Store {
	t.Helper()
	s, err := Open(Config{Path: path, Retention: r}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestRetentionValidate(t *testing.T) {
	tests := []struct {
		r  Retention
		ok bool
	}{
		{Retention{}, true},
		{testRetention, true},
		{Retention{Clean: time.Hour, Proxy: time.Hour}, true},
		{Retention{Clean: 0, Proxy: time.Hour}, false},
		{Retention{Clean: -time.Second, Proxy: time.Hour}, false},
		{Retention{Clean: 2 * time.Hour, Proxy: time.Hour}, false},
		{Retention{Clean: time.Hour}, false},
	}
	for _, tt := range tests {
		if err := tt.r.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok %v", tt.r, err, tt.ok)
		}
		if err := (Config{Path: "x", Retention: tt.r}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Config with %+v: Validate() = %v, want ok %v", tt.r, err, tt.ok)
		}
	}
}

func TestSweepRetention(t *testing.T) {
	s := openRetained(t, filepath.Join(t.TempDir(), "node.db"), testRetention)
	now := t0.Add(1000 * time.Hour)
	a := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, i}) }
	var (
		cleanYoung  = a(1) // clean, 59 min old: stays
		cleanOld    = a(2) // clean, 61 min old: goes
		cleanZero   = a(3) // clean, no inference time: goes
		proxyYoung  = a(4) // proxy, 2 h old: stays until 720 h
		proxyOld    = a(5) // proxy, 721 h old: goes
		proxyEdge   = a(6) // proxy, exactly 720 h old: stays (the boundary is kept)
		cleanV6     = netip.MustParseAddr("2001:db8::1")
		seenOnly    = a(7) // no verdict, last seen 2 h ago: goes
		seenRecent  = a(8) // no verdict, last seen 10 min ago: stays
		attackOld   = a(9)
		attackYoung = a(10)
	)
	items := []Item{
		{cleanYoung, wireVerdict(false, "", 0, now.Add(-59*time.Minute))},
		{cleanOld, wireVerdict(false, "", 3, now.Add(-61*time.Minute))},
		{cleanZero, &styxv1.Verdict{ModelVersion: "m1"}},
		{proxyYoung, wireVerdict(true, "VPN", 80, now.Add(-2*time.Hour))},
		{proxyOld, wireVerdict(true, "VPN", 80, now.Add(-721*time.Hour))},
		{proxyEdge, wireVerdict(true, "Hosting", 60, now.Add(-720*time.Hour))},
		{cleanV6, wireVerdict(false, "", 0, now.Add(-3*time.Hour))},
	}
	if _, err := s.Put(items); err != nil {
		t.Fatal(err)
	}
	// Last-seen times: with a verdict that goes, with one that stays, and
	// without a verdict.
	for _, x := range []netip.Addr{cleanOld, proxyOld, cleanV6} {
		s.Touch(x, now.Add(-time.Minute))
	}
	s.Touch(proxyYoung, now.Add(-500*time.Hour))
	s.Touch(seenOnly, now.Add(-2*time.Hour))
	s.Touch(seenRecent, now.Add(-10*time.Minute))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Attack histories: by their newest report.
	rep := func(x netip.Addr, at time.Time, k attacks.Kind) attacks.Report {
		return attacks.Report{Addr: x, Time: at, Kind: k, Reporter: "n1"}
	}
	if _, err := s.AddAttacks([]attacks.Report{
		rep(attackOld, now.Add(-800*time.Hour), attacks.KindLogin),
		rep(attackOld, now.Add(-721*time.Hour), attacks.KindProbe),
		rep(attackYoung, now.Add(-800*time.Hour), attacks.KindLogin),
		rep(attackYoung, now.Add(-719*time.Hour), attacks.KindProbe),
	}); err != nil {
		t.Fatal(err)
	}

	got, err := s.Sweep(now)
	if err != nil {
		t.Fatal(err)
	}
	want := Expired{Clean: 3, Proxy: 1, Attacks: 1, Seen: 4}
	if got != want {
		t.Fatalf("Sweep = %+v, want %+v", got, want)
	}
	if tot := s.ExpiredTotal(); tot != want {
		t.Fatalf("ExpiredTotal = %+v, want %+v", tot, want)
	}

	gone := []netip.Addr{cleanOld, cleanZero, proxyOld, cleanV6}
	kept := []netip.Addr{cleanYoung, proxyYoung, proxyEdge}
	for _, x := range gone {
		// The filter still holds the address: the lookup reads, and finds
		// nothing.
		if v, ok, err := s.LookupVerdict(x); err != nil || ok {
			t.Errorf("%s: verdict %+v still there after the sweep (%v)", x, v, err)
		}
		if e := mustGet(t, s, x); e.HasVerdict || !e.LastSeen.IsZero() {
			t.Errorf("%s: %+v after the sweep, want no verdict and no last-seen time", x, e)
		}
	}
	for _, x := range kept {
		if _, ok, err := s.LookupVerdict(x); err != nil || !ok {
			t.Errorf("%s: verdict gone (%v), want kept", x, err)
		}
	}
	if e := mustGet(t, s, proxyYoung); !e.LastSeen.Equal(now.Add(-500 * time.Hour)) {
		t.Errorf("last seen of a kept proxy = %v, want kept", e.LastSeen)
	}
	if e := mustGet(t, s, seenOnly); !e.LastSeen.IsZero() {
		t.Errorf("last seen of an address without verdict, 2 h old: %v, want gone", e.LastSeen)
	}
	if e := mustGet(t, s, seenRecent); e.LastSeen.IsZero() {
		t.Error("last seen of an address without verdict, 10 min old: gone, want kept")
	}
	if h, _ := s.Attacks(attackOld); h.Total() != 0 {
		t.Errorf("attack history with newest report 721 h old: %+v, want gone", h)
	}
	if h, _ := s.Attacks(attackYoung); h.Total() != 2 {
		t.Errorf("attack history with newest report 719 h old: %+v, want kept whole", h)
	}
	if s.Len() != len(kept) {
		t.Errorf("Len %d after the sweep, want %d", s.Len(), len(kept))
	}

	// A second sweep at the same time finds nothing; later, the proxies go
	// once their own retention has passed.
	if got, err := s.Sweep(now); err != nil || got != (Expired{}) {
		t.Fatalf("second sweep: %+v, %v", got, err)
	}
	later := now.Add(718*time.Hour + time.Second) // proxyYoung is 720 h + 1 s old
	got, err = s.Sweep(later)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Expired{Clean: 1, Proxy: 2, Attacks: 1, Seen: 2}); got != want {
		t.Fatalf("sweep at +718 h: %+v, want %+v", got, want)
	}
	if s.Len() != 0 {
		t.Fatalf("Len %d, want 0", s.Len())
	}
}

// A verdict or last-seen time written between a sweep's scan and its
// delete is kept: the delete looks at the entry again.
func TestSweepKeepsWhatWasWrittenMeanwhile(t *testing.T) {
	s := openRetained(t, filepath.Join(t.TempDir(), "node.db"), testRetention)
	now := t0.Add(1000 * time.Hour)
	if _, err := s.Put([]Item{{addr4, wireVerdict(false, "", 0, now.Add(-2*time.Hour))}}); err != nil {
		t.Fatal(err)
	}
	s.Touch(addr6, now.Add(-2*time.Hour))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	calls := 0
	s.betweenSweepTxns = func() {
		calls++
		switch calls {
		case 1: // the verdicts
			if _, err := s.Put([]Item{{addr4, wireVerdict(true, "VPN", 80, now)}}); err != nil {
				t.Error(err)
			}
		case 2: // the last-seen times
			s.Touch(addr6, now)
			if err := s.Flush(); err != nil {
				t.Error(err)
			}
		}
	}
	got, err := s.Sweep(now)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Expired{}) || calls != 2 {
		t.Fatalf("Sweep = %+v after %d scans with deletions, want nothing deleted after 2", got, calls)
	}
	if e := mustGet(t, s, addr4); !e.HasVerdict || !e.Verdict.Proxy {
		t.Fatalf("verdict written during the sweep: %+v", e)
	}
	if e := mustGet(t, s, addr6); !e.LastSeen.Equal(now) {
		t.Fatalf("last seen written during the sweep: %v", e.LastSeen)
	}
}

// A sweep goes through more entries than one scan and one delete
// transaction hold.
func TestSweepChunks(t *testing.T) {
	s := openRetained(t, filepath.Join(t.TempDir(), "node.db"), testRetention)
	now := t0.Add(1000 * time.Hour)
	const n = 3*sweepScan + 17
	items := make([]Item, 0, n)
	old := 0
	for i := range n {
		inferred := now.Add(-30 * time.Minute)
		if i%3 != 0 { // most go: more than sweepChunk per scan
			inferred = now.Add(-2 * time.Hour)
			old++
		}
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		items = append(items, Item{a, wireVerdict(false, "", 0, inferred)})
	}
	if _, err := s.Put(items); err != nil {
		t.Fatal(err)
	}
	txns := 0
	s.betweenSweepTxns = func() { txns++ }
	got, err := s.Sweep(now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Clean != uint64(old) || s.Len() != n-old {
		t.Fatalf("swept %d of %d, %d left; want %d left", got.Clean, old, s.Len(), n-old)
	}
	if min := old / sweepChunk; txns < min {
		t.Fatalf("%d delete transactions for %d deletions, want at least %d", txns, old, min)
	}
}

// The file stops growing once the retention window is full: each round
// stores a new set of verdicts and last-seen times and sweeps the
// previous one, and bbolt reuses the freed pages. A store without
// retention, filled the same way, keeps growing.
func TestSweepBoundsFileSize(t *testing.T) {
	const perRound, rounds = 5_000, 8
	run := func(r Retention) (used, file []int64) {
		s := openRetained(t, filepath.Join(t.TempDir(), "node.db"), r)
		rng := rand.New(rand.NewPCG(3, 4))
		now := t0
		for range rounds {
			now = now.Add(time.Hour + time.Minute)
			items := make([]Item, perRound)
			for i := range items {
				a := netip.AddrFrom4([4]byte{byte(rng.UintN(223) + 1), byte(rng.UintN(256)), byte(rng.UintN(256)), byte(rng.UintN(256))})
				items[i] = Item{a, wireVerdict(i%10 == 0, "", 5, now)}
				s.Touch(a, now)
			}
			// In batches, as outcomes and the log write them.
			for lo := 0; lo < len(items); lo += 4096 {
				if _, err := s.Put(items[lo:min(lo+4096, len(items))]); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Sweep(now); err != nil {
				t.Fatal(err)
			}
			size, err := s.FileSize()
			if err != nil {
				t.Fatal(err)
			}
			used = append(used, s.usedBytes(t))
			file = append(file, size)
		}
		return used, file
	}
	// Proxies kept three rounds: the live set is three rounds of proxies
	// and one of clean verdicts.
	used, file := run(Retention{Clean: time.Hour, Proxy: 3 * time.Hour})
	keepAll, keepAllFile := run(Retention{})
	t.Logf("each round stores %d verdicts (a tenth proxies) and their last-seen times, then sweeps 61 min later (clean retention 1 h, proxy 3 h)", perRound)
	t.Logf("with retention:    pages in use %s MiB; file %s MiB", mib(used), mib(file))
	t.Logf("without retention: pages in use %s MiB; file %s MiB", mib(keepAll), mib(keepAllFile))
	if grown := used[rounds-1] - used[3]; grown > used[3]/5 {
		t.Errorf("with retention, the pages in use grew by %d bytes from round 4 to round %d: not bounded", grown, rounds)
	}
	if keepAll[rounds-1] < 2*used[rounds-1] {
		t.Errorf("without retention the store uses %d bytes, with it %d: the sweep freed too little", keepAll[rounds-1], used[rounds-1])
	}
}

// usedBytes is the size of the file bbolt uses: its high-water page (the
// file itself grows in larger steps).
func (s *Store) usedBytes(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Size()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func mib(sizes []int64) string {
	parts := make([]string, len(sizes))
	for i, n := range sizes {
		parts[i] = fmt.Sprintf("%.1f", float64(n)/(1<<20))
	}
	return strings.Join(parts, " ")
}

// Run sweeps at start and then every SweepEvery, with the clock.
func TestRunSweeps(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "node.db"), Retention: testRetention, SweepEvery: 10 * time.Millisecond}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	if _, err := s.Put([]Item{{addr4, wireVerdict(false, "", 0, now.Add(-2*time.Hour))}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testwait.For(t, testwait.Timeout, "the start sweep", func() bool { return s.ExpiredTotal().Clean == 1 })
	// A verdict that expires later goes at a later sweep.
	if _, err := s.Put([]Item{{addr6, wireVerdict(false, "", 0, now.Add(-2*time.Hour))}}); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, testwait.Timeout, "a periodic sweep", func() bool { return s.ExpiredTotal().Clean == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 {
		t.Fatalf("Len %d, want 0", s.Len())
	}
}

func TestStoredProxy(t *testing.T) {
	for _, v := range []*styxv1.Verdict{
		{Proxy: true},
		{Proxy: true, Type: "VPN", Risk: 80, ModelVersion: "m", Evidence: []string{"a", "b"}, Port: 1080, InferredUnixNano: 5},
		{},
		{Type: "", Risk: 3, ModelVersion: "m", Error: "x", InferredUnixNano: -1},
		{Address: []byte{1, 2, 3, 4}, Proxy: true}, // the address is cleared on encoding
	} {
		val, err := encodeVerdict(v)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := storedProxy(val[8:]); err != nil || got != v.Proxy {
			t.Errorf("storedProxy(%v) = %v, %v; want %v", v, got, err, v.Proxy)
		}
	}
	// Fields in another order, and a proxy flag after them.
	if got, err := storedProxy([]byte{0x20, 0x05, 0x10, 0x01}); err != nil || !got {
		t.Errorf("proxy after risk: %v, %v", got, err)
	}
	for _, bad := range [][]byte{{0x10}, {0x1a, 0x05, 'a'}, {0xff}} {
		if _, err := storedProxy(bad); err == nil {
			t.Errorf("storedProxy(%x): no error", bad)
		}
	}
}

func TestRetentionMetrics(t *testing.T) {
	s := openRetained(t, filepath.Join(t.TempDir(), "node.db"), testRetention)
	now := t0.Add(1000 * time.Hour)
	if _, err := s.Put([]Item{
		{addr4, wireVerdict(false, "", 0, now.Add(-2*time.Hour))},
		{addr6, wireVerdict(true, "VPN", 80, now.Add(-800*time.Hour))},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sweep(now); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := s.Register(reg); err != nil {
		t.Fatal(err)
	}
	want := `
# HELP styx_node_store_expired_total Store entries deleted by the retention sweep, by kind (clean and proxy verdicts, attack histories, last-seen times).
# TYPE styx_node_store_expired_total counter
styx_node_store_expired_total{kind="attacks"} 0
styx_node_store_expired_total{kind="clean"} 1
styx_node_store_expired_total{kind="proxy"} 1
styx_node_store_expired_total{kind="seen"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "styx_node_store_expired_total"); err != nil {
		t.Fatal(err)
	}
	size, err := s.FileSize()
	if err != nil || size == 0 {
		t.Fatalf("FileSize %d, %v", size, err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "styx_node_store_bytes" {
			found = true
			if got := mf.GetMetric()[0].GetGauge().GetValue(); got != float64(size) {
				t.Fatalf("styx_node_store_bytes %v, want %d", got, size)
			}
		}
	}
	if !found {
		t.Fatal("no styx_node_store_bytes")
	}
}
