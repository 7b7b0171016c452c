package trainer

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/trainer/internal/labels"
)

// Split names a part of the examples.
type Split uint8

// The splits.
const (
	SplitTrain Split = iota
	SplitValidation
	SplitHoldout
)

func (s Split) String() string {
	switch s {
	case SplitValidation:
		return "validation"
	case SplitHoldout:
		return "holdout"
	}
	return "train"
}

// Set is the examples of one split: features, labels and weights.
type Set struct {
	Data    model.Dataset
	Anon    []bool // labelled anonymiser
	Hostile []bool // labelled hostile
	Groups  map[uint64]struct{}
}

func (s *Set) add(x []float32, anon, hostile bool, w float32, group uint64) {
	s.Data.X = append(s.Data.X, x...)
	s.Anon = append(s.Anon, anon)
	s.Hostile = append(s.Hostile, hostile)
	s.Data.Weight = append(s.Data.Weight, w)
	s.Groups[group] = struct{}{}
}

// Rows is the number of examples.
func (s *Set) Rows() int { return len(s.Anon) }

// Examples is every split.
type Examples struct {
	Sets       [3]Set
	Negatives  int // training negatives seen before sampling
	Sampled    int // training negatives kept
	FileLabels int // examples from the label file
}

// splitter assigns whole groups (ASes; for networks without an ASN, their
// IPv4 /16 or IPv6 /32) to splits by a seeded hash, or by a list of
// held-out ASNs.
type splitter struct {
	seed       uint64
	holdout    float64
	validation float64
	holdoutAS  map[uint32]bool // nil: by hash
}

// group is the split unit of a network.
func group(n locdb.Network) uint64 {
	if n.ASN != 0 {
		return uint64(n.ASN)
	}
	a := n.Prefix.Masked().Addr()
	if a.Is4() {
		b := a.As4()
		return 1<<40 | uint64(binary.BigEndian.Uint16(b[:2]))
	}
	b := a.As16()
	return 2<<40 | uint64(binary.BigEndian.Uint32(b[:4]))
}

func (s *splitter) split(n locdb.Network) Split {
	g := group(n)
	if s.holdoutAS != nil {
		if n.ASN != 0 && s.holdoutAS[n.ASN] {
			return SplitHoldout
		}
		if mix(s.seed, 2, g) < s.validation {
			return SplitValidation
		}
		return SplitTrain
	}
	u := mix(s.seed, 1, g)
	switch {
	case u < s.holdout:
		return SplitHoldout
	case u < s.holdout+s.validation:
		return SplitValidation
	}
	return SplitTrain
}

// mix maps (seed, salt, key) to [0, 1) with splitmix64: deterministic
// across processes and machines.
func mix(seed, salt, key uint64) float64 {
	z := seed*0x9e3779b97f4a7c15 ^ salt*0xbf58476d1ce4e5b9 ^ key
	for range 2 {
		z += 0x9e3779b97f4a7c15
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
	}
	return float64(z>>11) / (1 << 53)
}

func prefixKey(p netip.Prefix) uint64 {
	a := p.Addr().As16()
	return binary.BigEndian.Uint64(a[:8]) ^ binary.BigEndian.Uint64(a[8:])*31 ^ uint64(p.Bits())<<56
}

// foldOf is the out-of-fold statistics fold of a network.
func foldOf(seed uint64, folds int, n locdb.Network) int {
	return min(folds-1, int(mix(seed, 4, prefixKey(n.Prefix))*float64(folds)))
}

// buildExamples extracts the features of every database network (when
// dbLabels) and every label-file entry, and splits them. Training examples
// take their features from the fold extractor of their fold (when there
// are folds), the others from ex, as a live address would. For schema 2,
// the history block comes from hist (nil: zeros), leaving each example's
// own verdicts out.
func buildExamples(ctx context.Context, db *locdb.DB, ex *features.Extractor, folds []*features.Extractor, cfg Config, file []labels.Entry, sp *splitter, hist *trainHistory) (*Examples, error) {
	extractor := func(s Split, n locdb.Network) *features.Extractor {
		if s != SplitTrain || len(folds) == 0 {
			return ex
		}
		return folds[foldOf(cfg.Seed, len(folds), n)]
	}
	e := &Examples{}
	for i := range e.Sets {
		e.Sets[i].Data.Features = features.NumFeaturesOf(cfg.Schema)
		e.Sets[i].Groups = map[uint64]struct{}{}
	}
	withHistory := cfg.Schema == features.SchemaHistory
	x := make([]float32, features.NumFeaturesOf(cfg.Schema))
	if cfg.DBLabels {
		k := 0
		for n := range db.Networks() {
			if k++; k%65536 == 0 && ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s := sp.split(n)
			anon, hostile := n.Flags.AnonymousProxy(), n.Flags.Drop()
			w := float32(1)
			if s == SplitTrain && !anon && !hostile {
				e.Negatives++
				if mix(cfg.Seed, 3, prefixKey(n.Prefix)) >= cfg.NegativeRate {
					continue
				}
				e.Sampled++
				w = float32(1 / cfg.NegativeRate)
			}
			extractor(s, n).ExtractNetwork(n, x)
			if withHistory {
				hist.writeNetwork(n, x)
			}
			e.Sets[s].add(x, anon, hostile, w, group(n))
		}
	}
	for _, en := range file {
		n, ok := db.Lookup(en.Addr())
		if !ok {
			continue // no network: nothing to learn from
		}
		s := sp.split(n)
		extractor(s, n).ExtractNetwork(n, x)
		if withHistory {
			hist.writeAddr(en.Addr(), n.ASN, x)
		}
		e.Sets[s].add(x, en.Label == labels.Anonymiser, en.Label == labels.Hostile, 1, group(n))
		e.FileLabels++
	}
	for i, s := range e.Sets {
		if Split(i) != SplitValidation && s.Rows() == 0 {
			return nil, fmt.Errorf("the %s split is empty", Split(i))
		}
	}
	return e, nil
}
