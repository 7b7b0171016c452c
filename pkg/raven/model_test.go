package raven_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/verdict"
)

// trainTiny trains a small model on every network of db, with 5-fold
// out-of-fold features as the trainer makes them.
func trainTiny(tb testing.TB, db *locdb.DB, ex *features.Extractor) *model.Model {
	tb.Helper()
	return trainTinySchema(tb, db, features.SchemaVersion, nil)
}

// trainTinySchema is trainTiny for a feature schema: for schema 2 the
// history block of each network's first address comes from hist.
func trainTinySchema(tb testing.TB, db *locdb.DB, schema int, hist features.HistorySource) *model.Model {
	tb.Helper()
	fold := func(n locdb.Network) int {
		a := n.Prefix.Addr().As16()
		return int(a[12]^a[13]^a[14]^a[5]) % 5
	}
	var folds []*features.Extractor
	for k := range 5 {
		fx, err := features.NewFoldExtractor(db, func(n locdb.Network) bool { return fold(n) == k }, 1.25)
		if err != nil {
			tb.Fatal(err)
		}
		folds = append(folds, fx)
	}
	d := &model.Dataset{Features: features.NumFeaturesOf(schema)}
	var ya, yh []float32
	x := make([]float32, d.Features)
	for n := range db.Networks() {
		folds[fold(n)].ExtractNetwork(n, x)
		if schema == features.SchemaHistory {
			var s history.Stats
			if hist != nil {
				s = hist.Lookup(n.Prefix.Addr(), n.ASN)
			}
			features.WriteHistory(s, x)
		}
		d.X = append(d.X, x...)
		ya = append(ya, b2f(n.Flags.AnonymousProxy()))
		yh = append(yh, b2f(n.Flags.Drop()))
	}
	p := model.DefaultParams()
	p.Trees, p.MaxDepth, p.MinLeafRows, p.LearningRate = 30, 4, 5, 0.3
	bins, err := model.Bin(d, p.MaxBins)
	if err != nil {
		tb.Fatal(err)
	}
	m := &model.Model{Version: fmt.Sprintf("raven-test-%d", schema), SchemaVersion: schema, Features: features.NamesOf(schema), Params: p}
	for i, y := range [][]float32{ya, yh} {
		bs, err := model.NewBooster(p, d, bins, y, i)
		if err != nil {
			tb.Fatal(err)
		}
		for range p.Trees {
			if err := bs.Grow(context.Background()); err != nil {
				tb.Fatal(err)
			}
		}
		m.Heads = append(m.Heads, model.Head{Name: []string{model.HeadAnonymiser, model.HeadHostile}[i], Base: bs.Base(), Threshold: 0.5, Trees: bs.Trees()})
	}
	if err := m.Compile(); err != nil {
		tb.Fatal(err)
	}
	return m
}

func b2f(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

func newEngine(tb testing.TB) (*raven.Model, *locdb.DB) {
	tb.Helper()
	db := featurestest.Open(tb, 200, 11)
	ex, err := features.NewExtractor(db)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := raven.NewModel(trainTiny(tb, db, ex), ex)
	if err != nil {
		tb.Fatal(err)
	}
	return e, db
}

func TestModelEngine(t *testing.T) {
	e, db := newEngine(t)
	var _ raven.Engine = e
	if e.ModelVersion() != "raven-test-1" {
		t.Fatalf("model version %q", e.ModelVersion())
	}
	v := e.Examine(netip.MustParseAddr("192.0.2.1"))
	if v.Proxy || v.Risk != 0 || !slices.Equal(v.Evidence, []string{"locdb:no-network"}) {
		t.Fatalf("unknown address: %+v", v)
	}
	var flaggedAnon, flaggedDrop, modelYes, clean int
	for n := range db.Networks() {
		a := n.Prefix.Addr()
		v := e.Examine(a)
		s, ok := e.Score(a)
		if !ok || v.Risk > 100 {
			t.Fatalf("%s: verdict %+v, scored %v", n.Prefix, v, ok)
		}
		if !slices.ContainsFunc(v.Evidence, func(s string) bool { return strings.HasPrefix(s, "raven:anonymiser=") }) {
			t.Fatalf("%s: evidence %q lacks the model's scores", n.Prefix, v.Evidence)
		}
		switch {
		case n.Flags.Drop():
			flaggedDrop++
			if !v.Proxy || v.Type != raven.TypeHostile || v.Risk != 100 || v.Evidence[0] != "locdb:drop" {
				t.Fatalf("%s drop: %+v", n.Prefix, v)
			}
		case n.Flags.AnonymousProxy():
			flaggedAnon++
			if !v.Proxy || v.Type != raven.TypeAnonymizer || v.Risk < 90 || v.Evidence[0] != "locdb:anonymous-proxy" {
				t.Fatalf("%s anonymous proxy: %+v", n.Prefix, v)
			}
		case s.Hostile >= 0.5:
			modelYes++
			if !v.Proxy || v.Type != raven.TypeHostile || v.Risk < 50 {
				t.Fatalf("%s p_hostile %.2f: %+v", n.Prefix, s.Hostile, v)
			}
		case s.Anonymiser >= 0.5:
			modelYes++
			if !v.Proxy || v.Type != raven.TypeAnonymizer || v.Risk < 50 {
				t.Fatalf("%s p_anon %.2f: %+v", n.Prefix, s.Anonymiser, v)
			}
		default:
			clean++
			if v.Proxy || v.Risk > 50 && v.Type != raven.TypeHosting || v.ModelVersion != "" {
				t.Fatalf("%s p %.2f/%.2f: %+v", n.Prefix, s.Anonymiser, s.Hostile, v)
			}
		}
	}
	if flaggedAnon == 0 || flaggedDrop == 0 || modelYes == 0 || clean == 0 {
		t.Fatalf("anon %d drop %d model-yes %d clean %d: the fixture does not exercise every branch", flaggedAnon, flaggedDrop, modelYes, clean)
	}
}

func TestModelEngineRefusesOtherSchema(t *testing.T) {
	db := featurestest.Open(t, 40, 12)
	ex, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	m := trainTiny(t, db, ex)
	m.Heads[1].Name = "other"
	if err := m.Compile(); err != nil {
		t.Fatal(err)
	}
	if _, err := raven.NewModel(m, ex); err == nil || !strings.Contains(err.Error(), "hostile") {
		t.Fatalf("model without a hostile head: %v", err)
	}
}

func TestModelScoreDoesNotAllocate(t *testing.T) {
	e, _ := newEngine(t)
	a := netip.MustParseAddr("11.0.3.9")
	if n := testing.AllocsPerRun(200, func() { e.Score(a) }); n != 0 {
		t.Fatalf("Score allocates %v times", n)
	}
	if n := testing.AllocsPerRun(200, func() { e.Examine(a) }); n != 0 {
		t.Fatalf("Examine allocates %v times", n)
	}
}

// reference is the engine as first written, before the scoring layout and
// the caches: every tree walked node by node, the hosting test run on the
// AS name, the evidence formatted and appended string by string. The
// engine must agree with it bit for bit.
type reference struct {
	m  *model.Model
	ex *features.Extractor
}

func (r reference) raw(head int, x []float32) float64 {
	h := &r.m.Heads[head]
	s := h.Base
	for _, t := range h.Trees {
		i := int32(0)
		for t.Feature[i] >= 0 {
			if x[t.Feature[i]] <= t.Threshold[i] {
				i = t.Left[i]
			} else {
				i = t.Right[i]
			}
		}
		s += float64(t.Value[i])
	}
	return s
}

func refSigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

func refRisk(p float64) uint32 {
	if !(p > 0) {
		return 0
	}
	return uint32(min(100, math.Round(100*p)))
}

// examine returns the reference verdict and scores of addr.
func (r reference) examine(tb testing.TB, addr netip.Addr) (verdict.Verdict, raven.Scores, bool) {
	x := make([]float32, features.Count)
	n, ok := r.ex.Extract(addr, x)
	if !ok {
		return verdict.Verdict{Evidence: []string{"locdb:no-network"}}, raven.Scores{Network: n}, false
	}
	hosting := raven.HostingName(n.ASName)
	if x[features.ASHostingName] != b2f(hosting) {
		tb.Fatalf("%s: feature as_hosting_name %v for AS name %q", addr, x[features.ASHostingName], n.ASName)
	}
	pa := refSigmoid(r.raw(r.m.Head(model.HeadAnonymiser), x))
	ph := refSigmoid(r.raw(r.m.Head(model.HeadHostile), x))
	thrA, thrH := r.m.Threshold(r.m.Head(model.HeadAnonymiser)), r.m.Threshold(r.m.Head(model.HeadHostile))
	var v verdict.Verdict
	var ev []string
	switch {
	case n.Flags.Drop():
		v = verdict.Verdict{Proxy: true, Type: raven.TypeHostile, Risk: 100}
		ev = append(ev, "locdb:drop")
	case n.Flags.AnonymousProxy():
		v = verdict.Verdict{Proxy: true, Type: raven.TypeAnonymizer, Risk: max(90, refRisk(pa))}
		ev = append(ev, "locdb:anonymous-proxy")
	case ph >= thrH:
		v = verdict.Verdict{Proxy: true, Type: raven.TypeHostile, Risk: refRisk(ph)}
	case pa >= thrA:
		v = verdict.Verdict{Proxy: true, Type: raven.TypeAnonymizer, Risk: refRisk(pa)}
	case hosting:
		v = verdict.Verdict{Type: raven.TypeHosting, Risk: max(33, refRisk(max(pa, ph)))}
		ev = append(ev, "locdb:hosting-as")
	default:
		v = verdict.Verdict{Risk: refRisk(max(pa, ph))}
	}
	ev = append(ev, fmt.Sprintf("raven:anonymiser=%d%%", refRisk(pa)), fmt.Sprintf("raven:hostile=%d%%", refRisk(ph)))
	near := float32(10)
	if x[features.IsIPv6] == 1 {
		near = 16
	}
	for _, f := range []struct {
		cond bool
		ev   string
	}{
		{x[features.ASAnonOthers] > 0, features.EvASAnon},
		{x[features.ASDropOthers] > 0, features.EvASDrop},
		{x[features.WideAnonOthers] > 0, features.EvWideAnon},
		{x[features.WideDropOthers] > 0, features.EvWideDrop},
		{x[features.NarrowAnonOthers] > 0, features.EvNarrowAnon},
		{x[features.NarrowDropOthers] > 0, features.EvNarrowDrop},
		{x[features.NearAnonLog2] >= 0 && x[features.NearAnonLog2] <= near, features.EvNearAnon},
		{x[features.NearDropLog2] >= 0 && x[features.NearDropLog2] <= near, features.EvNearDrop},
	} {
		if f.cond {
			ev = append(ev, f.ev)
		}
	}
	v.Evidence = ev
	return v, raven.Scores{Network: n, Anonymiser: pa, Hostile: ph}, true
}

// compareWithReference holds Score and Examine to the reference on every
// address, probabilities bit for bit.
func compareWithReference(t *testing.T, e *raven.Model, ref reference, addrs []netip.Addr) (found int) {
	t.Helper()
	for _, a := range addrs {
		wantV, wantS, wantOK := ref.examine(t, a)
		s, ok := e.Score(a)
		if ok != wantOK || math.Float64bits(s.Anonymiser) != math.Float64bits(wantS.Anonymiser) ||
			math.Float64bits(s.Hostile) != math.Float64bits(wantS.Hostile) || s.Network != wantS.Network {
			t.Fatalf("%s: Score %v %+v, reference %v %+v", a, ok, s, wantOK, wantS)
		}
		if v := e.Examine(a); !reflect.DeepEqual(v, wantV) {
			t.Fatalf("%s: Examine %+v, reference %+v", a, v, wantV)
		}
		if ok {
			found++
		}
	}
	return found
}

// TestModelEngineMatchesReference: the engine gives the reference's
// probabilities and verdicts on the fixture database, for the first
// address of every network, a random address inside each and addresses
// without a network.
func TestModelEngineMatchesReference(t *testing.T) {
	db := featurestest.Open(t, 200, 11)
	ex, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	m := trainTiny(t, db, ex)
	e, err := raven.NewModel(m, ex)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var addrs []netip.Addr
	for n := range db.Networks() {
		addrs = append(addrs, n.Prefix.Addr())
		b := n.Prefix.Addr().AsSlice() // and a random address inside
		for i := n.Prefix.Bits() / 8; i < len(b); i++ {
			b[i] |= byte(rng.IntN(256)) & (0xff >> max(0, n.Prefix.Bits()-8*i))
		}
		a, _ := netip.AddrFromSlice(b)
		if !n.Prefix.Contains(a) {
			t.Fatalf("%s is not in %s", a, n.Prefix)
		}
		addrs = append(addrs, a)
	}
	addrs = append(addrs, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:11.0.3.9"))
	if found := compareWithReference(t, e, reference{m, ex}, addrs); found < len(addrs)/2 {
		t.Fatalf("only %d of %d addresses found", found, len(addrs))
	}
}

// TestModelEngineMatchesReferenceReal is the same with a real model
// (STYX_RAVEN_MODEL) on the system's database, over every 13th network.
func TestModelEngineMatchesReferenceReal(t *testing.T) {
	e, ref, db := realEngine(t)
	var addrs []netip.Addr
	k := 0
	for n := range db.Networks() {
		if k++; k%13 == 0 {
			addrs = append(addrs, n.Prefix.Addr())
		}
	}
	compareWithReference(t, e, ref, addrs)
}

// TestModelExamineConcurrent: verdicts examined from several goroutines
// at once (the evidence cache filled concurrently) are the sequential
// ones.
func TestModelExamineConcurrent(t *testing.T) {
	e, db := newEngine(t)
	var addrs []netip.Addr
	for n := range db.Networks() {
		addrs = append(addrs, n.Prefix.Addr())
	}
	want := make([]verdict.Verdict, len(addrs))
	e2, _ := newEngine(t)
	for i, a := range addrs {
		want[i] = e2.Examine(a)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := range 4 {
		wg.Go(func() {
			for k := range addrs {
				i := (k*7 + g*131) % len(addrs)
				if v := e.Examine(addrs[i]); !reflect.DeepEqual(v, want[i]) {
					errs <- fmt.Sprintf("%s: %+v, want %+v", addrs[i], v, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// synthetic is a Scorer and FeatureExtractor whose outputs follow the
// address bits, so that Examine meets more distinct evidence lists than
// its cache holds.
type synthetic struct{}

func (synthetic) ModelVersion() string { return "synthetic" }
func (synthetic) FeatureSchema() int   { return 1 }
func (synthetic) NumFeatures() int     { return 2 }
func (synthetic) SchemaVersion() int   { return 1 }
func (synthetic) Head(name string) int {
	return map[string]int{raven.HeadAnonymiser: 0, raven.HeadHostile: 1}[name]
}
func (synthetic) Threshold(int) float64    { return 0.9 }
func (synthetic) Hosting(x []float32) bool { return uint32(x[1])&1 != 0 }
func (synthetic) Facts(x []float32) uint32 { return uint32(x[1]) >> 1 & 0xff }
func (synthetic) Fact(i int) string        { return fmt.Sprintf("fact:%d", i) }
func (synthetic) Probabilities(_, _ int, x []float32) (float64, float64) {
	v := uint32(x[0])
	return float64(v%97) / 100, float64(v/97%89) / 100
}
func (synthetic) Extract(a netip.Addr, x []float32) (locdb.Network, bool) {
	b := a.As4()
	x[0], x[1] = float32(uint32(b[2])<<8|uint32(b[3])), float32(b[1])
	flags := locdb.Flags(b[0]&1)*locdb.FlagAnonymousProxy | locdb.Flags(b[0]>>1&1)*locdb.FlagDrop
	return locdb.Network{Prefix: netip.PrefixFrom(a, 32), Flags: flags}, true
}

// TestModelEvidenceCacheEvicts: with far more distinct evidence lists than
// cache slots, every verdict still carries its own list, without spare
// capacity (so that appending to it copies).
func TestModelEvidenceCacheEvicts(t *testing.T) {
	e, err := raven.NewModel(synthetic{}, synthetic{})
	if err != nil {
		t.Fatal(err)
	}
	var syn synthetic
	rng := rand.New(rand.NewPCG(3, 4))
	for range 3 {
		for range 20000 {
			a := netip.AddrFrom4([4]byte{byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256)), byte(rng.IntN(256))})
			v := e.Examine(a)
			x := make([]float32, 2)
			n, _ := syn.Extract(a, x)
			pa, ph := syn.Probabilities(0, 1, x)
			var want []string
			switch {
			case n.Flags.Drop():
				want = append(want, "locdb:drop")
			case n.Flags.AnonymousProxy():
				want = append(want, "locdb:anonymous-proxy")
			case ph >= 0.9, pa >= 0.9:
			case syn.Hosting(x):
				want = append(want, "locdb:hosting-as")
			}
			want = append(want, fmt.Sprintf("raven:anonymiser=%d%%", refRisk(pa)), fmt.Sprintf("raven:hostile=%d%%", refRisk(ph)))
			for i := range 8 {
				if syn.Facts(x)&(1<<i) != 0 {
					want = append(want, fmt.Sprintf("fact:%d", i))
				}
			}
			if !slices.Equal(v.Evidence, want) || cap(v.Evidence) != len(v.Evidence) {
				t.Fatalf("%s: evidence %q (capacity %d), want %q", a, v.Evidence, cap(v.Evidence), want)
			}
		}
	}
}

func BenchmarkModelEngine(b *testing.B) {
	e, db := newEngine(b)
	var addrs []netip.Addr
	for n := range db.Networks() {
		addrs = append(addrs, n.Prefix.Addr())
	}
	b.Run("Score", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.Score(addrs[i%len(addrs)])
			i++
		}
	})
	b.Run("Examine", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.Examine(addrs[i%len(addrs)])
			i++
		}
	})
}

// realEngine is the engine over a real model (STYX_RAVEN_MODEL names the
// artifact, which styx-trainer train writes) on the system's database; it
// skips without them.
func realEngine(tb testing.TB) (*raven.Model, reference, *locdb.DB) {
	tb.Helper()
	path := os.Getenv("STYX_RAVEN_MODEL")
	if path == "" {
		tb.Skip("STYX_RAVEN_MODEL not set")
	}
	m, err := model.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		tb.Skip(err)
	}
	tb.Cleanup(func() { db.Close() })
	ex, err := features.NewExtractor(db)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := raven.NewModel(m, ex)
	if err != nil {
		tb.Fatal(err)
	}
	return e, reference{m, ex}, db
}

// BenchmarkModelEngineReal measures verdicts per second with a real model
// on the real database (see realEngine), over the first address of every
// 13th network, so that lookups miss the caches as live traffic does: in
// database order (Score, Examine), where neighbouring queries share the
// paths of a binary search, and shuffled (ScoreShuffled,
// ExamineShuffled), as addresses come from the wild. Extract and
// Probabilities time the two halves of Score.
func BenchmarkModelEngineReal(b *testing.B) {
	e, ref, db := realEngine(b)
	m, ex := ref.m, ref.ex
	var addrs []netip.Addr
	k := 0
	for n := range db.Networks() {
		if k++; k%13 == 0 {
			addrs = append(addrs, n.Prefix.Addr())
		}
	}
	shuffled := slices.Clone(addrs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	b.Run("Extract", func(b *testing.B) {
		x := make([]float32, features.Count)
		i := 0
		for b.Loop() {
			ex.Extract(addrs[i%len(addrs)], x)
			i++
		}
	})
	b.Run("Probabilities", func(b *testing.B) {
		xs := make([][]float32, 0, 4096)
		for _, a := range addrs[:min(len(addrs), 4096)] {
			x := make([]float32, features.Count)
			ex.Extract(a, x)
			xs = append(xs, x)
		}
		ha, hh := m.Head(model.HeadAnonymiser), m.Head(model.HeadHostile)
		i := 0
		for b.Loop() {
			m.Probabilities(ha, hh, xs[i%len(xs)])
			i++
		}
	})
	// With STYX_RAVEN_MODEL2 naming a schema 2 artifact, its Examine is
	// timed in the same run, over a full history table (see realHistory).
	e2 := realEngine2(b, db, ex)
	for _, bc := range []struct {
		name  string
		addrs []netip.Addr
		e     *raven.Model
	}{{"Score", addrs, e}, {"Examine", addrs, e}, {"ScoreShuffled", shuffled, e}, {"ExamineShuffled", shuffled, e},
		{"ExamineSchema2", addrs, e2}, {"ExamineSchema2Shuffled", shuffled, e2}} {
		if bc.e == nil {
			continue
		}
		score := strings.HasPrefix(bc.name, "Score")
		b.Run(bc.name, func(b *testing.B) {
			e := bc.e
			b.ReportAllocs()
			i := 0
			cpu := cpuTime()
			for b.Loop() {
				a := bc.addrs[i%len(bc.addrs)]
				if score {
					e.Score(a)
				} else {
					e.Examine(a)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verdicts/s")
			if cpu := cpuTime() - cpu; cpu > 0 {
				// Per second of processor time: on a shared machine the
				// benchmark's wall time also counts time it waited.
				b.ReportMetric(float64(b.N)/cpu.Seconds(), "verdicts/cpu-s")
			}
		})
	}
}

// cpuTime is the processor time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
