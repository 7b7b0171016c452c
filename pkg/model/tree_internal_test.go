package model

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestCompiledMatchesTrees: the padded, branch-free layout scores exactly
// as walking the trees does, NaN included.
func TestCompiledMatchesTrees(t *testing.T) {
	trees := []Tree{
		{Feature: []int32{-1}, Threshold: []float32{0}, Left: []int32{0}, Right: []int32{0}, Value: []float32{0.5}},
		{ // root splits on f0; left is a leaf, right splits on f1
			Feature: []int32{0, -1, 1, -1, -1}, Threshold: []float32{0.5, 0, -1, 0, 0},
			Left: []int32{1, 0, 3, 0, 0}, Right: []int32{2, 0, 4, 0, 0}, Value: []float32{0, 1, 0, 2, 3},
		},
	}
	c := compile(0.25, trees)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 1000 {
		x := []float32{float32(rng.NormFloat64()), float32(rng.NormFloat64())}
		if i%10 == 0 {
			x[rng.IntN(2)] = float32(math.NaN())
		}
		want := 0.25
		for k := range trees {
			want += float64(trees[k].eval(x))
		}
		if got := c.raw(x); got != want {
			t.Fatalf("x %v: compiled %v, trees %v", x, got, want)
		}
	}
}
