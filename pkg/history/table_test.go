package history_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
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

func verdictAt(a string, proxy bool, sec int64) *styxv1.Verdict {
	return &styxv1.Verdict{Address: netip.MustParseAddr(a).AsSlice(), Proxy: proxy, InferredUnixNano: t0.Add(time.Duration(sec) * time.Second).UnixNano()}
}

func attackAt(a string, k attacks.Kind, sec int64) *styxv1.AttackReport {
	return attacks.Report{Addr: netip.MustParseAddr(a), Time: t0.Add(time.Duration(sec) * time.Second), Kind: k, Reporter: "node-1"}.Proto()
}

// verdictEv and attackEv are log batches of one item.
func verdictEv(a string, proxy bool, sec int64) *styxv1.LogBatch {
	return &styxv1.LogBatch{Verdicts: []*styxv1.Verdict{verdictAt(a, proxy, sec)}}
}

func attackEv(a string, k attacks.Kind, sec int64) *styxv1.LogBatch {
	return &styxv1.LogBatch{Attacks: []*styxv1.AttackReport{attackAt(a, k, sec)}}
}

func apply(t testing.TB, tb *history.Table, bs ...*styxv1.LogBatch) history.Folded {
	t.Helper()
	var all history.Folded
	for _, b := range bs {
		f, err := tb.ApplyBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		all = all.Add(f)
	}
	return all
}

func TestFoldAndLeaveOneOut(t *testing.T) {
	at := attacks.NewTable(100)
	tb := history.New(history.Config{MaxAddrs: 100, Locate: asnOf, Attacks: at})
	f := apply(t, tb,
		verdictEv("198.51.100.1", true, 1),
		verdictEv("198.51.100.2", false, 2),
		verdictEv("198.51.100.3", true, 3),
		attackEv("198.51.100.2", attacks.KindLogin, 4),
		&styxv1.LogBatch{Attacks: []*styxv1.AttackReport{
			attackAt("198.51.100.2", attacks.KindProbe, 5),
			attackAt("198.51.100.2", attacks.KindProbe, 5), // the same report again: the attack table drops it
		}},
		verdictEv("198.51.101.9", true, 7), // another /24, same AS
	)
	if f != (history.Folded{Verdicts: 4, Attacks: 2, Ignored: 1}) {
		t.Fatalf("folded %+v", f)
	}
	// A verdict older than the one held changes nothing.
	if f := apply(t, tb, verdictEv("198.51.100.3", false, 2)); f != (history.Folded{Stale: 1}) {
		t.Fatalf("an older verdict: %+v", f)
	}
	// Of two verdicts made at the same time, the proxy one is held.
	if changed := tb.AddVerdict(netip.MustParseAddr("198.51.100.3"), false, t0.Add(3*time.Second).UnixNano()); changed {
		t.Fatal("a clean verdict as new as the proxy one replaced it")
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
	// The newest verdict counts: 198.51.100.1 found clean now.
	apply(t, tb, verdictEv("198.51.100.1", false, 8))
	if c := tb.Bucket(k); c != (history.Counts{Verdicts: 3, Proxies: 1, Attacks: 2}) {
		t.Fatalf("bucket after a new verdict %+v", c)
	}
	// A verdict with an error is not a verdict.
	if f := apply(t, tb, &styxv1.LogBatch{Verdicts: []*styxv1.Verdict{{Address: a2.AsSlice(), Proxy: true, Error: "poison", InferredUnixNano: t0.Add(9 * time.Second).UnixNano()}}}); f != (history.Folded{Ignored: 1}) {
		t.Fatalf("an error verdict: %+v", f)
	}
	if c := tb.Bucket(k); c.Proxies != 1 {
		t.Fatalf("an error verdict was folded: %+v", c)
	}
	// An item that does not decode is skipped and named; the rest of its
	// batch is folded.
	f, err := tb.ApplyBatch(&styxv1.LogBatch{Term: 3, Seq: 9,
		Verdicts: []*styxv1.Verdict{{Address: []byte{1, 2}}, verdictAt("198.51.100.4", false, 9)},
		Attacks:  []*styxv1.AttackReport{{Address: []byte{1}}},
	})
	if !errors.Is(err, history.ErrNotAddress) || f != (history.Folded{Verdicts: 1, Invalid: 2}) {
		t.Fatalf("a batch with invalid items: %+v, %v", f, err)
	}
	if c := tb.Bucket(k); c.Verdicts != 4 {
		t.Fatalf("the valid verdict of a batch with invalid items: %+v", c)
	}
	// IPv6: a /48.
	apply(t, tb, verdictEv("2001:db8:1:2::1", true, 10), verdictEv("2001:db8:1:3::1", true, 11), verdictEv("2001:db8:2::1", false, 12))
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

// Two tables that fold the same batches in the same order, each with its
// own attack table, give the same answer for every address and hold the
// same entries in the same recency order, also once full.
func TestConsistency(t *testing.T) {
	feed := randomBatches(5000, 3)
	var tables []*history.Table
	for range 2 {
		tb := history.New(history.Config{MaxAddrs: 300, Locate: asnOf, Attacks: attacks.NewTable(5000)})
		apply(t, tb, feed...)
		tables = append(tables, tb)
	}
	if tables[0].Sizes().Evicted == 0 {
		t.Fatal("the batches did not fill the table")
	}
	for _, a := range batchAddrs(append(feed, randomBatches(2000, 4)...)) {
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

// The verdict log has two streams (proxy verdicts and attack reports in
// one, clean verdicts in the other) that a follower reads side by side, so
// two workers fold the same messages in different interleavings. Their
// tables must be equal (while not full): the same entries, the same sums,
// the same answer to every lookup. Here the batches are folded in stream
// order, in every stream's order interleaved at random, and wholly shuffled
// (attack reports too: their sums commute, and these have no duplicates
// that a different order would count differently).
func TestOrderIndependent(t *testing.T) {
	proxyStream, cleanStream := streamBatches(4000, 5)
	inOrder := append(append([]*styxv1.LogBatch(nil), proxyStream...), cleanStream...)
	rng := rand.New(rand.NewPCG(8, 8))
	interleaved := interleave(rng, proxyStream, cleanStream)
	shuffled := append([]*styxv1.LogBatch(nil), inOrder...)
	rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	reversed := slices.Clone(inOrder)
	slices.Reverse(reversed)

	fold := func(bs []*styxv1.LogBatch) *history.Table {
		tb := history.New(history.Config{MaxAddrs: 10000, Locate: asnOf, Attacks: attacks.NewTable(10000)})
		apply(t, tb, bs...)
		return tb
	}
	want := fold(inOrder)
	if z := want.Sizes(); z.Evicted != 0 || z.Addrs < 500 {
		t.Fatalf("sizes %+v: the test wants a table that is not full", z)
	}
	probe := batchAddrs(append(inOrder, randomBatches(500, 6)...))
	for name, order := range map[string][]*styxv1.LogBatch{"interleaved": interleaved, "shuffled": shuffled, "reversed": reversed} {
		got := fold(order)
		if d := diffTables(want, got, probe); d != "" {
			t.Errorf("folded %s: %s", name, d)
		}
	}
	// The test can fail: the same batches with the rule "the last verdict
	// folded counts" (each verdict made newer than all before it) differ.
	last := history.New(history.Config{MaxAddrs: 10000, Locate: asnOf, Attacks: attacks.NewTable(10000)})
	var at int64
	for _, b := range shuffled {
		for _, v := range b.GetVerdicts() {
			at++
			a, _ := netip.AddrFromSlice(v.GetAddress())
			last.AddVerdict(a, v.GetProxy(), at)
		}
	}
	if diffTables(want, last, probe) == "" {
		t.Fatal("the order of the folds made no difference even to a last-wins rule: the batches test nothing")
	}
}

// diffTables describes the first difference between a and b: their
// entries (as a set, without recency), sizes and clock, and the lookups
// of probe.
func diffTables(a, b *history.Table, probe []netip.Addr) string {
	ea, eb := entries(a), entries(b)
	if len(ea) != len(eb) {
		return fmt.Sprintf("%d and %d entries", len(ea), len(eb))
	}
	for i := range ea {
		if ea[i] != eb[i] {
			return fmt.Sprintf("entry %+v and %+v", ea[i], eb[i])
		}
	}
	za, zb := a.Sizes(), b.Sizes()
	if za.Addrs != zb.Addrs || za.Buckets != zb.Buckets || za.ASes != zb.ASes || !za.Clock.Equal(zb.Clock) {
		return fmt.Sprintf("sizes %+v and %+v", za, zb)
	}
	for _, p := range probe {
		if la, lb := a.Lookup(p, asnOf(p)), b.Lookup(p, asnOf(p)); la != lb {
			return fmt.Sprintf("%s: %+v and %+v", p, la, lb)
		}
	}
	return ""
}

// entries returns a table's entries in address order.
func entries(t *history.Table) []history.Entry {
	var out []history.Entry
	t.Each(func(e history.Entry) bool { out = append(out, e); return true })
	slices.SortFunc(out, func(x, y history.Entry) int { return x.Addr.Compare(y.Addr) })
	return out
}

// streamBatches returns n items as the log would hold them: batches of 1
// to 8 proxy verdicts or attack reports (the proxy stream) and of clean
// verdicts (the clean stream). Addresses repeat, with verdicts made at
// times that collide often (one second in ten), so that both the newest
// rule and its tie rule are exercised.
func streamBatches(n int, seed uint64) (proxy, clean []*styxv1.LogBatch) {
	rng := rand.New(rand.NewPCG(seed, 11))
	for n > 0 {
		size := min(n, 1+rng.IntN(8))
		n -= size
		b := &styxv1.LogBatch{}
		kind := rng.IntN(5)
		for range size {
			a := netip.AddrFrom4([4]byte{203, byte(rng.IntN(3)), byte(rng.IntN(16)), byte(1 + rng.IntN(100))}).String()
			switch kind {
			case 0:
				b.Attacks = append(b.Attacks, attackAt(a, attacks.Kind(1+rng.IntN(int(attacks.NumKinds)-1)), int64(rng.IntN(100000))))
			case 1, 2:
				b.Verdicts = append(b.Verdicts, verdictAt(a, true, int64(rng.IntN(10))))
			default:
				b.Verdicts = append(b.Verdicts, verdictAt(a, false, int64(rng.IntN(10))))
			}
		}
		if kind <= 2 {
			proxy = append(proxy, b)
		} else {
			clean = append(clean, b)
		}
	}
	return proxy, clean
}

// interleave merges the streams at random, each in its own order.
func interleave(rng *rand.Rand, a, b []*styxv1.LogBatch) []*styxv1.LogBatch {
	out := make([]*styxv1.LogBatch, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && rng.IntN(2) == 0) {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// randomBatches returns n one-item batches: a verdict (made at its index,
// in seconds) or, one in five, an attack report.
func randomBatches(n int, seed uint64) []*styxv1.LogBatch {
	rng := rand.New(rand.NewPCG(seed, 9))
	var out []*styxv1.LogBatch
	for i := range n {
		a := netip.AddrFrom4([4]byte{203, byte(rng.IntN(3)), byte(rng.IntN(16)), byte(1 + rng.IntN(100))}).String()
		if rng.IntN(5) == 0 {
			out = append(out, attackEv(a, attacks.Kind(1+rng.IntN(int(attacks.NumKinds)-1)), int64(rng.IntN(1000))))
		} else {
			out = append(out, verdictEv(a, rng.IntN(4) == 0, int64(i)))
		}
	}
	return out
}

// batchAddrs returns the addresses the batches name.
func batchAddrs(bs []*styxv1.LogBatch) []netip.Addr {
	var out []netip.Addr
	for _, b := range bs {
		for _, v := range b.GetVerdicts() {
			a, _ := netip.AddrFromSlice(v.GetAddress())
			out = append(out, a)
		}
		for _, r := range b.GetAttacks() {
			a, _ := netip.AddrFromSlice(r.GetAddress())
			out = append(out, a)
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
	apply(t, tb, randomBatches(200, 1)...)
	a := netip.MustParseAddr("203.0.1.5")
	if n := testing.AllocsPerRun(100, func() { tb.Lookup(a, 64500) }); n != 0 {
		t.Fatalf("Lookup allocates %v times", n)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := history.New(history.Config{Locate: asnOf})
	feed := randomBatches(100000, 2)
	apply(b, tb, feed...)
	addrs := batchAddrs(feed)[:4096]
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
// fold): what a worker spends per verdict of the log.
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
