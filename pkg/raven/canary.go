package raven

import (
	"net/netip"
	"sort"
	"strconv"
	"sync"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/verdict"
)

// Canary examines a share of the addresses with a candidate model and the
// rest with the current one. On the canary's share it runs both, answers
// with the canary's verdict (naming the canary's version) and records how
// the two differ, by type and by AS, so that an operator can decide to
// promote or roll back with evidence. The share is chosen by a hash of the
// address, so an address always gets the same model.
type Canary struct {
	current, canary Engine
	loc             Locator // for the AS of a differing address; may be nil
	threshold       uint64  // hash < threshold: canary
	all             bool    // share 1: every address

	mu     sync.Mutex
	stats  CanaryStats
	byASN  map[uint32]uint64
	maxASN int
}

// CanaryStats is the comparison so far.
type CanaryStats struct {
	Current, Canary string            // model versions
	Examined        uint64            // addresses both models examined
	Differed        uint64            // of those, with a different proxy answer or type
	ByType          map[string]uint64 // "<current type>-><canary type>", "" = not a proxy
	ByASN           map[string]uint64 // "AS<n>" of differing addresses (the largest few)
}

// NewCanary returns an engine sending share (0..1] of the addresses to
// canary. loc, when not nil, attributes differences to ASes.
func NewCanary(current, canary Engine, share float64, loc Locator) *Canary {
	share = min(max(share, 0), 1)
	return &Canary{
		current: current, canary: canary, loc: loc,
		threshold: uint64(share * (1 << 63) * 2), all: share == 1,
		stats:  CanaryStats{Current: current.ModelVersion(), Canary: canary.ModelVersion(), ByType: map[string]uint64{}},
		byASN:  map[uint32]uint64{},
		maxASN: 20,
	}
}

// UseAttackHistory hands the attack table to both models.
func (c *Canary) UseAttackHistory(h attacks.History) {
	for _, e := range []Engine{c.current, c.canary} {
		if u, ok := e.(attacks.HistoryUser); ok {
			u.UseAttackHistory(h)
		}
	}
}

// ModelVersion is the current model's version; canary verdicts name theirs.
func (c *Canary) ModelVersion() string { return c.current.ModelVersion() }

// Examine implements Engine.
func (c *Canary) Examine(addr netip.Addr) verdict.Verdict {
	if !c.all && addrHash(addr) >= c.threshold {
		return c.current.Examine(addr)
	}
	cur := c.current.Examine(addr)
	v := c.canary.Examine(addr)
	v.ModelVersion = c.stats.Canary
	differs := cur.Proxy != v.Proxy || cur.Type != v.Type
	var asn uint32
	if differs && c.loc != nil {
		if n, ok := c.loc.Lookup(addr); ok {
			asn = n.ASN
		}
	}
	c.mu.Lock()
	c.stats.Examined++
	if differs {
		c.stats.Differed++
		c.stats.ByType[cur.Type+"->"+v.Type]++
		if asn != 0 {
			c.byASN[asn]++
		}
	}
	c.mu.Unlock()
	return v
}

// addrHash is FNV-1a over the 16-byte form, mixed: the same on every
// server, so an address meets the same model wherever it is examined.
func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	h := uint64(14695981039346656037)
	for _, x := range b {
		h = (h ^ uint64(x)) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// Stats returns a copy of the comparison, with the ASes that differ most.
func (c *Canary) Stats() CanaryStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.ByType = make(map[string]uint64, len(c.stats.ByType))
	for k, v := range c.stats.ByType {
		s.ByType[k] = v
	}
	type kv struct {
		asn uint32
		n   uint64
	}
	all := make([]kv, 0, len(c.byASN))
	for a, n := range c.byASN {
		all = append(all, kv{a, n})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].asn < all[j].asn })
	s.ByASN = map[string]uint64{}
	for i := 0; i < len(all) && i < c.maxASN; i++ {
		s.ByASN["AS"+strconv.FormatUint(uint64(all[i].asn), 10)] = all[i].n
	}
	return s
}
