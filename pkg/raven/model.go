package raven

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/verdict"
)

// Scorer is the part of a trained model the Model engine needs;
// *model.Model (pkg/model) is one. Probabilities must not allocate.
type Scorer interface {
	ModelVersion() string
	FeatureSchema() int
	NumFeatures() int
	Head(name string) int // index of the named head, -1 if none
	Threshold(head int) float64
	// Probabilities returns the probabilities of heads a and b for x.
	Probabilities(a, b int, x []float32) (pa, pb float64)
}

// FeatureExtractor is the part of the feature extractor the Model engine
// needs; *features.Extractor (pkg/features) is one. Its methods must not
// allocate.
type FeatureExtractor interface {
	SchemaVersion() int
	NumFeatures() int
	Extract(addr netip.Addr, dst []float32) (locdb.Network, bool)
	// Hosting reports whether x, as Extract wrote it, is of a network
	// whose AS name looks like a hosting provider's (HostingName).
	Hosting(x []float32) bool
	// Facts returns the neighbourhood facts that stand out in x as a bit
	// set: bit i is the evidence string Fact(i).
	Facts(x []float32) uint32
	Fact(i int) string
}

// The heads a model must have.
const (
	HeadAnonymiser = "anonymiser"
	HeadHostile    = "hostile"
)

// Model is the engine over a trained model. Its whole logic, in order:
//
//   - no network in the location database      -> not proxy, risk 0, "locdb:no-network"
//   - the network is flagged drop               -> proxy, Hostile, risk 100
//   - the network is flagged anonymous proxy    -> proxy, Anonymizer, risk max(90, 100·p_anon)
//   - p_hostile >= the hostile head's threshold -> proxy, Hostile, risk 100·p_hostile
//   - p_anon >= the anonymiser head's threshold -> proxy, Anonymizer, risk 100·p_anon
//   - the AS name looks like a hosting provider -> not proxy, Hosting, risk max(33, 100·max(p))
//   - otherwise                                 -> not proxy, risk 100·max(p_anon, p_hostile)
//
// p_anon and p_hostile are the heads' probabilities for the network's
// surroundings: the model never sees the network's own flags (the feature
// schema leaves them out), so the flags, when set, decide as in Rule, and
// the model finds the networks that the database has not flagged. Risks are
// rounded to integers. The thresholds are the model's (styx-trainer inspect
// prints them). Evidence lists the flags, both heads' probabilities in whole
// percent ("raven:anonymiser=87%") and the neighbourhood facts that stood
// out (see features.Extractor.Facts).
type Model struct {
	m         Scorer
	ex        FeatureExtractor
	anon, hos int
	n         int
	bufs      sync.Pool // *[]float32 of length n
	evidence  evidenceCache
}

// NewModel returns the engine over m, extracting features with ex. The
// model's feature schema must be the extractor's and it must have the
// heads "anonymiser" and "hostile".
func NewModel(m Scorer, ex FeatureExtractor) (*Model, error) {
	if m == nil || ex == nil {
		return nil, errors.New("raven: model and extractor are required")
	}
	if m.FeatureSchema() != ex.SchemaVersion() || m.NumFeatures() != ex.NumFeatures() {
		return nil, fmt.Errorf("raven: model %s speaks feature schema %d (%d features), the extractor %d (%d features)",
			m.ModelVersion(), m.FeatureSchema(), m.NumFeatures(), ex.SchemaVersion(), ex.NumFeatures())
	}
	e := &Model{m: m, ex: ex, anon: m.Head(HeadAnonymiser), hos: m.Head(HeadHostile), n: ex.NumFeatures()}
	if e.anon < 0 || e.hos < 0 {
		return nil, fmt.Errorf("raven: model %s lacks the %q or %q head", m.ModelVersion(), HeadAnonymiser, HeadHostile)
	}
	e.bufs.New = func() any { b := make([]float32, e.n); return &b }
	e.evidence.fact = ex.Fact
	return e, nil
}

// ModelVersion implements Engine.
func (e *Model) ModelVersion() string { return e.m.ModelVersion() }

// Extract writes the feature vector the model reads for addr to dst (at
// least as long as the model's features), as Examine builds it: to see
// what an engine saw (the history block of a schema 2 model, in tests and
// diagnostics). ok is false when the address has no network.
func (e *Model) Extract(addr netip.Addr, dst []float32) (n locdb.Network, ok bool) {
	return e.ex.Extract(addr, dst[:e.n])
}

// Scores are the heads' probabilities for one address.
type Scores struct {
	Network    locdb.Network
	Anonymiser float64
	Hostile    float64
}

// Score looks addr up and scores both heads; ok is false when the address
// has no network. It does not allocate.
func (e *Model) Score(addr netip.Addr) (s Scores, ok bool) {
	bp := e.bufs.Get().(*[]float32)
	x := *bp
	s.Network, ok = e.ex.Extract(addr, x)
	if ok {
		s.Anonymiser, s.Hostile = e.m.Probabilities(e.anon, e.hos, x)
	}
	e.bufs.Put(bp)
	return s, ok
}

// Examine implements Engine. It does not allocate once the evidence list
// it returns has been seen (see evidenceCache): verdicts share their
// Evidence slices, as Rule's do, so callers must not modify them
// (appending copies: their capacity is their length).
func (e *Model) Examine(addr netip.Addr) verdict.Verdict {
	bp := e.bufs.Get().(*[]float32)
	defer e.bufs.Put(bp)
	x := *bp
	n, ok := e.ex.Extract(addr, x)
	if !ok {
		return verdict.Verdict{Evidence: evUnknown}
	}
	pa, ph := e.m.Probabilities(e.anon, e.hos, x)
	var v verdict.Verdict
	lead := leadNone
	switch {
	case n.Flags&locdb.FlagDrop != 0:
		v = verdict.Verdict{Proxy: true, Type: TypeHostile, Risk: 100}
		lead = leadDrop
	case n.Flags&locdb.FlagAnonymousProxy != 0:
		v = verdict.Verdict{Proxy: true, Type: TypeAnonymizer, Risk: max(90, risk(pa))}
		lead = leadAnon
	case ph >= e.m.Threshold(e.hos):
		v = verdict.Verdict{Proxy: true, Type: TypeHostile, Risk: risk(ph)}
	case pa >= e.m.Threshold(e.anon):
		v = verdict.Verdict{Proxy: true, Type: TypeAnonymizer, Risk: risk(pa)}
	case e.ex.Hosting(x):
		v = verdict.Verdict{Type: TypeHosting, Risk: max(33, risk(max(pa, ph)))}
		lead = leadHosting
	default:
		v = verdict.Verdict{Risk: risk(max(pa, ph))}
	}
	v.Evidence = e.evidence.get(evidenceKey(lead, risk(pa), risk(ph), e.ex.Facts(x)))
	return v
}

// risk maps a probability to 0..100.
func risk(p float64) uint32 {
	if !(p > 0) {
		return 0
	}
	return uint32(min(100, math.Round(100*p)))
}

// Evidence strings for the heads' probabilities, built once.
var anonEvidence, hostileEvidence = percentStrings("raven:" + HeadAnonymiser + "="), percentStrings("raven:" + HeadHostile + "=")

func percentStrings(prefix string) [101]string {
	var s [101]string
	for i := range s {
		s[i] = fmt.Sprintf("%s%d%%", prefix, i)
	}
	return s
}

// A verdict's evidence is its lead (the network's flag or the hosting
// name, if any), both heads' probabilities in whole percent, and the
// extractor's facts: a handful of strings from a small set. On the real
// database 1.29 M networks have 2,345 distinct lists, and 100 of them cover
// 99% of the networks.
const (
	leadNone = iota
	leadDrop
	leadAnon
	leadHosting
)

var leads = [...]string{leadDrop: evDrop[0], leadAnon: evAnon[0], leadHosting: evHosting[0]}

// evidenceKey packs what an evidence list is made from: lead (2 bits),
// the two risks (7 bits each) and the facts (32 bits).
func evidenceKey(lead int, riskAnon, riskHostile uint32, facts uint32) uint64 {
	return uint64(lead) | uint64(riskAnon)<<2 | uint64(riskHostile)<<9 | uint64(facts)<<16
}

// evidenceCache interns evidence lists, so that Examine need not allocate
// one a verdict. It is a fixed table of slots, each holding an immutable
// entry published atomically: a lookup is a hash, two loads and a key
// comparison, with no lock. A list not in its two slots is built (one
// allocation) and replaces an entry, so the table stays bounded (4,096
// lists at most).
type evidenceCache struct {
	fact  func(int) string
	slots [1 << evidenceBits]atomic.Pointer[evidenceEntry]
}

const evidenceBits = 12 // 4,096 slots

type evidenceEntry struct {
	key uint64
	ev  []string
}

func (c *evidenceCache) get(key uint64) []string {
	i := (key * 0x9e3779b97f4a7c15) >> (64 - evidenceBits)
	j := i ^ 1
	if e := c.slots[i].Load(); e != nil && e.key == key {
		return e.ev
	}
	e := c.slots[j].Load()
	if e != nil && e.key == key {
		return e.ev
	}
	ne := &evidenceEntry{key: key, ev: c.build(key)}
	if e == nil {
		c.slots[j].Store(ne)
	} else {
		c.slots[i].Store(ne)
	}
	return ne.ev
}

// build makes the evidence list of key, with no spare capacity.
func (c *evidenceCache) build(key uint64) []string {
	lead, ra, rh, facts := int(key&3), key>>2&127, key>>9&127, uint32(key>>16)
	ev := make([]string, 0, 3+bits.OnesCount32(facts))
	if lead != leadNone {
		ev = append(ev, leads[lead])
	}
	ev = append(ev, anonEvidence[ra], hostileEvidence[rh])
	for f := facts; f != 0; f &= f - 1 {
		ev = append(ev, c.fact(bits.TrailingZeros32(f)))
	}
	return ev[:len(ev):len(ev)]
}
