package raven

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"

	"github.com/styx-inference/styx/pkg/locdb"
)

// Scorer is the part of a trained model the Model engine needs;
// *model.Model (pkg/model) is one. Probability must not allocate.
type Scorer interface {
	ModelVersion() string
	FeatureSchema() int
	NumFeatures() int
	Head(name string) int // index of the named head, -1 if none
	Threshold(head int) float64
	Probability(head int, x []float32) float64
}

// FeatureExtractor is the part of the feature extractor the Model engine
// needs; *features.Extractor (pkg/features) is one. Extract and Evidence
// must not allocate (Evidence appends static strings to dst).
type FeatureExtractor interface {
	SchemaVersion() int
	NumFeatures() int
	Extract(addr netip.Addr, dst []float32) (locdb.Network, bool)
	Evidence(x []float32, dst []string) []string
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
// out (see features.Extractor.Evidence).
type Model struct {
	m         Scorer
	ex        FeatureExtractor
	anon, hos int
	n         int
	bufs      sync.Pool // *[]float32 of length n
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
	return e, nil
}

// ModelVersion implements Engine.
func (e *Model) ModelVersion() string { return e.m.ModelVersion() }

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
		s.Anonymiser = e.m.Probability(e.anon, x)
		s.Hostile = e.m.Probability(e.hos, x)
	}
	e.bufs.Put(bp)
	return s, ok
}

// Examine implements Engine. It allocates the verdict's evidence slice
// only.
func (e *Model) Examine(addr netip.Addr) Verdict {
	bp := e.bufs.Get().(*[]float32)
	defer e.bufs.Put(bp)
	x := *bp
	n, ok := e.ex.Extract(addr, x)
	if !ok {
		return Verdict{Evidence: evUnknown}
	}
	pa, ph := e.m.Probability(e.anon, x), e.m.Probability(e.hos, x)
	ev := make([]string, 0, 12)
	var v Verdict
	switch {
	case n.Flags&locdb.FlagDrop != 0:
		v = Verdict{Proxy: true, Type: TypeHostile, Risk: 100}
		ev = append(ev, evDrop[0])
	case n.Flags&locdb.FlagAnonymousProxy != 0:
		v = Verdict{Proxy: true, Type: TypeAnonymizer, Risk: max(90, risk(pa))}
		ev = append(ev, evAnon[0])
	case ph >= e.m.Threshold(e.hos):
		v = Verdict{Proxy: true, Type: TypeHostile, Risk: risk(ph)}
	case pa >= e.m.Threshold(e.anon):
		v = Verdict{Proxy: true, Type: TypeAnonymizer, Risk: risk(pa)}
	case HostingName(n.ASName):
		v = Verdict{Type: TypeHosting, Risk: max(33, risk(max(pa, ph)))}
		ev = append(ev, evHosting[0])
	default:
		v = Verdict{Risk: risk(max(pa, ph))}
	}
	ev = append(ev, anonEvidence[risk(pa)], hostileEvidence[risk(ph)])
	v.Evidence = e.ex.Evidence(x, ev)
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
