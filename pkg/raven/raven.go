// Package raven is the inference engine interface shared by workers
// (post-processing, thorough) and cluster nodes (real-time, in the query
// path), and its first engine: a transparent scoring rule over the
// location database. The trained model replaces the rule behind the same
// interface. An EvidenceStage wraps any engine to run an evidence plugin
// (pkg/evidence, such as the open-proxy probe) after it.
package raven

import (
	"net/netip"
	"strings"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/verdict"
)

// Engine examines addresses. Implementations are safe for concurrent use.
type Engine interface {
	// Examine returns the verdict for addr. The Evidence slice may be
	// shared between verdicts (engines hand out cached, immutable lists):
	// callers must not modify it, and append only to a copy. The verdict's
	// ModelVersion is "" when it is the engine's ModelVersion, and names
	// the model otherwise (a canary examining a share of the addresses).
	// Error and Inferred are left to the caller, which runs the engine.
	Examine(addr netip.Addr) verdict.Verdict
	// ModelVersion names the model that makes the verdicts.
	ModelVersion() string
}

// Locator is the part of the location database an engine needs.
type Locator interface {
	Lookup(addr netip.Addr) (locdb.Network, bool)
}

// RuleVersion is the model version the rule engine reports.
const RuleVersion = "rule-v1"

// Verdict types the rule produces.
const (
	TypeAnonymizer = "Anonymizer"
	TypeHostile    = "Hostile"
	TypeHosting    = "Hosting"
)

// Evidence strings (shared by the rule's verdicts and the docs).
var (
	evAnon    = []string{"locdb:anonymous-proxy"}
	evDrop    = []string{"locdb:drop"}
	evHosting = []string{"locdb:hosting-as"}
	evNone    = []string{}
	evUnknown = []string{"locdb:no-network"}
)

// Rule is the first, honest engine. Its whole logic:
//
//   - the network is flagged anonymous proxy    -> proxy, Anonymizer, risk 90
//   - the network is flagged drop (hostile)      -> proxy, Hostile, risk 100
//   - the AS name looks like a hosting provider  -> not proxy, Hosting, risk 33
//     (cluster nodes report it as a proxy when the query sets vpn=1)
//   - otherwise                                  -> not proxy, risk 0
type Rule struct {
	loc Locator
}

// NewRule returns the rule engine over loc.
func NewRule(loc Locator) *Rule { return &Rule{loc: loc} }

// ModelVersion implements Engine.
func (r *Rule) ModelVersion() string { return RuleVersion }

// Examine implements Engine. It does not allocate.
func (r *Rule) Examine(addr netip.Addr) verdict.Verdict {
	n, ok := r.loc.Lookup(addr)
	if !ok {
		return verdict.Verdict{Evidence: evUnknown}
	}
	switch {
	case n.Flags&locdb.FlagDrop != 0:
		return verdict.Verdict{Proxy: true, Type: TypeHostile, Risk: 100, Evidence: evDrop}
	case n.Flags&locdb.FlagAnonymousProxy != 0:
		return verdict.Verdict{Proxy: true, Type: TypeAnonymizer, Risk: 90, Evidence: evAnon}
	case HostingName(n.ASName):
		return verdict.Verdict{Type: TypeHosting, Risk: 33, Evidence: evHosting}
	}
	return verdict.Verdict{Evidence: evNone}
}

var hostingWords = []string{
	"HOSTING", "HOST", "CLOUD", "DATACENTER", "DATA CENTER", "DATA-CENTER", "SERVER",
	"VPS", "COLO", "DEDICATED", "AMAZON", "AWS", "GOOGLE-CLOUD", "MICROSOFT-CORP-MSN-AS-BLOCK",
	"DIGITALOCEAN", "OVH", "HETZNER", "LINODE", "AKAMAI", "VULTR", "CHOOPA", "LEASEWEB",
	"CONTABO", "SCALEWAY", "ONLINE S.A.S", "M247", "ALIBABA", "TENCENT", "ORACLE",
}

// HostingName reports whether an AS name looks like a hosting provider.
// It does not allocate.
func HostingName(name string) bool {
	if name == "" {
		return false
	}
	for _, w := range hostingWords {
		if containsFold(name, w) {
			return true
		}
	}
	return false
}

// containsFold is strings.Contains with ASCII case folding, without
// allocating (w is upper case).
func containsFold(s, w string) bool {
	if len(w) > len(s) {
		return false
	}
	for i := 0; i+len(w) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(w)], w) {
			return true
		}
	}
	return false
}

// Nop is an engine that finds nothing, instantly: benchmarks use it to
// measure the pipeline alone.
type Nop struct{}

// Examine implements Engine.
func (Nop) Examine(netip.Addr) verdict.Verdict { return verdict.Verdict{Evidence: evNone} }

// ModelVersion implements Engine.
func (Nop) ModelVersion() string { return "nop" }
