package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// special are the values where a comparison is easy to get wrong.
var special = []float32{float32(math.Copysign(0, -1)), 0, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), -1, 1, 0.5}

// randomTree grows a random tree of at most depth levels over nf
// features, with thresholds from pool (so that trees share them).
func randomTree(rng *rand.Rand, depth, nf int, pool []float32) Tree {
	var t Tree
	var grow func(level int) int32
	grow = func(level int) int32 {
		i := int32(len(t.Feature))
		t.Feature = append(t.Feature, -1)
		t.Threshold = append(t.Threshold, 0)
		t.Left = append(t.Left, 0)
		t.Right = append(t.Right, 0)
		t.Value = append(t.Value, float32(rng.NormFloat64()))
		if level == depth || (level > 0 && rng.IntN(4) == 0) {
			return i
		}
		t.Feature[i] = int32(rng.IntN(nf))
		t.Threshold[i] = pool[rng.IntN(len(pool))]
		l := grow(level + 1)
		r := grow(level + 1)
		t.Left[i], t.Right[i] = l, r
		return i
	}
	grow(0)
	return t
}

// randomX draws a vector whose values often equal thresholds.
func randomX(rng *rand.Rand, nf int, pool []float32) []float32 {
	x := make([]float32, nf)
	for f := range x {
		switch rng.IntN(3) {
		case 0:
			x[f] = pool[rng.IntN(len(pool))]
		case 1:
			x[f] = special[rng.IntN(len(special))]
		default:
			x[f] = float32(rng.NormFloat64())
		}
	}
	return x
}

// TestScorerMatchesTrees: the scorer's layout scores exactly as walking
// the trees does (the same float64 sums, bit for bit), for uniform depth 4
// (the unrolled kernel), mixed depths, single leaves and shared, special
// and repeated thresholds; NaN included on both sides.
func TestScorerMatchesTrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const nf = 9
	pool := append([]float32(nil), special...)
	for range 40 {
		pool = append(pool, float32(rng.NormFloat64()))
	}
	tests := []struct {
		name  string
		depth func() int
		trees int
	}{
		{"depth 4", func() int { return 4 }, 300},
		{"mixed depths", func() int { return rng.IntN(7) }, 200},
		{"single leaves", func() int { return 0 }, 5},
		{"depth 1", func() int { return 1 }, 50},
	}
	for _, tc := range tests {
		heads := make([]Head, 3)
		for h := range heads {
			heads[h] = Head{Name: string(rune('a' + h)), Base: rng.NormFloat64() * 3}
			for range tc.trees + h {
				heads[h].Trees = append(heads[h].Trees, randomTree(rng, tc.depth(), nf, pool))
			}
			for k := range heads[h].Trees {
				if err := heads[h].Trees[k].validate(nf); err != nil {
					t.Fatalf("%s: generated tree: %v", tc.name, err)
				}
			}
		}
		s := newScorer(heads, nf)
		if s.walked {
			t.Fatalf("%s: the trees are walked, not laid out", tc.name)
		}
		checkScorer(t, tc.name, s, heads, rng, nf, pool)
	}
}

// TestScorerManyThresholds: a model with more distinct thresholds than the
// comparison map holds is walked as it is, with the same scores.
func TestScorerManyThresholds(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const nf = 4
	h := Head{Name: "big", Base: 0.5}
	var pool []float32
	for i := range mapSize {
		th := float32(i) / 7
		pool = append(pool, th)
		h.Trees = append(h.Trees, Tree{
			Feature: []int32{int32(i % nf), -1, -1}, Threshold: []float32{th, 0, 0},
			Left: []int32{1, 0, 0}, Right: []int32{2, 0, 0}, Value: []float32{0, float32(rng.NormFloat64()), float32(rng.NormFloat64())},
		})
	}
	heads := []Head{h, {Name: "small", Base: -1, Trees: h.Trees[:10]}}
	s := newScorer(heads, nf)
	if !s.walked {
		t.Fatal("a model with 65,536 thresholds got the flat layout")
	}
	checkScorer(t, "many thresholds", s, heads, rng, nf, pool)
}

func checkScorer(t *testing.T, name string, s *scorer, heads []Head, rng *rand.Rand, nf int, pool []float32) {
	t.Helper()
	for range 300 {
		x := randomX(rng, nf, pool)
		want := make([]float64, len(heads))
		for h := range heads {
			want[h] = heads[h].Base
			for k := range heads[h].Trees {
				want[h] += float64(heads[h].Trees[k].eval(x))
			}
			if got := s.raw(h, x); math.Float64bits(got) != math.Float64bits(want[h]) {
				t.Fatalf("%s: head %d, x %v: scorer %v, trees %v", name, h, x, got, want[h])
			}
		}
		a, b := s.raw2(0, len(heads)-1, x)
		if math.Float64bits(a) != math.Float64bits(want[0]) || math.Float64bits(b) != math.Float64bits(want[len(heads)-1]) {
			t.Fatalf("%s: x %v: raw2 %v %v, want %v %v", name, x, a, b, want[0], want[len(heads)-1])
		}
	}
}

// TestFillCounts: fill's map says, for every threshold of every feature,
// whether x goes right of it, for features of every span (the unrolled
// searches and copies, and the loops past 64 thresholds) side by side, so
// that one feature's spill is overwritten by the next.
func TestFillCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	counts := []int{1, 2, 3, 4, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 127, 128, 255, 256, 300}
	var trees []Tree
	pools := make([][]float32, len(counts))
	for f, n := range counts {
		for i := range n {
			th := float32(i) - float32(n)/2
			pools[f] = append(pools[f], th)
			trees = append(trees, Tree{Feature: []int32{int32(f), -1, -1}, Threshold: []float32{th, 0, 0},
				Left: []int32{1, 0, 0}, Right: []int32{2, 0, 0}, Value: []float32{0, 0, 1}})
		}
	}
	s := newScorer([]Head{{Name: "h", Trees: trees}}, len(counts))
	m := s.maps.Get().(*cmpMap)
	x := make([]float32, len(counts))
	for range 300 {
		for f, pool := range pools {
			x[f] = pool[rng.IntN(len(pool))] + float32(rng.IntN(3)-1)*0.5
			if rng.IntN(20) == 0 {
				x[f] = float32(math.NaN())
			}
		}
		s.fill(x, m)
		for _, bf := range s.feats {
			for i, th := range pools[bf.f] {
				if want := b2i(!(x[bf.f] <= th)); int(m[int(bf.off)+i]) != want {
					t.Fatalf("feature of %d thresholds, x %v: slot of %v is %d, want %d", bf.n, x[bf.f], th, m[int(bf.off)+i], want)
				}
			}
		}
		if m[slotLeft] != 0 || m[slotRight] != 1 {
			t.Fatalf("constant slots overwritten: %d %d", m[slotLeft], m[slotRight])
		}
	}
}
