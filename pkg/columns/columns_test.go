package columns

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestVerdictsRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   []*styxv1.Verdict
	}{
		{"empty", nil},
		{"zeros", []*styxv1.Verdict{{}, {}}},
		{"mixed", []*styxv1.Verdict{
			{Proxy: true, Type: "VPN", Risk: 80, ModelVersion: "m1", InferredUnixNano: 5, Evidence: []string{"a", "b"}},
			{ModelVersion: "m1", InferredUnixNano: 5},
			{ModelVersion: "m2", Error: "boom", InferredUnixNano: 6},
			{Proxy: true, Type: "SOCKS5", Port: 1080, Risk: 100, ModelVersion: "m1", Evidence: []string{"b"}, InferredUnixNano: 7},
			{ModelVersion: "m1", Evidence: []string{"c"}, Error: "again"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := EncodeVerdicts(tt.in)
			// Through the wire, as a peer sees it.
			raw, err := proto.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			var back styxv1.VerdictColumns
			if err := proto.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			got, err := Verdicts(&back, len(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.in) {
				t.Fatalf("%d verdicts, want %d", len(got), len(tt.in))
			}
			for i := range got {
				if !proto.Equal(got[i], tt.in[i]) {
					t.Errorf("verdict %d: got %v, want %v", i, got[i], tt.in[i])
				}
			}
		})
	}
}

func TestVerdictColumnsChecked(t *testing.T) {
	bad := []*styxv1.VerdictColumns{
		{Count: 2, Risk: []uint32{1}},
		{Count: 1, Type: []uint32{2}, Strings: []string{"x"}},
		{Count: 1, EvidenceOf: []uint32{0}},
		{Count: 1, EvidenceOf: []uint32{1}, Evidence: []uint32{0}},
		{Count: 2, EvidenceOf: []uint32{1, 0}, Evidence: []uint32{0, 0}},
		{Count: 2, ErrorOf: []uint32{1, 1}, Error: []string{"a", "b"}},
		{Count: 1, ErrorOf: []uint32{0}},
	}
	for i, c := range bad {
		if _, err := DecodeVerdicts(c, int(c.Count)); err == nil {
			t.Errorf("case %d: %v accepted", i, c)
		}
	}
}

func TestOutcomesRoundTrip(t *testing.T) {
	v := &styxv1.Verdict{Proxy: true, Type: "VPN", ModelVersion: "m"}
	in := []Outcome{
		{SightingID: 1, Kind: styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, Verdict: v},
		{SightingID: 2, Kind: styxv1.OutcomeKind_OUTCOME_KIND_SHED, Reason: "pool full"},
		{SightingID: 3, Kind: styxv1.OutcomeKind_OUTCOME_KIND_REJECTED, Reason: "unspecified address"},
	}
	got, err := Outcomes(EncodeOutcomes(in...))
	if err != nil {
		t.Fatal(err)
	}
	for i := range in {
		g := got[i]
		if g.SightingID != in[i].SightingID || g.Kind != in[i].Kind || g.Reason != in[i].Reason || (in[i].Verdict != nil) != (g.Verdict != nil) {
			t.Errorf("outcome %d: %+v, want %+v", i, g, in[i])
		}
	}
	if !proto.Equal(got[0].Verdict, v) {
		t.Errorf("verdict %v", got[0].Verdict)
	}
	// Only verdicts: no kinds column.
	b := EncodeOutcomes(in[0], in[0])
	if len(b.Kinds) != 0 {
		t.Errorf("kinds %v for verdicts only", b.Kinds)
	}
	if _, err := Outcomes(&styxv1.OutcomeBatch{SightingIds: []uint64{1}}); err == nil {
		t.Error("an outcome without a verdict entry accepted")
	}
}

func TestSightings(t *testing.T) {
	var b styxv1.SightingBatch
	in := []Sighting{
		{ID: 1, Addr: netip.MustParseAddr("192.0.2.1"), Seen: 10},
		{ID: 2, Addr: netip.MustParseAddr("2001:db8::1"), Seen: 11},
	}
	for _, s := range in {
		AppendSighting(&b, s)
	}
	got, err := Sightings(&b)
	if err != nil || len(got) != 2 || got[0] != in[0] || got[1] != in[1] {
		t.Fatalf("%v %v", got, err)
	}
	b.Addresses = b.Addresses[:20]
	if _, err := SightingCount(&b); err == nil {
		t.Error("ragged addresses accepted")
	}
}

// FuzzDecode checks that no input makes the decoders panic.
func FuzzDecode(f *testing.F) {
	for _, c := range []proto.Message{
		EncodeVerdicts([]*styxv1.Verdict{{Proxy: true, Type: "VPN", Evidence: []string{"a", "b"}}, {Error: "x"}}),
	} {
		raw, _ := proto.Marshal(c)
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c styxv1.VerdictColumns
		if proto.Unmarshal(raw, &c) == nil {
			_, _ = DecodeVerdicts(&c, 3)
		}
		var o styxv1.OutcomeBatch
		if proto.Unmarshal(raw, &o) == nil {
			_, _ = Outcomes(&o)
		}
		var s styxv1.SightingBatch
		if proto.Unmarshal(raw, &s) == nil {
			_, _ = Sightings(&s)
		}
	})
}
