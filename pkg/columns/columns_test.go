package columns

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/verdict"
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

// AddVerdict writes what Add writes for the same outcomes.
func TestOutcomeAddVerdict(t *testing.T) {
	dv := verdict.Verdict{Proxy: true, Type: "VPN", Risk: 70, ModelVersion: "m", Evidence: []string{"e"}, Inferred: time.Unix(0, 5)}
	pv := VerdictProto(netip.Addr{}, dv)
	var a, b OutcomeBuilder
	a.Add(1, styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, pv, "")
	b.AddVerdict(1, styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, &dv, "")
	a.Add(2, styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, nil, "")
	b.AddVerdict(2, styxv1.OutcomeKind_OUTCOME_KIND_VERDICT, nil, "")
	a.Add(3, styxv1.OutcomeKind_OUTCOME_KIND_EXPIRED, pv, "too old")
	b.AddVerdict(3, styxv1.OutcomeKind_OUTCOME_KIND_EXPIRED, &dv, "too old")
	if ab, bb := a.Batch(), b.Batch(); !proto.Equal(ab, bb) {
		t.Fatalf("Add wrote %v\nAddVerdict wrote %v", ab, bb)
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
// DomainVerdicts decodes what VerdictBuilder.AddVerdict wrote.
func TestDomainVerdictsRoundTrip(t *testing.T) {
	var b VerdictBuilder
	for i := range domainVerdicts {
		b.AddVerdict(&domainVerdicts[i])
	}
	got, err := DomainVerdicts(b.Columns(), len(domainVerdicts))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !equalVerdict(got[i], domainVerdicts[i]) {
			t.Errorf("verdict %d: %+v, want %+v", i, got[i], domainVerdicts[i])
		}
	}
	if _, err := DomainVerdicts(b.Columns(), 2); err == nil {
		t.Error("a wrong count decoded")
	}
}

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
			// Both decoders accept and refuse the same columns, and agree.
			pvs, perr := DecodeVerdicts(&c, 3)
			dvs, derr := DomainVerdicts(&c, 3)
			if (perr == nil) != (derr == nil) || len(pvs) != len(dvs) {
				t.Fatalf("DecodeVerdicts %d, %v; DomainVerdicts %d, %v", len(pvs), perr, len(dvs), derr)
			}
			for i := range pvs {
				if !equalVerdict(VerdictOf(&pvs[i]), dvs[i]) {
					t.Fatalf("verdict %d: %+v from the wire rows, %+v decoded", i, VerdictOf(&pvs[i]), dvs[i])
				}
			}
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

// equalVerdict compares verdicts as the wire carries them: nil and empty
// evidence alike, times by instant.
func equalVerdict(a, b verdict.Verdict) bool {
	return a.Proxy == b.Proxy && a.Type == b.Type && a.Risk == b.Risk && a.Port == b.Port &&
		a.ModelVersion == b.ModelVersion && slices.Equal(a.Evidence, b.Evidence) && a.Error == b.Error &&
		a.Inferred.Equal(b.Inferred) && a.Inferred.IsZero() == b.Inferred.IsZero()
}

var domainVerdicts = []verdict.Verdict{
	{},
	{Evidence: []string{}},
	{Proxy: true, Type: "SOCKS5", Risk: 100, Port: 1080, ModelVersion: "m1",
		Evidence: []string{"locdb:hosting-as", "proxyprobe:SOCKS5:1080"}, Inferred: time.Unix(1_700_000_000, 5)},
	{ModelVersion: "m2", Error: "engine panic on 192.0.2.1: boom", Inferred: time.Unix(1_700_000_001, 0)},
	{Type: "Hosting", Risk: 33, ModelVersion: "m1", Evidence: []string{"locdb:hosting-as"}}, // zero Inferred
	{Risk: 1, Inferred: time.Unix(-5, 0)}, // before 1970
	{Risk: 2, Inferred: time.Now()},       // with a monotonic reading
}

func TestVerdictProtoRoundTrip(t *testing.T) {
	addrs := []struct {
		addr netip.Addr
		want []byte
	}{
		{netip.Addr{}, nil},
		{netip.MustParseAddr("192.0.2.1"), []byte{192, 0, 2, 1}},
		{netip.MustParseAddr("::ffff:192.0.2.1"), []byte{192, 0, 2, 1}},
		{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::1").AsSlice()},
	}
	for i, v := range domainVerdicts {
		for _, a := range addrs {
			pv := VerdictProto(a.addr, v)
			if !bytes.Equal(pv.GetAddress(), a.want) {
				t.Errorf("verdict %d, %v: address %v, want %v", i, a.addr, pv.GetAddress(), a.want)
			}
			if got, want := pv.GetInferredUnixNano(), v.InferredUnixNano(); got != want {
				t.Errorf("verdict %d: inferred %d ns, want %d", i, got, want)
			}
			// Through the wire, as a peer sees it.
			raw, err := proto.Marshal(pv)
			if err != nil {
				t.Fatal(err)
			}
			var back styxv1.Verdict
			if err := proto.Unmarshal(raw, &back); err != nil {
				t.Fatal(err)
			}
			if got := VerdictOf(&back); !equalVerdict(got, v) {
				t.Errorf("verdict %d, %v: got %+v, want %+v", i, a.addr, got, v)
			}
		}
	}
	if got := VerdictOf(nil); !equalVerdict(got, verdict.Verdict{}) || !got.Inferred.IsZero() {
		t.Errorf("VerdictOf(nil) = %+v", got)
	}
	// From the wire and back: every field survives, the address too.
	pv := &styxv1.Verdict{Address: []byte{192, 0, 2, 9}, Proxy: true, Type: "VPN", Risk: 80, ModelVersion: "m1",
		Evidence: []string{"a"}, Error: "e", Port: 8080, InferredUnixNano: 7}
	if back := VerdictProto(netip.AddrFrom4([4]byte{192, 0, 2, 9}), VerdictOf(pv)); !proto.Equal(back, pv) {
		t.Errorf("got %v, want %v", back, pv)
	}
}

// TestAddVerdict checks that the domain verdicts a worker adds read back
// the same, and write the same columns as their wire form.
func TestAddVerdict(t *testing.T) {
	var b VerdictBuilder
	b.Reset(len(domainVerdicts))
	pvs := make([]*styxv1.Verdict, len(domainVerdicts))
	for i := range domainVerdicts {
		b.AddVerdict(&domainVerdicts[i])
		pvs[i] = VerdictProto(netip.Addr{}, domainVerdicts[i])
	}
	c := b.Columns()
	if want := EncodeVerdicts(pvs); !proto.Equal(c, want) {
		t.Errorf("columns %v, want %v", c, want)
	}
	rows, err := DecodeVerdicts(c, len(domainVerdicts))
	if err != nil {
		t.Fatal(err)
	}
	for i := range rows {
		if got := VerdictOf(&rows[i]); !equalVerdict(got, domainVerdicts[i]) {
			t.Errorf("verdict %d: got %+v, want %+v", i, got, domainVerdicts[i])
		}
	}
}

// TestFillVerdictProto checks that a filled row keeps its address and takes
// every other field, overwriting what it held.
func TestFillVerdictProto(t *testing.T) {
	for i := range domainVerdicts {
		row := styxv1.Verdict{Address: []byte{192, 0, 2, 1}, Proxy: true, Type: "old", Risk: 9, Port: 9,
			ModelVersion: "old", Evidence: []string{"old"}, Error: "old", InferredUnixNano: 9}
		FillVerdictProto(&row, &domainVerdicts[i])
		want := VerdictProto(netip.AddrFrom4([4]byte{192, 0, 2, 1}), domainVerdicts[i])
		if !proto.Equal(&row, want) {
			t.Errorf("verdict %d: %v, want %v", i, &row, want)
		}
	}
}
