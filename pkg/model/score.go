package model

import (
	"cmp"
	"encoding/binary"
	"math"
	"slices"
	"sync"
	"unsafe"
)

// scorer is a model's heads laid out for fast scoring. Scoring x takes two
// steps.
//
// First, x is compared with every distinct threshold of the model at once.
// For each feature that some node tests, a branch-free binary search over
// the feature's sorted thresholds counts those below x[f], and the
// comparison map gets, for the feature's thresholds in ascending order, that
// many 1s (x goes right of them) and then 0s. NaN goes right of every
// threshold. A node is the index of its (feature, threshold) in the map.
//
// Second, every tree, padded into a complete binary tree of its head's
// depth (a leaf above the bottom is copied into every slot under it, behind
// nodes that read the map's constant 0), is walked with i = 2i+1+map[node]:
// two bytes a node, two loads a level, no data-dependent branch. Depth 4,
// the trainer's default, is unrolled, with both heads in one loop.
//
// The leaves are added to the head's base in tree order in float64, as
// walking the trees does, so the scores are bit-identical to Tree's
// (TestScorerMatchesTrees; pkg/raven checks the real model too).
type scorer struct {
	feats   []binFeature // by span, then feature
	edges   []float32    // span a feature: its distinct thresholds ascending, then +Inf
	ones    int          // pattern[ones-k:] is k 1s followed by 0s
	pattern []uint8
	heads   []flatHead
	walked  bool      // too many thresholds for the map: the trees are walked as they are
	maps    sync.Pool // *cmpMap
}

// binFeature is one feature some node tests and its slots in the map.
type binFeature struct {
	f    int32 // feature index
	off  int32 // slot of its smallest threshold
	n    int32 // distinct thresholds
	edge int32 // its first threshold in edges
	span int32 // a power of two above n: the search takes log2(span) steps
}

// The comparison map. Slots 0 and 1 hold constants; fill writes a
// feature's slots through a 64-byte window, so the slots in use stay 64
// below the map's size.
const (
	slotLeft  = 0 // always 0: padding nodes
	slotRight = 1 // always 1: a NaN threshold (x <= NaN is false)
	firstSlot = 2
	mapSize   = 1 << 16 // a uint16 node indexes it without a bounds check
)

// cmpMap is the comparison map of one vector: 1 where x is right of the
// slot's threshold.
type cmpMap [mapSize]uint8

// flatHead is one head's padded trees.
type flatHead struct {
	base   float64
	depth  int
	trees  int
	nodes  []uint16  // 1<<depth a tree: map slots of the inner nodes breadth first, then one unused
	leaves []float32 // 1<<depth a tree
	by4    []tree4   // the same trees when depth is 4
	plain  []Tree    // set when the model has too many thresholds for the map: walked as they are
}

// tree4 is a tree of depth 4 in one piece (96 bytes), so that walking a
// head's trees is a range loop without a bounds check.
type tree4 struct {
	nodes  [16]uint16
	leaves [16]float32
}

func newScorer(heads []Head, numFeatures int) *scorer {
	s := &scorer{heads: make([]flatHead, len(heads))}
	s.maps.New = func() any {
		m := new(cmpMap)
		m[slotRight] = 1
		return m
	}

	// Distinct thresholds of each feature.
	thr := make([][]float32, numFeatures)
	for _, h := range heads {
		for _, t := range h.Trees {
			for i, f := range t.Feature {
				if f >= 0 && !math.IsNaN(float64(t.Threshold[i])) {
					thr[f] = append(thr[f], t.Threshold[i])
				}
			}
		}
	}
	most := 0
	for f := range thr {
		if len(thr[f]) == 0 {
			continue
		}
		slices.Sort(thr[f])
		thr[f] = slices.Compact(thr[f]) // -0 and +0 are one threshold, as for <=
		span := 2
		for span <= len(thr[f]) {
			span *= 2
		}
		s.feats = append(s.feats, binFeature{f: int32(f), n: int32(len(thr[f])), span: int32(span)})
		most = max(most, len(thr[f]))
	}
	// Features of one span in a row, so that fill's switches jump the same
	// way for features in a row: the jumps are predicted.
	slices.SortStableFunc(s.feats, func(a, b binFeature) int { return cmp.Compare(a.span, b.span) })
	slots := firstSlot
	for i := range s.feats {
		bf := &s.feats[i]
		bf.off, bf.edge = int32(slots), int32(len(s.edges))
		slots += int(bf.n)
		s.edges = append(s.edges, thr[bf.f]...)
		for range bf.span - bf.n {
			s.edges = append(s.edges, float32(math.Inf(1)))
		}
	}
	s.edges = append(s.edges, make([]float32, 64)...) // fill reads 64 from a feature's first
	if slots+64 > mapSize {
		for i, h := range heads {
			s.heads[i] = flatHead{base: h.Base, plain: h.Trees}
		}
		s.feats, s.edges, s.walked = nil, nil, true
		return s
	}
	s.ones = most
	s.pattern = make([]uint8, 2*most+64)
	for i := range most {
		s.pattern[i] = 1
	}

	slot := func(f int32, t float32) uint16 {
		if math.IsNaN(float64(t)) {
			return slotRight
		}
		k, _ := slices.BinarySearch(thr[f], t)
		for _, bf := range s.feats {
			if bf.f == f {
				return uint16(int(bf.off) + k)
			}
		}
		panic("model: threshold of a feature without thresholds")
	}
	for hi, h := range heads {
		d := 0
		for k := range h.Trees {
			d = max(d, depthOf(&h.Trees[k], 0))
		}
		w := 1 << d
		fh := flatHead{base: h.Base, depth: d, trees: len(h.Trees),
			nodes: make([]uint16, w*len(h.Trees)), leaves: make([]float32, w*len(h.Trees))}
		for k := range h.Trees {
			t := &h.Trees[k]
			nodes, leaves := fh.nodes[k*w:(k+1)*w], fh.leaves[k*w:(k+1)*w]
			var fill func(src int32, at, level int)
			fill = func(src int32, at, level int) {
				if level == d {
					leaves[at-(w-1)] = t.Value[src]
					return
				}
				if t.Feature[src] < 0 { // a leaf above the bottom: the same value on both sides
					nodes[at] = slotLeft
					fill(src, 2*at+1, level+1)
					fill(src, 2*at+2, level+1)
					return
				}
				nodes[at] = slot(t.Feature[src], t.Threshold[src])
				fill(t.Left[src], 2*at+1, level+1)
				fill(t.Right[src], 2*at+2, level+1)
			}
			fill(0, 0, 0)
		}
		if d == 4 {
			fh.by4 = make([]tree4, len(h.Trees))
			for k := range fh.by4 {
				copy(fh.by4[k].nodes[:], fh.nodes[16*k:])
				copy(fh.by4[k].leaves[:], fh.leaves[16*k:])
			}
			fh.nodes, fh.leaves = nil, nil
		}
		s.heads[hi] = fh
	}
	return s
}

// depthOf is the depth of the subtree at node i (a leaf has depth 0).
func depthOf(t *Tree, i int32) int {
	if t.Feature[i] < 0 {
		return 0
	}
	return 1 + max(depthOf(t, t.Left[i]), depthOf(t, t.Right[i]))
}

// raw returns head's raw score for x. It does not allocate (but for a new
// map after a garbage collection emptied the pool).
func (s *scorer) raw(head int, x []float32) float64 {
	if s.walked {
		return s.heads[head].walk(x)
	}
	m := s.maps.Get().(*cmpMap)
	s.fill(x, m)
	r := s.heads[head].raw(m)
	s.maps.Put(m)
	return r
}

// raw2 returns the raw scores of heads a and b, comparing x once.
func (s *scorer) raw2(a, b int, x []float32) (float64, float64) {
	if s.walked {
		return s.heads[a].walk(x), s.heads[b].walk(x)
	}
	m := s.maps.Get().(*cmpMap)
	s.fill(x, m)
	ha, hb := &s.heads[a], &s.heads[b]
	var ra, rb float64
	if ha.depth == 4 && hb.depth == 4 {
		// Both heads in one loop: twice the independent work for the
		// processor to overlap, half the loop overhead.
		n := min(len(ha.by4), len(hb.by4))
		ra, rb = raw4pair(ha.by4[:n], hb.by4[:n], m.bools(), ha.base, hb.base)
		ra, rb = raw4(ha.by4[n:], m.bools(), ra), raw4(hb.by4[n:], m.bools(), rb)
	} else {
		ra, rb = ha.raw(m), hb.raw(m)
	}
	s.maps.Put(m)
	return ra, rb
}

// fill writes x's comparison with every threshold to m. A feature's
// search takes log2(span) steps, a conditional move each, and its slots
// are copied from pattern in 8-byte words, spilling up to 7 bytes into the
// next feature's (written after it) or past the last. The switches jump
// into unrolled code; as the features come by span, the jumps are
// predicted.
func (s *scorer) fill(x []float32, m *cmpMap) {
	edges, pat, ones := s.edges, s.pattern, s.ones
	for _, bf := range s.feats {
		v := x[bf.f]
		k := 0 // thresholds below v: e[k-1] < v <= e[k]
		if bf.span <= 64 {
			e := (*[64]float32)(edges[bf.edge:]) // edges has 64 spare entries at its end
			switch bf.span {
			case 64:
				k += 32 * b2i(e[31] < v)
				fallthrough
			case 32:
				k += 16 * b2i(e[(k+15)&63] < v)
				fallthrough
			case 16:
				k += 8 * b2i(e[(k+7)&63] < v)
				fallthrough
			case 8:
				k += 4 * b2i(e[(k+3)&63] < v)
				fallthrough
			case 4:
				k += 2 * b2i(e[(k+1)&63] < v)
				fallthrough
			default:
				k += b2i(e[k&63] < v)
			}
		} else {
			e := edges[bf.edge : bf.edge+bf.span]
			for step := int(bf.span) >> 1; step > 0; step >>= 1 {
				k += step * b2i(e[k+step-1] < v)
			}
		}
		if v != v {
			k = int(bf.n)
		}
		src, dst := pat[ones-k:], m[bf.off:]
		if bf.n > 64 {
			for j := 0; j < int(bf.n); j += 8 {
				binary.LittleEndian.PutUint64(dst[j:], binary.LittleEndian.Uint64(src[j:]))
			}
			continue
		}
		d, p := (*[64]uint8)(dst), (*[64]uint8)(src) // the map and pattern have 64 spare bytes
		switch (bf.n + 7) / 8 {
		case 8:
			binary.LittleEndian.PutUint64(d[56:], binary.LittleEndian.Uint64(p[56:]))
			fallthrough
		case 7:
			binary.LittleEndian.PutUint64(d[48:], binary.LittleEndian.Uint64(p[48:]))
			fallthrough
		case 6:
			binary.LittleEndian.PutUint64(d[40:], binary.LittleEndian.Uint64(p[40:]))
			fallthrough
		case 5:
			binary.LittleEndian.PutUint64(d[32:], binary.LittleEndian.Uint64(p[32:]))
			fallthrough
		case 4:
			binary.LittleEndian.PutUint64(d[24:], binary.LittleEndian.Uint64(p[24:]))
			fallthrough
		case 3:
			binary.LittleEndian.PutUint64(d[16:], binary.LittleEndian.Uint64(p[16:]))
			fallthrough
		case 2:
			binary.LittleEndian.PutUint64(d[8:], binary.LittleEndian.Uint64(p[8:]))
			fallthrough
		default:
			binary.LittleEndian.PutUint64(d[0:], binary.LittleEndian.Uint64(p[0:]))
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// raw walks every tree over the comparison map m.
func (h *flatHead) raw(m *cmpMap) float64 {
	if h.depth == 4 {
		return raw4(h.by4, m.bools(), h.base)
	}
	s := h.base
	w := 1 << h.depth
	for t := range h.trees {
		nodes, leaves := h.nodes[t*w:(t+1)*w], h.leaves[t*w:(t+1)*w]
		i := 0
		for range h.depth {
			i = 2*i + 1 + int(m[nodes[i]])
		}
		s += float64(leaves[i-(w-1)])
	}
	return s
}

// bools is m as the walk reads it. Every byte of m is 0 or 1 (the slots
// are copied from pattern, the constants set once), the bytes of false
// and true, and the compiler knows a bool converted to int is 0 or 1: it
// then proves the walk's indexes inside the tree and checks none.
func (m *cmpMap) bools() *[mapSize]bool {
	return (*[mapSize]bool)(unsafe.Pointer(m))
}

// raw4 adds to s the values of trees of depth 4 (the trainer's default),
// unrolled. p is the position inside a level; level l starts at node
// 2^l-1.
func raw4(trees []tree4, m *[mapSize]bool, s float64) float64 {
	for i := range trees {
		t := &trees[i]
		p := b2i(m[t.nodes[0]])
		p = 2*p + b2i(m[t.nodes[1+p]])
		p = 2*p + b2i(m[t.nodes[3+p]])
		p = 2*p + b2i(m[t.nodes[7+p]])
		s += float64(t.leaves[p])
	}
	return s
}

// raw4pair is raw4 over two heads' trees at once (len(a) == len(b)).
func raw4pair(a, b []tree4, m *[mapSize]bool, sa, sb float64) (float64, float64) {
	b = b[:len(a)]
	for i := range a {
		t, u := &a[i], &b[i]
		p, q := b2i(m[t.nodes[0]]), b2i(m[u.nodes[0]])
		p, q = 2*p+b2i(m[t.nodes[1+p]]), 2*q+b2i(m[u.nodes[1+q]])
		p, q = 2*p+b2i(m[t.nodes[3+p]]), 2*q+b2i(m[u.nodes[3+q]])
		p, q = 2*p+b2i(m[t.nodes[7+p]]), 2*q+b2i(m[u.nodes[7+q]])
		sa += float64(t.leaves[p])
		sb += float64(u.leaves[q])
	}
	return sa, sb
}

// walk scores x by walking the trees as they are.
func (h *flatHead) walk(x []float32) float64 {
	s := h.base
	for k := range h.plain {
		s += float64(h.plain[k].eval(x))
	}
	return s
}
