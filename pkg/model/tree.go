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

// eval is the value one tree adds for x: the plain walk, which the
// scorer (score.go) must match bit for bit.
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
