package model_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/model"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name         string
		scores       []float64
		labels       []bool
		thr          float64
		prAUC, roc   float64
		prec, recall float64
	}{
		{"perfect", []float64{0.9, 0.8, 0.2, 0.1}, []bool{true, true, false, false}, 0.5, 1, 1, 1, 1},
		{"inverted", []float64{0.9, 0.8, 0.2, 0.1}, []bool{false, false, true, true}, 0.5, 0.5*(1.0/3) + 0.5*(2.0/4), 0, 0, 0},
		{"all tied", []float64{0.5, 0.5, 0.5, 0.5}, []bool{true, false, false, false}, 0.9, 0.25, 0.5, 0, 0},
		{"mixed", []float64{0.9, 0.7, 0.6, 0.3}, []bool{true, false, true, false}, 0.65, 0.5*1 + 0.5*(2.0/3), 0.75, 0.5, 0.5},
	}
	for _, tc := range tests {
		m := model.Evaluate(tc.scores, tc.labels, tc.thr)
		if math.Abs(m.PRAUC-tc.prAUC) > 1e-9 || math.Abs(m.ROCAUC-tc.roc) > 1e-9 || m.Precision != tc.prec || m.Recall != tc.recall {
			t.Errorf("%s: got PR-AUC %v ROC-AUC %v precision %v recall %v, want %v %v %v %v",
				tc.name, m.PRAUC, m.ROCAUC, m.Precision, m.Recall, tc.prAUC, tc.roc, tc.prec, tc.recall)
		}
	}
	if m := model.Evaluate([]float64{1, 2}, []bool{false, false}, 0.5); m.PRAUC != -1 || m.ROCAUC != -1 {
		t.Errorf("no positives: AUCs %v %v, want -1", m.PRAUC, m.ROCAUC)
	}
}

// synthetic makes rows of features.Count features where the label depends
// on two features non-linearly, plus noise.
func synthetic(n int, seed uint64) (*model.Dataset, []float32) {
	rng := rand.New(rand.NewPCG(seed, 1))
	d := &model.Dataset{Features: features.Count, X: make([]float32, n*features.Count)}
	y := make([]float32, n)
	for i := range n {
		row := d.X[i*features.Count : (i+1)*features.Count]
		for f := range row {
			row[f] = float32(rng.NormFloat64())
		}
		row[5] = float32(rng.IntN(4)) // a categorical feature
		z := 2*float64(row[0]) - 1.5*float64(row[1]*row[1]) + float64(row[5]) - 1
		if rng.Float64() < 1/(1+math.Exp(-3*z)) {
			y[i] = 1
		}
	}
	return d, y
}

func params() model.Params {
	p := model.DefaultParams()
	p.Trees, p.MaxDepth, p.LearningRate, p.MaxBins, p.Seed = 30, 4, 0.2, 32, 7
	return p
}

func grow(t *testing.T, p model.Params, d *model.Dataset, y []float32, trees int, replay []model.Tree) *model.Booster {
	t.Helper()
	b, err := model.Bin(d, p.MaxBins)
	if err != nil {
		t.Fatal(err)
	}
	bs, err := model.NewBooster(p, d, b, y, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := bs.Replay(replay); err != nil {
		t.Fatal(err)
	}
	for len(bs.Trees()) < trees {
		if err := bs.Grow(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	return bs
}

func buildModel(t *testing.T, bs *model.Booster, p model.Params) *model.Model {
	t.Helper()
	m := &model.Model{
		Version: "test-1", SchemaVersion: features.SchemaVersion, Features: features.Names(), Params: p,
		Heads: []model.Head{
			{Name: model.HeadAnonymiser, Base: bs.Base(), Threshold: 0.5, Trees: bs.Trees()},
			{Name: model.HeadHostile, Base: -bs.Base(), Threshold: 0.6, Trees: bs.Trees()[:min(3, len(bs.Trees()))]},
		},
		Provenance: model.Provenance{DBPath: "synthetic", LabelSources: []string{"synthetic"}, Seed: p.Seed},
	}
	if err := m.Compile(); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLearns(t *testing.T) {
	p := params()
	d, y := synthetic(6000, 1)
	bs := grow(t, p, d, y, p.Trees, nil)
	m := buildModel(t, bs, p)
	td, ty := synthetic(3000, 2)
	scores := make([]float64, td.Rows())
	labels := make([]bool, td.Rows())
	for i := range scores {
		scores[i] = m.Probability(0, td.Row(i))
		labels[i] = ty[i] == 1
	}
	ev := model.Evaluate(scores, labels, 0.5)
	if ev.ROCAUC < 0.9 {
		t.Fatalf("held-out ROC-AUC %.3f, want >= 0.9 (%+v)", ev.ROCAUC, ev)
	}
}

// TestReplayIsDeterministic: trees grown after replaying a prefix are
// those an uninterrupted run grows.
func TestReplayIsDeterministic(t *testing.T) {
	p := params()
	p.Trees = 12
	d, y := synthetic(3000, 3)
	full := grow(t, p, d, y, 12, nil)
	half := grow(t, p, d, y, 5, nil)
	resumed := grow(t, p, d, y, 12, half.Trees())
	if !reflect.DeepEqual(full.Trees(), resumed.Trees()) {
		t.Fatal("resumed trees differ from uninterrupted ones")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := full.Grow(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Grow on a cancelled context: %v", err)
	}
}

func TestArtifactRoundTripAndTamper(t *testing.T) {
	p := params()
	d, y := synthetic(2000, 4)
	m := buildModel(t, grow(t, p, d, y, 10, nil), p)
	path := filepath.Join(t.TempDir(), "model.json")
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
	got, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.SHA256() != m.SHA256() || got.Version != "test-1" || len(got.Heads) != 2 {
		t.Fatalf("loaded %s %s, saved %s", got.Version, got.SHA256(), m.SHA256())
	}
	for i := range 50 {
		for h := range 2 {
			if a, b := m.Probability(h, d.Row(i)), got.Probability(h, d.Row(i)); a != b {
				t.Fatalf("row %d head %d: %v after the round trip, %v before", i, h, b, a)
			}
		}
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Tamper with a leaf value inside the payload.
	i := bytes.Index(raw, []byte(`"value":[`))
	if i < 0 {
		t.Fatal("no leaf values in the artifact")
	}
	j := i + len(`"value":[`)
	tampered := append([]byte(nil), raw...)
	tampered = append(tampered[:j], append([]byte("9"), tampered[j:]...)...)
	if _, err := model.Decode(bytes.NewReader(tampered)); !errors.Is(err, model.ErrChecksum) {
		t.Fatalf("tampered payload: %v, want a checksum error", err)
	}
	// A model whose schema is not this build's is refused.
	m2 := buildModel(t, grow(t, p, d, y, 2, nil), p)
	m2.SchemaVersion = features.SchemaVersion + 1
	var buf bytes.Buffer
	if err := m2.Encode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := model.Decode(&buf); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Fatalf("foreign schema: %v", err)
	}
	if _, err := model.Decode(strings.NewReader(`{"format":"other"}`)); err == nil {
		t.Fatal("a foreign file was accepted")
	}
}

func TestProbabilityDoesNotAllocate(t *testing.T) {
	p := params()
	d, y := synthetic(2000, 5)
	m := buildModel(t, grow(t, p, d, y, 20, nil), p)
	x := d.Row(3)
	if a := testing.AllocsPerRun(100, func() { m.Probability(0, x); m.Probability(1, x) }); a != 0 {
		t.Fatalf("Probability allocates %v times", a)
	}
}

func BenchmarkProbability(b *testing.B) {
	p := model.DefaultParams()
	d, y := synthetic(20000, 6)
	bin, _ := model.Bin(d, p.MaxBins)
	bs, err := model.NewBooster(p, d, bin, y, 0)
	if err != nil {
		b.Fatal(err)
	}
	for range p.Trees {
		if err := bs.Grow(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	m := &model.Model{Version: "bench", SchemaVersion: features.SchemaVersion, Features: features.Names(),
		Heads: []model.Head{{Name: "h", Base: bs.Base(), Threshold: 0.5, Trees: bs.Trees()}}}
	if err := m.Compile(); err != nil {
		b.Fatal(err)
	}
	x := d.Row(7)
	b.ReportAllocs()
	for b.Loop() {
		m.Probability(0, x)
	}
}
