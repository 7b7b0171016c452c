package service

import (
	"net/netip"
	"testing"

	"github.com/styx-inference/styx/pkg/raven"
)

// TestCanaryVerdictsNameTheirModel: a verdict that names its model (the
// canary's share of the addresses) keeps that name; the others name the
// engine's ModelVersion.
func TestCanaryVerdictsNameTheirModel(t *testing.T) {
	eng := raven.NewCanary(versioned{"model-v1"}, versioned{"model-v2"}, 0.5, nil)
	h := start(t, Config{Capacity: 1, Engine: eng})
	st, _ := h.open(t, 1)
	in := make([][]byte, 64)
	for i := range in {
		a := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).As4()
		in[i] = a[:]
	}
	st.batch(1, 1, in...)
	vs := verdictsOf(t, st.recv().GetResult())
	if len(vs) != len(in) {
		t.Fatalf("%d verdicts for %d addresses", len(vs), len(in))
	}
	byModel := map[string]int{}
	for i, v := range vs {
		a, _ := netip.AddrFromSlice(in[i])
		want := "model-v1"
		if eng.Examine(a).ModelVersion != "" {
			want = "model-v2"
		}
		if v.GetModelVersion() != want || v.GetError() != "" {
			t.Fatalf("verdict %d for %s: model %q, error %q; want model %q", i, a, v.GetModelVersion(), v.GetError(), want)
		}
		byModel[want]++
	}
	if byModel["model-v1"] == 0 || byModel["model-v2"] == 0 {
		t.Fatalf("verdicts by model %v: want both models", byModel)
	}
}
