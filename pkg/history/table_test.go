package history_test

import (
	"math/rand/v2"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/history"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// asnOf gives every /16 its own AS, so that buckets and ASes differ.
func asnOf(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return 64500 + uint32(b[1])
	}
	b := a.As16()
	return 65000 + uint32(b[3])
}

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

func verdictEv(rev uint64, a string, proxy bool, sec int64) *styxv1.FeedEvent {
	return &styxv1.FeedEvent{Revision: rev, Verdict: &styxv1.Verdict{
		Address: netip.MustParseAddr(a).AsSlice(), Proxy: proxy, InferredUnixNano: t0.Add(time.Duration(sec) * time.Second).UnixNano(),
	}}
}

func attackEv(rev uint64, a string, k attacks.Kind, sec int64) *styxv1.FeedEvent {
	r := attacks.Report{Addr: netip.MustParseAddr(a), Time: t0.Add(time.Duration(sec) * time.Second), Kind: k, Reporter: "node-1"}
	return &styxv1.FeedEvent{Revision: rev, Attack: r.Proto()}
}

func apply(t *testing.T, tb *history.Table, evs ...*styxv1.FeedEvent) {
	t.Helper()
	for _, ev := range evs {
		if _, err := tb.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFoldAndLeaveOneOut(t *testing.T) {
	at := attacks.NewTable(100)
	tb := history.New(history.Config{MaxAddrs: 100, Locate: asnOf, Attacks: at})
	apply(t, tb,
		verdictEv(1, "198.51.100.1", true, 1),
		verdictEv(2, "198.51.100.2", false, 2),
		verdictEv(3, "198.51.100.3", true, 3),
		attackEv(4, "198.51.100.2", attacks.KindLogin, 4),
		attackEv(5, "198.51.100.2", attacks.KindProbe, 5),
		attackEv(6, "198.51.100.2", attacks.KindProbe, 5), // the same report again: the attack table drops it
		verdictEv(7, "198.51.101.9", true, 7),             // another /24, same AS
	)
	// A replayed revision changes nothing.
	if changed, _ := tb.Apply(verdictEv(3, "198.51.100.3", false, 9)); changed {
		t.Fatal("a replayed revision was folded")
	}
	if got := tb.Revision(); got != 7 {
		t.Fatalf("revision %d", got)
	}

	k := history.BucketKey(netip.MustParseAddr("198.51.100.200"))
	if c := tb.Bucket(k); c != (history.Counts{Verdicts: 3, Proxies: 2, Attacks: 2}) {
		t.Fatalf("bucket %+v", c)
	}
	// A new address of the bucket sees it whole.
	s := tb.Lookup(netip.MustParseAddr("198.51.100.200"), asnOf(netip.MustParseAddr("198.51.100.200")))
	if s.Bucket != (history.Counts{Verdicts: 3, Proxies: 2, Attacks: 2}) || s.AS != (history.Counts{Verdicts: 4, Proxies: 3, Attacks: 2}) || s.Attacks != 0 {
		t.Fatalf("new address: %+v", s)
	}
	// An address seen before is left out of its own bucket and AS.
	a2 := netip.MustParseAddr("198.51.100.2")
	s = tb.Lookup(a2, asnOf(a2))
	if s.Bucket != (history.Counts{Verdicts: 2, Proxies: 2}) || s.AS != (history.Counts{Verdicts: 3, Proxies: 3}) {
		t.Fatalf("198.51.100.2 bucket %+v AS %+v", s.Bucket, s.AS)
	}
	if s.Attacks != 2 || s.Kinds != 2 || s.LastAttack != t0.Add(5*time.Second).UnixNano() || s.Clock != t0.Add(7*time.Second).UnixNano() {
		t.Fatalf("198.51.100.2 own history %+v", s)
	}
	// The latest verdict counts: 198.51.100.1 found clean now.
	apply(t, tb, verdictEv(8, "198.51.100.1", false, 8))
	if c := tb.Bucket(k); c != (history.Counts{Verdicts: 3, Proxies: 1, Attacks: 2}) {
		t.Fatalf("bucket after a new verdict %+v", c)
	}
	// A verdict with an error is not a verdict.
	apply(t, tb, &styxv1.FeedEvent{Revision: 9, Verdict: &styxv1.Verdict{Address: a2.AsSlice(), Proxy: true, Error: "poison"}})
	if c := tb.Bucket(k); c.Proxies != 1 {
		t.Fatalf("an error verdict was folded: %+v", c)
	}
	// IPv6: a /48.
	apply(t, tb, verdictEv(10, "2001:db8:1:2::1", true, 10), verdictEv(11, "2001:db8:1:3::1", true, 11), verdictEv(12, "2001:db8:2::1", false, 12))
	if c := tb.Bucket(history.BucketKey(netip.MustParseAddr("2001:db8:1:ffff::5"))); c.Verdicts != 2 || c.Proxies != 2 {
		t.Fatalf("/48 %+v", c)
	}
}

// The table never holds more than MaxAddrs addresses; it evicts the one
// updated longest ago, and the bucket and AS sums stay exactly the sums
// over the addresses held.
func TestBoundsAndEviction(t *testing.T) {
	tb := history.New(history.Config{MaxAddrs: 50, Locate: asnOf})
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		a := netip.AddrFrom4([4]byte{198, byte(rng.IntN(4)), byte(rng.IntN(8)), byte(rng.IntN(64))})
		if rng.IntN(4) == 0 {
			tb.AddAttack(attacks.Report{Addr: a, Time: t0.Add(time.Duration(i) * time.Second), Kind: attacks.KindProbe, Reporter: "n"})
		} else {
			tb.AddVerdict(a, rng.IntN(3) == 0, t0.Add(time.Duration(i)*time.Second).UnixNano())
		}
		if i == 1000 {
			// The most recently updated address is held.
			if _, ok := tb.Entry(a); !ok {
				t.Fatalf("the newest address %s was evicted", a)
			}
		}
	}
	z := tb.Sizes()
	if z.Addrs != 50 || z.Evicted == 0 || z.Buckets > 50 || z.ASes > 50 {
		t.Fatalf("sizes %+v", z)
	}
	buckets, ases := map[uint64]history.Counts{}, map[uint32]history.Counts{}
	n := 0
	tb.Each(func(e history.Entry) bool {
		n++
		buckets[e.Bucket] = buckets[e.Bucket].Add(e.Contribution())
		ases[e.ASN] = ases[e.ASN].Add(e.Contribution())
		return true
	})
	if n != 50 || len(buckets) != z.Buckets || len(ases) != z.ASes {
		t.Fatalf("%d entries, %d buckets (table %d), %d ASes (table %d)", n, len(buckets), z.Buckets, len(ases), z.ASes)
	}
	for k, c := range buckets {
		if got := tb.Bucket(k); got != c {
			t.Fatalf("bucket %x: %+v, sum of its addresses %+v", k, got, c)
		}
	}
	for asn, c := range ases {
		if got := tb.AS(asn); got != c {
			t.Fatalf("AS %d: %+v, sum of its addresses %+v", asn, got, c)
		}
	}
}

// Two tables that fold the same feed, each with its own attack table,
// give the same answer for every address, also once full.
func TestConsistency(t *testing.T) {
	feed := randomFeed(5000, 3)
	var tables []*history.Table
	for range 2 {
		tb := history.New(history.Config{MaxAddrs: 300, Locate: asnOf, Attacks: attacks.NewTable(5000)})
		apply(t, tb, feed...)
		tables = append(tables, tb)
	}
	if tables[0].Sizes().Evicted == 0 {
		t.Fatal("the feed did not fill the table")
	}
	probe := randomFeed(2000, 4)
	for _, ev := range append(feed, probe...) {
		a, _ := netip.AddrFromSlice(ev.GetVerdict().GetAddress())
		if !a.IsValid() {
			a, _ = netip.AddrFromSlice(ev.GetAttack().GetAddress())
		}
		a0, a1 := tables[0].Lookup(a, asnOf(a)), tables[1].Lookup(a, asnOf(a))
		if a0 != a1 {
			t.Fatalf("%s: %+v and %+v", a, a0, a1)
		}
	}
	var e0, e1 []history.Entry
	tables[0].Each(func(e history.Entry) bool { e0 = append(e0, e); return true })
	tables[1].Each(func(e history.Entry) bool { e1 = append(e1, e); return true })
	if len(e0) != len(e1) {
		t.Fatalf("%d and %d entries", len(e0), len(e1))
	}
	for i := range e0 {
		if e0[i] != e1[i] {
			t.Fatalf("entry %d: %+v and %+v", i, e0[i], e1[i])
		}
	}
}

func randomFeed(n int, seed uint64) []*styxv1.FeedEvent {
	rng := rand.New(rand.NewPCG(seed, 9))
	var out []*styxv1.FeedEvent
	for i := range n {
		a := netip.AddrFrom4([4]byte{203, byte(rng.IntN(3)), byte(rng.IntN(16)), byte(1 + rng.IntN(100))}).String()
		rev := uint64(7<<32 | (i + 1))
		if rng.IntN(5) == 0 {
			out = append(out, attackEv(rev, a, attacks.Kind(1+rng.IntN(int(attacks.NumKinds)-1)), int64(rng.IntN(1000))))
		} else {
			out = append(out, verdictEv(rev, a, rng.IntN(4) == 0, int64(i)))
		}
	}
	return out
}

// A nil table answers every lookup with zero statistics, as a server that
// keeps no history must.
func TestNilTableLookup(t *testing.T) {
	var tb *history.Table
	if st := tb.Lookup(netip.MustParseAddr("203.0.1.5"), 64500); st != (history.Stats{}) {
		t.Fatalf("nil table: %+v", st)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tb := history.New(history.Config{Locate: asnOf})
	for _, ev := range randomFeed(200, 1) {
		if _, err := tb.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
	a := netip.MustParseAddr("203.0.1.5")
	if n := testing.AllocsPerRun(100, func() { tb.Lookup(a, 64500) }); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := history.New(history.Config{Locate: asnOf})
	feed := randomFeed(100000, 2)
	for _, ev := range feed {
		_, _ = tb.Apply(ev)
	}
	addrs := make([]netip.Addr, 4096)
	for i := range addrs {
		addrs[i], _ = netip.AddrFromSlice(feed[i].GetVerdict().GetAddress())
		if !addrs[i].IsValid() {
			addrs[i] = netip.MustParseAddr("203.0.1.1")
		}
	}
	benchLookups(b, tb, addrs)
}

// benchLookups looks addrs up in tb in turn and reports lookups per CPU
// second.
func benchLookups(b *testing.B, tb *history.Table, addrs []netip.Addr) {
	b.ReportAllocs()
	i := 0
	cpu := cpuTime()
	for b.Loop() {
		a := addrs[i%len(addrs)]
		tb.Lookup(a, asnOf(a))
		i++
	}
	if cpu := cpuTime() - cpu; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "lookups/cpu-s")
	}
}

// BenchmarkFold folds verdicts into a full table (evicting one address a
// fold): what a worker spends per feed event.
func BenchmarkFold(b *testing.B) {
	tb := history.New(history.Config{MaxAddrs: 1 << 16, Locate: asnOf})
	rng := rand.New(rand.NewPCG(1, 1))
	addrs := make([]netip.Addr, 1<<18)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{byte(1 + rng.IntN(200)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
	}
	b.ReportAllocs()
	i := 0
	cpu := cpuTime()
	for b.Loop() {
		tb.AddVerdict(addrs[i%len(addrs)], i%5 == 0, int64(i))
		i++
	}
	if cpu := cpuTime() - cpu; cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "folds/cpu-s")
	}
}

// cpuTime is the processor time the process has used: on a shared
// machine, wall time also counts waiting for a processor.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// An attack history folded at once equals its reports folded one by one.
func TestAddAttackHistory(t *testing.T) {
	one := history.New(history.Config{MaxAddrs: 100, Locate: asnOf})
	whole := history.New(history.Config{MaxAddrs: 100, Locate: asnOf})
	a := netip.MustParseAddr("198.51.100.7")
	var kinds uint8
	var last int64
	for i, k := range []attacks.Kind{attacks.KindLogin, attacks.KindProbe, attacks.KindProbe} {
		at := t0.Add(time.Duration(i) * time.Minute)
		one.AddAttack(attacks.Report{Addr: a, Time: at, Kind: k, Reporter: "node-1"})
		kinds |= 1 << k
		last = at.UnixNano()
	}
	whole.AddAttackHistory(a, 0, 0, 0) // nothing
	whole.AddAttackHistory(a, 3, kinds, last)
	for _, q := range []string{"198.51.100.7", "198.51.100.8"} {
		addr := netip.MustParseAddr(q)
		if got, want := whole.Lookup(addr, asnOf(addr)), one.Lookup(addr, asnOf(addr)); got != want {
			t.Errorf("%s: whole %+v, one by one %+v", q, got, want)
		}
	}
	if z := whole.Sizes(); z.Addrs != 1 || z.Buckets != 1 {
		t.Errorf("sizes %+v", z)
	}
}
