package model

import (
	"errors"
	"fmt"
	"math"
)

// Tree is one regression tree in parallel arrays (compact in JSON). Node 0
// is the root. An inner node sends x to Left[i] when x[Feature[i]] <=
// Threshold[i] (false for NaN) and to Right[i] otherwise; a leaf has
// Feature[i] == -1 and adds Value[i] to the raw score.
type Tree struct {
	Feature   []int32   `json:"feature"`
	Threshold []float32 `json:"threshold"`
	Left      []int32   `json:"left"`
	Right     []int32   `json:"right"`
	Value     []float32 `json:"value"`
}

// Len is the number of nodes.
func (t *Tree) Len() int { return len(t.Feature) }

// validate checks that the arrays agree, children point forward inside the
// tree (so evaluation always ends), and features are in range.
func (t *Tree) validate(numFeatures int) error {
	n := len(t.Feature)
	if n == 0 {
		return errors.New("empty tree")
	}
	if len(t.Threshold) != n || len(t.Left) != n || len(t.Right) != n || len(t.Value) != n {
		return errors.New("node arrays of different lengths")
	}
	for i := range n {
		f := t.Feature[i]
		if f == -1 {
			if math.IsNaN(float64(t.Value[i])) || math.IsInf(float64(t.Value[i]), 0) {
				return fmt.Errorf("node %d: leaf value %v", i, t.Value[i])
			}
			continue
		}
		if f < 0 || int(f) >= numFeatures {
			return fmt.Errorf("node %d: feature %d out of range [0, %d)", i, f, numFeatures)
		}
		if l, r := t.Left[i], t.Right[i]; l <= int32(i) || r <= int32(i) || int(l) >= n || int(r) >= n {
			return fmt.Errorf("node %d: children %d, %d not after it inside the tree", i, l, r)
		}
	}
	return nil
}

// compiled is a head's trees laid out for fast scoring: each tree is
// padded into a complete binary tree of its own depth (a leaf above the
// bottom is copied into every slot under it, behind nodes that send
// everything left), so scoring walks exactly depth levels per tree with no
// data-dependent branch: i = 2i+1+(x[f] > t). Branch mispredictions, not
// memory, bound naive tree walking; this removes them.
type compiled struct {
	base  float64
	trees []ctree
	feat  []int32   // inner nodes of every tree, concatenated
	thr   []float32 // their thresholds
	leaf  []float32 // leaf values of every tree, concatenated
}

type ctree struct {
	depth      int32
	inner, lfs int32 // offsets into feat/thr and leaf
}

func compile(base float64, trees []Tree) compiled {
	c := compiled{base: base}
	for _, t := range trees {
		d := depthOf(&t, 0)
		ct := ctree{depth: int32(d), inner: int32(len(c.feat)), lfs: int32(len(c.leaf))}
		nIn, nLeaf := (1<<d)-1, 1<<d
		feat := make([]int32, nIn)
		thr := make([]float32, nIn)
		leaf := make([]float32, nLeaf)
		var fill func(src int32, slot, level int)
		fill = func(src int32, slot, level int) {
			if level == d {
				leaf[slot-nIn] = t.Value[src]
				return
			}
			if t.Feature[src] < 0 { // a leaf above the bottom: pass everything left... and right
				feat[slot], thr[slot] = 0, float32(math.Inf(1))
				fill(src, 2*slot+1, level+1)
				fill(src, 2*slot+2, level+1)
				return
			}
			feat[slot], thr[slot] = t.Feature[src], t.Threshold[src]
			fill(t.Left[src], 2*slot+1, level+1)
			fill(t.Right[src], 2*slot+2, level+1)
		}
		fill(0, 0, 0)
		c.feat = append(c.feat, feat...)
		c.thr = append(c.thr, thr...)
		c.leaf = append(c.leaf, leaf...)
		c.trees = append(c.trees, ct)
	}
	return c
}

// depthOf is the depth of the subtree at node i (a leaf has depth 0).
func depthOf(t *Tree, i int32) int {
	if t.Feature[i] < 0 {
		return 0
	}
	return 1 + max(depthOf(t, t.Left[i]), depthOf(t, t.Right[i]))
}

// raw returns the raw score (log-odds) of x. It does not allocate.
func (c *compiled) raw(x []float32) float64 {
	s := c.base
	feat, thr, leaf := c.feat, c.thr, c.leaf
	for _, t := range c.trees {
		f, th := feat[t.inner:], thr[t.inner:]
		i := 0
		for range t.depth {
			// Right when !(x <= t), NaN included, as in Tree.
			b := 0
			if !(x[f[i]] <= th[i]) {
				b = 1
			}
			i = 2*i + 1 + b
		}
		s += float64(leaf[int(t.lfs)+i-(1<<t.depth-1)])
	}
	return s
}

// treeRaw is the value one tree adds for x.
func (t *Tree) eval(x []float32) float32 {
	i := int32(0)
	for t.Feature[i] >= 0 {
		if x[t.Feature[i]] <= t.Threshold[i] {
			i = t.Left[i]
		} else {
			i = t.Right[i]
		}
	}
	return t.Value[i]
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}
