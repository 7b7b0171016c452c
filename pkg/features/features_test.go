package features_test

import (
	"net/netip"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/raven"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSchemaNames(t *testing.T) {
	seen := map[string]bool{}
	for i, n := range features.Names() {
		if n == "" || seen[n] {
			t.Fatalf("feature %d: empty or repeated name %q", i, n)
		}
		if features.Description(i) == "" {
			t.Errorf("feature %s has no description", n)
		}
		seen[n] = true
	}
	if err := features.Compatible(features.SchemaVersion, features.Names()); err != nil {
		t.Fatal(err)
	}
	if err := features.Compatible(features.SchemaVersion+1, features.Names()); err == nil {
		t.Fatal("another schema version was accepted")
	}
	bad := features.Names()
	bad[3] = "renamed"
	if err := features.Compatible(features.SchemaVersion, bad); err == nil {
		t.Fatal("a renamed feature was accepted")
	}
}

func open(t *testing.T, db *locdbtest.Database) *locdb.DB {
	t.Helper()
	d, err := locdb.Open(locdb.Config{Path: locdbtest.WriteTemp(t, db), SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

var mp = netip.MustParsePrefix

// TestLeaveOneOut: a network's own flag never shows in its features, and
// its neighbours see it.
func TestLeaveOneOut(t *testing.T) {
	db := open(t, &locdbtest.Database{
		Countries: []locdbtest.Country{{Code: "DE", Continent: "EU", Name: "Germany"}},
		ASes:      []locdbtest.AS{{Number: 64500, Name: "EXAMPLE HOSTING"}},
		Networks: []locdbtest.Network{
			{Prefix: mp("10.1.1.0/24"), Country: "DE", ASN: 64500, Flags: locdb.FlagAnonymousProxy},
			{Prefix: mp("10.1.2.0/24"), Country: "DE", ASN: 64500},
			{Prefix: mp("10.1.2.128/25"), Country: "DE", ASN: 64500, Flags: locdb.FlagDrop},
			{Prefix: mp("10.9.0.0/24"), Country: "DE", ASN: 64501},
		},
	})
	ex, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, features.Count)
	get := func(addr string) []float32 {
		t.Helper()
		if _, ok := ex.Extract(netip.MustParseAddr(addr), x); !ok {
			t.Fatalf("%s: no network", addr)
		}
		return append([]float32(nil), x...)
	}
	tests := []struct {
		addr string
		want map[int]float32
	}{
		{"10.1.1.7", map[int]float32{ // the anonymous proxy itself
			features.ASNetworks: 2, features.ASAnonOthers: 0, features.ASDropOthers: 1, features.ASAnonShare: 0, features.ASDropShare: 0.5,
			features.WideNetworks: 2, features.WideAnonOthers: 0, features.WideDropOthers: 1, features.WideASNs: 1,
			features.NarrowNetworks: 0, features.NarrowAnonShare: features.Missing,
			features.NearAnonLog2: features.Missing, features.ASHostingName: 1, features.Continent: 3,
			features.CountryNetworks: 3, features.CountryAnonShare: 0, features.PrefixLen: 24, features.IsIPv6: 0,
		}},
		{"10.1.2.7", map[int]float32{ // its clean neighbour sees both flags
			features.ASAnonOthers: 1, features.ASDropOthers: 1, features.NarrowNetworks: 1, features.NarrowDropOthers: 1,
			features.NearAnonLog2: 8.005625, features.NearDropLog2: 7.011227, features.CountryAnonShare: 1.0 / 3,
		}},
		{"10.1.2.200", map[int]float32{ // the drop network leaves itself out
			features.ASDropOthers: 0, features.ASAnonOthers: 1, features.NarrowDropOthers: 0, features.NearDropLog2: features.Missing,
			features.NearAnonLog2: 8.588715,
		}},
		{"10.9.0.1", map[int]float32{ // AS without a record, alone
			features.ASNamed: 0, features.ASNetworks: 0, features.ASAnonShare: features.Missing, features.WideNetworks: 0,
		}},
	}
	for _, tc := range tests {
		got := get(tc.addr)
		for i, w := range tc.want {
			if d := got[i] - w; d > 1e-5 || d < -1e-5 {
				t.Errorf("%s: %s = %v, want %v", tc.addr, features.Name(i), got[i], w)
			}
		}
	}
	if _, ok := ex.Extract(netip.MustParseAddr("192.0.2.1"), x); ok {
		t.Fatal("an address without a network was found")
	}
	for i, v := range x {
		if v != features.Missing {
			t.Fatalf("no network: %s = %v, want missing", features.Name(i), v)
		}
	}
}

func TestExtractDoesNotAllocate(t *testing.T) {
	db := featurestest.Open(t, 60, 1)
	ex, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, features.Count)
	ev := make([]string, 0, 16)
	addrs := []netip.Addr{netip.MustParseAddr("11.0.3.9"), netip.MustParseAddr("2a00:0:1:1::1"), netip.MustParseAddr("100.0.1.1"), netip.MustParseAddr("1.2.3.4")}
	allocs := testing.AllocsPerRun(200, func() {
		for _, a := range addrs {
			ex.Extract(a, x)
			ev = ex.Evidence(x, ev[:0])
		}
	})
	if allocs != 0 {
		t.Fatalf("Extract and Evidence allocate %v times per run", allocs)
	}
	if st := ex.Stats(); st.Networks == 0 || st.ASes == 0 || st.IndexBytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func BenchmarkExtract(b *testing.B) {
	db := featurestest.Open(b, 200, 1)
	ex, err := features.NewExtractor(db)
	if err != nil {
		b.Fatal(err)
	}
	x := make([]float32, features.Count)
	a := netip.MustParseAddr("11.0.3.9")
	b.ReportAllocs()
	for b.Loop() {
		ex.Extract(a, x)
	}
}

// TestHostingOnceAnAS: the hosting test the index runs once an AS gives
// raven.HostingName of every network's AS name, in the full index and in
// a fold index that leaves some ASes out entirely.
func TestHostingOnceAnAS(t *testing.T) {
	db := featurestest.Open(t, 120, 3)
	full, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	fold, err := features.NewFoldExtractor(db, func(n locdb.Network) bool {
		return n.ASN%3 == 0 || n.Prefix.Addr().As16()[13]%4 == 0
	}, 1.5)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, features.Count)
	hosting := 0
	for n := range db.Networks() {
		want := raven.HostingName(n.ASName)
		for name, ex := range map[string]*features.Extractor{"full": full, "fold": fold} {
			ex.ExtractNetwork(n, x)
			if ex.Hosting(x) != want {
				t.Fatalf("%s index, %s (AS%d %q): hosting %v, want %v", name, n.Prefix, n.ASN, n.ASName, ex.Hosting(x), want)
			}
		}
		if want {
			hosting++
		}
	}
	if hosting == 0 {
		t.Fatal("the fixture has no hosting AS")
	}
}

// TestFacts: Evidence lists the names of Facts' bits in order.
func TestFacts(t *testing.T) {
	db := featurestest.Open(t, 60, 5)
	ex, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, features.Count)
	seen := uint32(0)
	for n := range db.Networks() {
		ex.ExtractNetwork(n, x)
		f := ex.Facts(x)
		seen |= f
		var want []string
		for i := range 32 {
			if f&(1<<i) != 0 {
				want = append(want, ex.Fact(i))
			}
		}
		if got := ex.Evidence(x, nil); !slices.Equal(got, want) || slices.Contains(got, "") {
			t.Fatalf("%s: evidence %q, facts %b", n.Prefix, got, f)
		}
	}
	if seen == 0 {
		t.Fatal("no fact ever holds on the fixture")
	}
	if ex.Fact(-1) != "" || ex.Fact(32) != "" {
		t.Fatal("a fact out of range has a name")
	}
}
