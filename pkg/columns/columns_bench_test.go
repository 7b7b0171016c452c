package columns

import (
	"fmt"
	"testing"

	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// benchVerdicts returns n verdicts as a worker answers a batch: one model,
// one inference time, a few types and shared evidence lists, a rare error.
func benchVerdicts(n int) []*styxv1.Verdict {
	types := []string{"", "", "", "Anonymizer", "Hosting", "Hostile", "VPN"}
	evs := [][]string{{}, {"locdb:anonymous-proxy"}, {"locdb:hosting-as", "raven:anonymiser=12%"}, {"locdb:drop"}}
	out := make([]*styxv1.Verdict, n)
	for i := range out {
		v := &styxv1.Verdict{
			Type: types[i%len(types)], Risk: uint32(i % 101), ModelVersion: "raven-v7",
			Evidence: evs[i%len(evs)], InferredUnixNano: 1_700_000_000_000_000_000,
		}
		v.Proxy = v.Type != "" && v.Type != "Hosting"
		if i%97 == 0 {
			v.Port = 1080
		}
		if i%499 == 0 {
			v.Error = fmt.Sprintf("engine panic on address %d", i)
		}
		out[i] = v
	}
	return out
}

// BenchmarkVerdictColumns measures a worker's answer to a batch of 1,024
// addresses: building its columns (Add), and reading them back as the
// scheduler does (Decode).
func BenchmarkVerdictColumns(b *testing.B) {
	vs := benchVerdicts(1024)
	b.Run("Add", func(b *testing.B) {
		b.ReportAllocs()
		var vb VerdictBuilder
		for b.Loop() {
			vb.Reset(len(vs))
			for _, v := range vs {
				vb.Add(v)
			}
			_ = vb.Columns()
		}
	})
	b.Run("Decode", func(b *testing.B) {
		c := EncodeVerdicts(vs)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeVerdicts(c, len(vs)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkAddVerdict is BenchmarkVerdictColumns/Add for the domain
// verdicts a worker's engine returns.
func BenchmarkAddVerdict(b *testing.B) {
	pvs := benchVerdicts(1024)
	vs := make([]verdict.Verdict, len(pvs))
	for i, pv := range pvs {
		vs[i] = VerdictOf(pv)
	}
	b.ReportAllocs()
	var vb VerdictBuilder
	for b.Loop() {
		vb.Reset(len(vs))
		for i := range vs {
			vb.AddVerdict(&vs[i])
		}
		_ = vb.Columns()
	}
}
