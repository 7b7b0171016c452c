package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
)

// Params are the learner's hyper-parameters.
type Params struct {
	Trees          int     `json:"trees"`            // boosting rounds per head
	MaxDepth       int     `json:"max_depth"`        // depth of every tree (root = 0)
	LearningRate   float64 `json:"learning_rate"`    // shrinkage of every leaf value
	Lambda         float64 `json:"lambda"`           // L2 regularisation of leaf values
	Gamma          float64 `json:"gamma"`            // smallest loss reduction a split must bring
	MinChildWeight float64 `json:"min_child_weight"` // smallest hessian sum in a child
	MinLeafRows    int     `json:"min_leaf_rows"`    // fewest rows in a child
	Subsample      float64 `json:"subsample"`        // share of rows each tree sees
	ColSample      float64 `json:"colsample"`        // share of features each tree may split on
	MaxBins        int     `json:"max_bins"`         // histogram bins per feature, 2..256
	Seed           uint64  `json:"seed"`
}

// DefaultParams are the values the trainer uses unless told otherwise
// (chosen by measurement: docs/trainer.md).
func DefaultParams() Params {
	return Params{
		Trees: 300, MaxDepth: 4, LearningRate: 0.1, Lambda: 1, Gamma: 0,
		MinChildWeight: 1, MinLeafRows: 20, Subsample: 0.8, ColSample: 0.8,
		MaxBins: 64, Seed: 1,
	}
}

// Validate reports parameters the learner cannot use.
func (p Params) Validate() error {
	switch {
	case p.Trees < 1:
		return errors.New("trees must be at least 1")
	case p.MaxDepth < 1 || p.MaxDepth > 16:
		return errors.New("max depth must be in [1, 16]")
	case !(p.LearningRate > 0 && p.LearningRate <= 1):
		return errors.New("learning rate must be in (0, 1]")
	case p.Lambda < 0 || p.Gamma < 0 || p.MinChildWeight < 0 || p.MinLeafRows < 1:
		return errors.New("lambda, gamma and min child weight must be >= 0, min leaf rows >= 1")
	case !(p.Subsample > 0 && p.Subsample <= 1) || !(p.ColSample > 0 && p.ColSample <= 1):
		return errors.New("subsample and colsample must be in (0, 1]")
	case p.MaxBins < 2 || p.MaxBins > 256:
		return errors.New("max bins must be in [2, 256]")
	}
	return nil
}

// Dataset is a dense row-major feature matrix with per-row weights.
type Dataset struct {
	X        []float32 // Rows × Features
	Features int
	Weight   []float32 // nil means 1 for every row
}

// Rows is the number of rows.
func (d *Dataset) Rows() int {
	if d.Features == 0 {
		return 0
	}
	return len(d.X) / d.Features
}

// Row returns row i.
func (d *Dataset) Row(i int) []float32 { return d.X[i*d.Features : (i+1)*d.Features] }

func (d *Dataset) weight(i int) float64 {
	if d.Weight == nil {
		return 1
	}
	return float64(d.Weight[i])
}

// Binned is a dataset's features cut into histogram bins, column-major:
// bins[f*rows+i] is row i's bin for feature f. Edges[f][b] is the largest
// value of bin b (the last bin, len(Edges[f]), holds everything above).
type Binned struct {
	Edges [][]float32
	bins  []uint8
	rows  int
	nbins int // histogram cells per feature
}

// binSampleRows bounds how many rows the quantiles are computed from.
const binSampleRows = 200_000

// Bin computes quantile edges (at most maxBins bins per feature) from up to
// 200,000 evenly spaced rows and bins every row. It is deterministic.
func Bin(d *Dataset, maxBins int) (*Binned, error) {
	if d.Features <= 0 || len(d.X)%d.Features != 0 {
		return nil, errors.New("model: feature matrix is not rows × features")
	}
	if maxBins < 2 || maxBins > 256 {
		return nil, errors.New("model: max bins must be in [2, 256]")
	}
	n, nf := d.Rows(), d.Features
	step := max(1, n/binSampleRows)
	b := &Binned{Edges: make([][]float32, nf), bins: make([]uint8, n*nf), rows: n, nbins: maxBins}
	vals := make([]float32, 0, min(n, binSampleRows+1))
	for f := range nf {
		vals = vals[:0]
		for i := 0; i < n; i += step {
			v := d.X[i*nf+f]
			if !math.IsNaN(float64(v)) {
				vals = append(vals, v)
			}
		}
		slices.Sort(vals)
		b.Edges[f] = quantileEdges(vals, maxBins)
		edges, col := b.Edges[f], b.bins[f*n:(f+1)*n]
		for i := range n {
			col[i] = binOf(edges, d.X[i*nf+f])
		}
	}
	return b, nil
}

// quantileEdges returns at most maxBins-1 distinct upper edges from sorted
// values: every distinct value when there are few, else quantiles.
func quantileEdges(sorted []float32, maxBins int) []float32 {
	distinct := slices.Compact(slices.Clone(sorted))
	if len(distinct) <= maxBins {
		// One bin per value; the last value needs no edge of its own.
		if len(distinct) > 0 {
			distinct = distinct[:len(distinct)-1]
		}
		return distinct
	}
	var edges []float32
	for k := 1; k < maxBins; k++ {
		v := sorted[(len(sorted)*k)/maxBins]
		if len(edges) == 0 || v > edges[len(edges)-1] {
			edges = append(edges, v)
		}
	}
	if len(edges) > 0 && edges[len(edges)-1] == sorted[len(sorted)-1] {
		edges = edges[:len(edges)-1] // the maximum lives in the last bin
	}
	return edges
}

// binOf returns the bin of v: the first edge >= v, NaN in the last bin.
func binOf(edges []float32, v float32) uint8 {
	if math.IsNaN(float64(v)) {
		return uint8(len(edges))
	}
	i, _ := slices.BinarySearch(edges, v)
	return uint8(i)
}

// Booster grows the trees of one binary head with the logistic loss.
type Booster struct {
	p      Params
	data   *Dataset
	binned *Binned
	y      []float32
	head   uint64 // mixed into the random streams, so heads differ
	base   float64
	raw    []float64 // current raw score of every row
	grad   []float64
	hess   []float64
	trees  []Tree
	procs  int
}

// NewBooster prepares a head over d (binned as b) with labels y (0 or 1).
// head distinguishes the random streams of several heads on one dataset.
func NewBooster(p Params, d *Dataset, b *Binned, y []float32, head int) (*Booster, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	n := d.Rows()
	if len(y) != n || b.rows != n {
		return nil, fmt.Errorf("model: %d rows, %d labels, %d binned rows", n, len(y), b.rows)
	}
	if d.Weight != nil && len(d.Weight) != n {
		return nil, fmt.Errorf("model: %d weights for %d rows", len(d.Weight), n)
	}
	var pos, neg float64
	for i, v := range y {
		switch v {
		case 1:
			pos += d.weight(i)
		case 0:
			neg += d.weight(i)
		default:
			return nil, fmt.Errorf("model: label %v of row %d is not 0 or 1", v, i)
		}
	}
	if pos == 0 || neg == 0 {
		return nil, fmt.Errorf("model: need positive and negative rows (weights %g and %g)", pos, neg)
	}
	bs := &Booster{
		p: p, data: d, binned: b, y: y, head: uint64(head),
		base: math.Log(pos / neg),
		raw:  make([]float64, n), grad: make([]float64, n), hess: make([]float64, n),
		procs: runtime.GOMAXPROCS(0),
	}
	for i := range bs.raw {
		bs.raw[i] = bs.base
	}
	return bs, nil
}

// Base is the head's base score (prior log-odds).
func (bs *Booster) Base() float64 { return bs.base }

// Trees returns the trees grown so far (shared; do not modify).
func (bs *Booster) Trees() []Tree { return bs.trees }

// Replay adds trees grown earlier (a checkpoint) as if this Booster had
// grown them: the next tree is then the one an uninterrupted run grows.
func (bs *Booster) Replay(trees []Tree) error {
	for k, t := range trees {
		if err := t.validate(bs.data.Features); err != nil {
			return fmt.Errorf("model: replay tree %d: %w", k, err)
		}
		for i := range bs.raw {
			bs.raw[i] += float64(t.eval(bs.data.Row(i)))
		}
		bs.trees = append(bs.trees, t)
	}
	return nil
}

// Grow adds one tree. It is deterministic given the parameters, the data
// and the trees so far.
func (bs *Booster) Grow(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	k := uint64(len(bs.trees))
	rng := rand.New(rand.NewPCG(bs.p.Seed, bs.head<<40|k))
	n := len(bs.raw)
	for i := range n {
		p := sigmoid(bs.raw[i])
		w := bs.data.weight(i)
		bs.grad[i] = w * (p - float64(bs.y[i]))
		bs.hess[i] = w * max(p*(1-p), 1e-16)
	}
	rows := make([]int32, 0, int(float64(n)*bs.p.Subsample)+16)
	for i := range n {
		if bs.p.Subsample >= 1 || rng.Float64() < bs.p.Subsample {
			rows = append(rows, int32(i))
		}
	}
	nf := bs.data.Features
	cols := make([]int, 0, nf)
	for f := range nf {
		if bs.p.ColSample >= 1 || rng.Float64() < bs.p.ColSample {
			cols = append(cols, f)
		}
	}
	if len(cols) == 0 {
		cols = append(cols, rng.IntN(nf))
	}
	g := &grower{bs: bs, cols: cols, nbins: bs.binned.nbins}
	t := Tree{}
	g.tree = &t
	h := g.newHist()
	g.histogram(h, rows)
	g.grow(ctx, rows, h, 0)
	if err := ctx.Err(); err != nil {
		return err
	}
	// Apply with the stored float32 leaf values, as Replay does.
	for i := range n {
		bs.raw[i] += float64(t.eval(bs.data.Row(i)))
	}
	bs.trees = append(bs.trees, t)
	return nil
}

// bin is one histogram cell.
type bin struct {
	g, h float64
	n    int64
}

// hist holds a histogram per feature (only the sampled columns are filled).
type hist []bin // features × nbins

type grower struct {
	bs    *Booster
	cols  []int
	nbins int
	tree  *Tree
}

func (g *grower) newHist() hist { return make(hist, g.bs.data.Features*g.nbins) }

// histogram fills h from rows, a feature per task, in parallel over the
// sampled columns when the work is large enough. Each feature is summed in
// row order by one goroutine, so the result does not depend on scheduling.
func (g *grower) histogram(h hist, rows []int32) {
	n := g.bs.binned.rows
	one := func(f int) {
		hf := h[f*g.nbins : (f+1)*g.nbins]
		clear(hf)
		col := g.bs.binned.bins[f*n : (f+1)*n]
		grad, hess := g.bs.grad, g.bs.hess
		for _, r := range rows {
			c := &hf[col[r]]
			c.g += grad[r]
			c.h += hess[r]
			c.n++
		}
	}
	procs := g.bs.procs
	if procs <= 1 || len(rows)*len(g.cols) < 200_000 {
		for _, f := range g.cols {
			one(f)
		}
		return
	}
	var wg sync.WaitGroup
	next := make(chan int, len(g.cols))
	for _, f := range g.cols {
		next <- f
	}
	close(next)
	for range min(procs, len(g.cols)) {
		wg.Go(func() {
			for f := range next {
				one(f)
			}
		})
	}
	wg.Wait()
}

type split struct {
	gain    float64
	feature int
	bin     int
}

func (g *grower) best(h hist) (split, bin) {
	p := g.bs.p
	var tot bin
	f0 := g.cols[0]
	for _, c := range h[f0*g.nbins : (f0+1)*g.nbins] {
		tot.g += c.g
		tot.h += c.h
		tot.n += c.n
	}
	parent := tot.g * tot.g / (tot.h + p.Lambda)
	best := split{gain: p.Gamma, feature: -1}
	for _, f := range g.cols {
		nb := len(g.bs.binned.Edges[f]) // bins 0..nb; a split after bin b < nb
		hf := h[f*g.nbins : (f+1)*g.nbins]
		var l bin
		for b := 0; b < nb; b++ {
			l.g += hf[b].g
			l.h += hf[b].h
			l.n += hf[b].n
			rg, rh, rn := tot.g-l.g, tot.h-l.h, tot.n-l.n
			if l.n < int64(p.MinLeafRows) || l.h < p.MinChildWeight {
				continue
			}
			if rn < int64(p.MinLeafRows) || rh < p.MinChildWeight {
				break
			}
			gain := 0.5 * (l.g*l.g/(l.h+p.Lambda) + rg*rg/(rh+p.Lambda) - parent)
			if gain > best.gain {
				best = split{gain: gain, feature: f, bin: b}
			}
		}
	}
	return best, tot
}

// grow turns the node holding rows (histogram h) into a subtree, appending
// its nodes to the tree in depth-first order. It returns the node's index.
func (g *grower) grow(ctx context.Context, rows []int32, h hist, depth int) int32 {
	t := g.tree
	idx := int32(len(t.Feature))
	s, tot := g.best(h)
	if depth >= g.bs.p.MaxDepth || s.feature < 0 || ctx.Err() != nil {
		v := -tot.g / (tot.h + g.bs.p.Lambda) * g.bs.p.LearningRate
		t.Feature = append(t.Feature, -1)
		t.Threshold = append(t.Threshold, 0)
		t.Left = append(t.Left, 0)
		t.Right = append(t.Right, 0)
		t.Value = append(t.Value, float32(v))
		return idx
	}
	t.Feature = append(t.Feature, int32(s.feature))
	t.Threshold = append(t.Threshold, g.bs.binned.Edges[s.feature][s.bin])
	t.Left = append(t.Left, 0)
	t.Right = append(t.Right, 0)
	t.Value = append(t.Value, 0)

	// Partition rows in place: left (bin <= s.bin) first, order kept.
	n := g.bs.binned.rows
	col := g.bs.binned.bins[s.feature*n : (s.feature+1)*n]
	left := make([]int32, 0, len(rows))
	right := make([]int32, 0, len(rows))
	for _, r := range rows {
		if int(col[r]) <= s.bin {
			left = append(left, r)
		} else {
			right = append(right, r)
		}
	}
	copy(rows, left)
	copy(rows[len(left):], right)
	lr, rr := rows[:len(left)], rows[len(left):]

	// Histogram the smaller child; the larger is the parent minus it.
	small := lr
	if len(rr) < len(lr) {
		small = rr
	}
	hs := g.newHist()
	g.histogram(hs, small)
	for _, f := range g.cols {
		for b := f * g.nbins; b < (f+1)*g.nbins; b++ {
			h[b].g -= hs[b].g
			h[b].h -= hs[b].h
			h[b].n -= hs[b].n
		}
	}
	hl, hr := hs, h
	if len(rr) < len(lr) {
		hl, hr = h, hs
	}
	l := g.grow(ctx, lr, hl, depth+1)
	r := g.grow(ctx, rr, hr, depth+1)
	t.Left[idx], t.Right[idx] = l, r
	return idx
}
