package threats

import (
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}) }

func entry(i int, ago time.Duration) Entry {
	return Entry{Addr: addr(i), Type: "VPN", Risk: 80, Seen: t0.Add(-ago)}
}

func addrsOf(es []Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Addr.String()
	}
	return out
}

// held returns the window's content, newest first.
func held(r *Recent) []string { return addrsOf(r.Sample(r.Capacity())) }

func mustNew(t *testing.T, capacity int) *Recent {
	t.Helper()
	r, err := New(capacity)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestNewBounds(t *testing.T) {
	for _, c := range []int{0, -1, MaxCapacity + 1} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%d) accepted", c)
		}
	}
	for _, c := range []int{1, DefaultCapacity, MaxCapacity} {
		if _, err := New(c); err != nil {
			t.Errorf("New(%d): %v", c, err)
		}
	}
}

// The window is bounded and keeps the newest verdicts, whatever order they
// arrive in.
func TestRecentKeepsNewest(t *testing.T) {
	for seed := range uint64(20) {
		r := mustNew(t, 5)
		order := rand.New(rand.NewPCG(seed, 1)).Perm(50)
		for _, i := range order {
			r.Update(entry(i, time.Duration(i)*time.Minute), true)
			if r.Len() > 5 {
				t.Fatalf("seed %d: %d held, capacity 5", seed, r.Len())
			}
		}
		want := []string{"198.51.100.0", "198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"}
		if got := held(r); !slices.Equal(got, want) {
			t.Fatalf("seed %d: held %v, want %v", seed, got, want)
		}
	}
}

func TestRecentUpdates(t *testing.T) {
	r := mustNew(t, 3)
	r.Update(entry(1, 10*time.Minute), true)
	r.Update(entry(2, 20*time.Minute), true)
	r.Update(entry(3, 30*time.Minute), true)

	// A newer verdict for a held address refreshes it, in place.
	e := entry(3, time.Minute)
	e.Type = "SOCKS5"
	e.Port = 1080
	r.Update(e, true)
	if got := r.Sample(3); got[0] != e || len(got) != 3 {
		t.Fatalf("after refresh %+v", got)
	}
	// An older verdict changes nothing, proxy or not.
	r.Update(entry(3, time.Hour), true)
	r.Update(entry(3, time.Hour), false)
	if got := r.Sample(3); got[0] != e {
		t.Fatalf("older verdict replaced %+v", got[0])
	}
	// A newer "not a proxy" verdict removes the address.
	r.Update(entry(2, 0), false)
	if got := held(r); !slices.Equal(got, []string{"198.51.100.3", "198.51.100.1"}) {
		t.Fatalf("after removal %v", got)
	}
	// "Not a proxy" about an address not held is ignored.
	r.Update(entry(9, 0), false)
	if r.Len() != 2 {
		t.Fatalf("len %d", r.Len())
	}
	// A proxy older than everything held still enters while there is room,
	// then is the first to leave.
	r.Update(entry(7, 24*time.Hour), true)
	r.Update(entry(8, 0), true)
	if got := held(r); !slices.Equal(got, []string{"198.51.100.8", "198.51.100.3", "198.51.100.1"}) {
		t.Fatalf("after eviction %v", got)
	}
	// A full window ignores a proxy older than its oldest entry.
	r.Update(entry(6, 2*time.Hour), true)
	if got := held(r); slices.Contains(got, "198.51.100.6") {
		t.Fatalf("old proxy entered a full window: %v", got)
	}
	// IPv4-mapped addresses are the same address.
	r.Update(Entry{Addr: netip.AddrFrom16(addr(8).As16()), Seen: t0.Add(time.Second)}, false)
	if r.Len() != 2 {
		t.Fatalf("mapped address not normalized: %v", held(r))
	}
}

// Samples never repeat an address, are sorted newest first, and reach
// every held address.
func TestRecentSample(t *testing.T) {
	r := mustNew(t, 100)
	if got := r.Sample(10); len(got) != 0 {
		t.Fatalf("empty window sampled %v", got)
	}
	for i := range 40 {
		r.Update(entry(i, time.Duration(i)*time.Second), true)
	}
	seen := map[netip.Addr]bool{}
	for range 500 {
		s := r.Sample(7)
		if len(s) != 7 {
			t.Fatalf("sample of %d", len(s))
		}
		dup := map[netip.Addr]bool{}
		for i, e := range s {
			if dup[e.Addr] {
				t.Fatalf("duplicate %s in %v", e.Addr, addrsOf(s))
			}
			dup[e.Addr] = true
			seen[e.Addr] = true
			if i > 0 && !newer(s[i-1], e) {
				t.Fatalf("not newest first: %v", addrsOf(s))
			}
		}
	}
	if len(seen) != 40 {
		t.Fatalf("500 samples reached %d of 40 addresses", len(seen))
	}
	if got := r.Sample(1000); len(got) != 40 {
		t.Fatalf("oversized sample of %d, want all 40", len(got))
	}
	if got := r.Sample(0); len(got) != 0 {
		t.Fatalf("sample(0) = %v", got)
	}
}

func wireVerdict(proxy bool, typ string, inferred time.Time) *styxv1.Verdict {
	return &styxv1.Verdict{Proxy: proxy, Type: typ, Risk: 90, ModelVersion: "test", InferredUnixNano: inferred.UnixNano()}
}

func openStore(t *testing.T, path string, hook func([]store.Landed)) *store.Store {
	t.Helper()
	st, err := store.Open(store.Config{Path: path, OnVerdicts: hook}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Verdicts reach the window through the store's hook, from Put (own
// sightings) and ApplyLog (the verdict log), and a restart refills it from the
// store.
func TestRecentFollowsStoreAndRefills(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	r := mustNew(t, 10)
	st := openStore(t, path, r.Landed)

	var items []store.Item
	for i := range 30 {
		// Every third address is not a proxy.
		items = append(items, store.Item{Addr: addr(i), Verdict: wireVerdict(i%3 != 0, "Anonymizer", t0.Add(-time.Duration(i)*time.Minute))})
	}
	if _, err := st.Put(items[:15]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.ApplyLog("STYX_PROXY", 7, items[15:], nil); err != nil {
		t.Fatal(err)
	}
	want := []string{}
	for i := range 30 {
		if i%3 != 0 && len(want) < 10 {
			want = append(want, addr(i).String())
		}
	}
	if got := held(r); !slices.Equal(got, want) {
		t.Fatalf("after landing %v\nwant %v", got, want)
	}
	// A verdict the store refuses (older than the stored one) does not
	// reach the window; a newer "not a proxy" one removes the address.
	if _, err := st.Put([]store.Item{{Addr: addr(1), Verdict: wireVerdict(false, "", t0.Add(-time.Hour))}}); err != nil {
		t.Fatal(err)
	}
	if got := held(r); !slices.Equal(got, want) {
		t.Fatalf("stale verdict changed the window: %v", got)
	}
	if _, _, err := st.ApplyLog("STYX_CLEAN", 8, []store.Item{{Addr: addr(1), Verdict: wireVerdict(false, "", t0)}}, nil); err != nil {
		t.Fatal(err)
	}
	want = slices.DeleteFunc(want, func(s string) bool { return s == addr(1).String() })
	if got := held(r); !slices.Equal(got, want) {
		t.Fatalf("after withdrawal %v\nwant %v", got, want)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: a new window filled from the same file holds the newest 10
	// proxies the file holds, with their verdicts.
	st = openStore(t, path, nil)
	defer st.Close()
	r2 := mustNew(t, 10)
	if err := r2.Fill(st); err != nil {
		t.Fatal(err)
	}
	want = nil
	for i := 2; i < 30 && len(want) < 10; i++ {
		if i%3 != 0 {
			want = append(want, addr(i).String())
		}
	}
	got := r2.Sample(10)
	if !slices.Equal(addrsOf(got), want) {
		t.Fatalf("after restart %v\nwant %v", addrsOf(got), want)
	}
	if e := got[0]; e.Type != "Anonymizer" || e.Risk != 90 || !e.Seen.Equal(t0.Add(-2*time.Minute)) {
		t.Fatalf("refilled entry %+v", e)
	}
}

// Fill decodes only the verdicts that can enter the window.
func TestFillDecodesFew(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "node.db"), nil)
	defer st.Close()
	var items []store.Item
	for i := range 2000 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		items = append(items, store.Item{Addr: a, Verdict: wireVerdict(true, "VPN", t0.Add(time.Duration(rand.IntN(1_000_000))*time.Second))})
	}
	if _, err := st.Put(items); err != nil {
		t.Fatal(err)
	}
	c := &countingScanner{st: st}
	r := mustNew(t, 20)
	if err := r.Fill(c); err != nil {
		t.Fatal(err)
	}
	if r.Len() != 20 {
		t.Fatalf("held %d", r.Len())
	}
	// Expected about 20·(1 + ln(2000/20)) ≈ 112 for a random order.
	if c.decoded > 500 {
		t.Fatalf("decoded %d of 2000 verdicts for a window of 20", c.decoded)
	}
	t.Logf("decoded %d of 2000", c.decoded)
}

type countingScanner struct {
	st      *store.Store
	decoded int
}

func (c *countingScanner) ScanVerdicts(want func(time.Time) bool, fn func(netip.Addr, verdict.Verdict)) error {
	return c.st.ScanVerdicts(want, func(a netip.Addr, v verdict.Verdict) {
		c.decoded++
		fn(a, v)
	})
}
