package raven_test

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/raven"
)

// trainTiny trains a small model on every network of db, with 5-fold
// out-of-fold features as the trainer makes them.
func trainTiny(tb testing.TB, db *locdb.DB, ex *features.Extractor) *model.Model {
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
	d := &model.Dataset{Features: features.Count}
	var ya, yh []float32
	x := make([]float32, features.Count)
	for n := range db.Networks() {
		folds[fold(n)].ExtractNetwork(n, x)
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
	m := &model.Model{Version: "raven-test-1", SchemaVersion: features.SchemaVersion, Features: features.Names(), Params: p}
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
			if v.Proxy || v.Risk > 50 && v.Type != raven.TypeHosting || v.Model != "" {
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
	if n := testing.AllocsPerRun(200, func() { e.Examine(a) }); n > 1 {
		t.Fatalf("Examine allocates %v times, want at most 1 (the evidence)", n)
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

// BenchmarkModelEngineReal measures verdicts per second with a real model
// on the real database: STYX_RAVEN_MODEL names the artifact
// (styx-trainer train writes it), the database is the system's.
func BenchmarkModelEngineReal(b *testing.B) {
	path := os.Getenv("STYX_RAVEN_MODEL")
	if path == "" {
		b.Skip("STYX_RAVEN_MODEL not set")
	}
	m, err := model.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		b.Skip(err)
	}
	defer db.Close()
	ex, err := features.NewExtractor(db)
	if err != nil {
		b.Fatal(err)
	}
	e, err := raven.NewModel(m, ex)
	if err != nil {
		b.Fatal(err)
	}
	var addrs []netip.Addr
	k := 0
	for n := range db.Networks() {
		if k++; k%13 == 0 {
			addrs = append(addrs, n.Prefix.Addr())
		}
	}
	for _, name := range []string{"Score", "Examine"} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				a := addrs[i%len(addrs)]
				if name == "Score" {
					e.Score(a)
				} else {
					e.Examine(a)
				}
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verdicts/s")
		})
	}
}
