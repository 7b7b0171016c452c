package columns

import (
	"net/netip"

	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// VerdictOf returns the verdict pv carries, without its address; nil is a
// zero verdict. Evidence shares pv's list. An inference time of 0 is the
// zero time.
func VerdictOf(pv *styxv1.Verdict) verdict.Verdict {
	return verdict.Verdict{
		Proxy:        pv.GetProxy(),
		Type:         pv.GetType(),
		Risk:         pv.GetRisk(),
		Port:         pv.GetPort(),
		ModelVersion: pv.GetModelVersion(),
		Evidence:     pv.GetEvidence(),
		Error:        pv.GetError(),
		Inferred:     verdict.UnixNano(pv.GetInferredUnixNano()),
	}
}

// VerdictProto returns v as the wire verdict about addr: 4 bytes for an
// IPv4 address (mapped or not), 16 for IPv6, none when addr is not valid.
// Evidence shares v's list. It is the inverse of VerdictOf.
func VerdictProto(addr netip.Addr, v verdict.Verdict) *styxv1.Verdict {
	pv := &styxv1.Verdict{}
	FillVerdictProto(pv, &v)
	if addr.IsValid() {
		pv.Address = addr.Unmap().AsSlice()
	}
	return pv
}

// FillVerdictProto sets every field of dst but its address to v's, for a
// caller that allocates many wire verdicts at once (rows of one slice).
// Evidence shares v's list.
func FillVerdictProto(dst *styxv1.Verdict, v *verdict.Verdict) {
	dst.Proxy = v.Proxy
	dst.Type = v.Type
	dst.Risk = v.Risk
	dst.Port = v.Port
	dst.ModelVersion = v.ModelVersion
	dst.Evidence = v.Evidence
	dst.Error = v.Error
	dst.InferredUnixNano = v.InferredUnixNano()
}
