package features

import (
	"net/netip"

	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
)

// HistorySource is what schema 2 reads about an address's past;
// *history.Table is one. Lookup must leave the address itself out of its
// bucket's and AS's counts, and must not allocate.
type HistorySource interface {
	Lookup(addr netip.Addr, asn uint32) history.Stats
}

// HistorySmoothing is added to the verdict count below a proxy share: the
// share of p proxies among v verdicts is p/(v+HistorySmoothing), so that a
// bucket with one proxy verdict does not look like one with a hundred.
const HistorySmoothing = 2

const day = 24 * 3600 * 1e9 // nanoseconds

// WriteHistory writes the history block of a schema 2 vector (its indexes
// HistAddrAttacks..HistASAttacks) from s to x, which is at least
// CountHistory long. The zero Stats (nothing known) writes zeros. It does
// not allocate.
func WriteHistory(s history.Stats, x []float32) {
	x = x[:CountHistory]
	x[HistAddrAttacks] = float32(s.Attacks)
	x[HistAddrAttackKinds] = float32(s.Kinds)
	x[HistAddrAttackRecency] = 0
	if s.LastAttack != 0 {
		days := max(0, float64(s.Clock-s.LastAttack)/day)
		x[HistAddrAttackRecency] = float32(1 / (1 + days))
	}
	x[HistBucketVerdicts] = float32(s.Bucket.Verdicts)
	x[HistBucketProxyShare] = float32(s.Bucket.Proxies) / float32(s.Bucket.Verdicts+HistorySmoothing)
	x[HistBucketAttacks] = float32(s.Bucket.Attacks)
	x[HistASVerdicts] = float32(s.AS.Verdicts)
	x[HistASProxyShare] = float32(s.AS.Proxies) / float32(s.AS.Verdicts+HistorySmoothing)
	x[HistASAttacks] = float32(s.AS.Attacks)
}

// Evidence strings of the history block (HistoryExtractor.Facts).
const (
	EvHistAttacked      = "hist:attacked"        // attack reports name the address
	EvHistBucketProxies = "hist:bucket-proxies"  // at least half of the /24's (/48's) other verdicts found proxies (2 or more)
	EvHistBucketAttacks = "hist:bucket-attacked" // attack reports name other addresses of the /24 (/48)
)

// historyFacts follow the neighbourhood facts in a Facts bit set.
var historyFacts = [...]string{EvHistAttacked, EvHistBucketProxies, EvHistBucketAttacks}

// HistoryExtractor writes schema 2 vectors: schema 1's features from an
// Extractor, then the history block from a HistorySource (a worker's
// history.Table). Safe for concurrent use as its parts are.
type HistoryExtractor struct {
	ex *Extractor
	h  HistorySource // nil: the history block is zero
}

// NewHistoryExtractor returns the schema 2 extractor over ex and h. A nil
// h (a server that keeps no history) gives a zero history block, as the
// trainer writes it when it is given no history.
func NewHistoryExtractor(ex *Extractor, h HistorySource) *HistoryExtractor {
	return &HistoryExtractor{ex: ex, h: h}
}

// SchemaVersion is SchemaHistory.
func (hx *HistoryExtractor) SchemaVersion() int { return SchemaHistory }

// NumFeatures is CountHistory.
func (hx *HistoryExtractor) NumFeatures() int { return CountHistory }

// Base is the schema 1 extractor underneath.
func (hx *HistoryExtractor) Base() *Extractor { return hx.ex }

// Extract writes the schema 2 features of addr to dst (len(dst) >=
// CountHistory). Without a network, every feature is Missing and ok is
// false. It does not allocate.
func (hx *HistoryExtractor) Extract(addr netip.Addr, dst []float32) (n locdb.Network, ok bool) {
	dst = dst[:CountHistory]
	n, ok = hx.ex.Extract(addr, dst)
	if !ok {
		for i := Count; i < CountHistory; i++ {
			dst[i] = Missing
		}
		return n, false
	}
	var s history.Stats
	if hx.h != nil {
		s = hx.h.Lookup(addr, n.ASN)
	}
	WriteHistory(s, dst)
	return n, true
}

// Hosting is the Extractor's.
func (hx *HistoryExtractor) Hosting(x []float32) bool { return hx.ex.Hosting(x) }

// Facts are the Extractor's neighbourhood facts, then the history's
// (EvHistAttacked, EvHistBucketProxies, EvHistBucketAttacks).
func (hx *HistoryExtractor) Facts(x []float32) uint32 {
	f := hx.ex.Facts(x)
	x = x[:CountHistory]
	const at = len(facts)
	f |= bit(x[HistAddrAttacks] > 0, at)
	f |= bit(x[HistBucketVerdicts] >= 2 && 2*x[HistBucketProxyShare]*(x[HistBucketVerdicts]+HistorySmoothing) >= x[HistBucketVerdicts], at+1)
	f |= bit(x[HistBucketAttacks] > 0, at+2)
	return f
}

// Fact is the evidence string of Facts' bit i, "" past the last.
func (hx *HistoryExtractor) Fact(i int) string {
	if i >= len(facts) && i < len(facts)+len(historyFacts) {
		return historyFacts[i-len(facts)]
	}
	return hx.ex.Fact(i)
}
