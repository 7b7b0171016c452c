package locdb_test

import (
	"context"
	"crypto/ecdsa"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

// requireTool skips the test when the reference tool is not installed.
func requireTool(tb testing.TB) string {
	tb.Helper()
	p := locdbtest.ReferencePath()
	if p == "" {
		tb.Skipf("reference tool %q not installed", locdbtest.ReferenceTool)
	}
	return p
}

// requireRealDB skips the test when the distribution's database is missing.
func requireRealDB(tb testing.TB) {
	tb.Helper()
	if _, err := os.Stat(locdb.DefaultPath); err != nil {
		tb.Skipf("real database not installed: %v", err)
	}
}

// crossCheck looks addrs up with db and with the reference tool on dbPath
// and reports every difference.
func crossCheck(t *testing.T, db *locdb.DB, dbPath string, addrs []netip.Addr) (found int) {
	t.Helper()
	strs := make([]string, len(addrs))
	for i, a := range addrs {
		strs[i] = a.String()
	}
	// Warm up every run of the tool with an address we find.
	var opt locdbtest.ReferenceOptions
	for _, a := range addrs {
		if _, ok := db.Lookup(a); ok {
			opt.Warmup = a.String()
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	ref, stats, err := locdbtest.ReferenceLookup(ctx, dbPath, strs, opt)
	if err != nil {
		t.Fatalf("reference tool: %v", err)
	}
	t.Logf("reference tool: %d addresses in %d runs, %v", len(addrs), stats.Invocations, time.Since(start))
	bad := 0
	for i, a := range addrs {
		n, ok := db.Lookup(a)
		r, rok := ref[strs[i]]
		var diff string
		switch {
		case ok != rok:
			diff = fmt.Sprintf("found=%v (%+v), reference found=%v (%+v)", ok, n, rok, r)
		case ok:
			diff = r.Matches(n)
			found++
		}
		if diff != "" {
			bad++
			if bad <= 20 {
				t.Errorf("%s: %s", strs[i], diff)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d addresses differ from the reference tool", bad, len(addrs))
	}
	return found
}

// toolCompatible drops what the reference tool cannot answer, though the
// format allows it and this package answers it: a country code that is not
// two capital letters (or starts with X) makes the tool skip the network as
// if it were absent, and a code without a country record makes it abort.
func toolCompatible(spec *locdbtest.Database) *locdbtest.Database {
	valid := func(code string) bool {
		if code == "" {
			return true
		}
		if len(code) != 2 || code[0] == 'X' || code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z' {
			return false
		}
		for _, c := range spec.Countries {
			if c.Code == code {
				return true
			}
		}
		return false
	}
	var nets []locdbtest.Network
	for _, n := range spec.Networks {
		if valid(n.Country) {
			nets = append(nets, n)
		}
	}
	spec.Networks = nets
	return spec
}

// TestWriterMatchesReferenceTool checks that the fixture writer's files
// read the same with the reference tool as with this package, and that both
// agree with the fixture's own list.
func TestWriterMatchesReferenceTool(t *testing.T) {
	requireTool(t)
	r := rand.New(rand.NewPCG(7, 8))
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			spec := toolCompatible(fx.db())
			spec.PageAlign = fx.name == "main"
			path := locdbtest.WriteTemp(t, spec)
			db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.WaitIndex(context.Background()); err != nil {
				t.Fatal(err)
			}
			n := 600
			if len(spec.Networks) == 0 {
				n = 10 // every address costs the tool a run of its own
			}
			var addrs []netip.Addr
			skipped := 0
			for _, a := range randomAddrs(r, spec, n) {
				want, wok := naiveLookup(spec, a)
				if got, ok := db.Lookup(a); got != want || ok != wok {
					t.Fatalf("Lookup(%s) = %+v, %v; fixture says %+v, %v", a, got, ok, want, wok)
				}
				if a.Unmap().Is4() && wok && want.Prefix.Addr().Is6() {
					// An IPv6 network (such as ::/8) covers this IPv4
					// address: the tool fails to build that network for
					// IPv4 and aborts.
					skipped++
					continue
				}
				addrs = append(addrs, a)
			}
			if skipped > 0 {
				t.Logf("%d IPv4 addresses covered only by an IPv6 network left out", skipped)
			}
			found := crossCheck(t, db, path, addrs)
			t.Logf("%d addresses, %d found", len(addrs), found)
		})
	}
}

// TestWriterSignatureMatchesReferenceTool checks the writer's signatures
// with the reference tool's verify command.
func TestWriterSignatureMatchesReferenceTool(t *testing.T) {
	tool := requireTool(t)
	key, keyPath := locdbtest.GenerateKey(t)
	for _, slots := range [][2]*ecdsa.PrivateKey{{key, nil}, {nil, key}} {
		fx := mainFixture()
		fx.Signers = slots
		b := fixtureBytes(t, fx)
		path := writeBytes(t, b)
		if out, err := exec.Command(tool, "--quiet", "--database", path, "--public-key", keyPath, "verify").CombinedOutput(); err != nil {
			t.Errorf("reference tool rejects the signature (slot 1 set: %v): %v\n%s", slots[0] != nil, err, out)
		}
		b[len(b)-2] ^= 0x40
		tampered := writeBytes(t, b)
		if err := exec.Command(tool, "--quiet", "--database", tampered, "--public-key", keyPath, "verify").Run(); err == nil {
			t.Error("reference tool accepts a tampered file")
		}
	}
}

// TestRealDatabase opens the real database with its signature check and
// spot-checks the examples documented for it.
func TestRealDatabase(t *testing.T) {
	requireRealDB(t)
	if _, err := os.Stat(locdb.DefaultKeyPath); err != nil {
		t.Skipf("signing key not installed: %v", err)
	}
	// Run alone (-run 'TestRealDatabase$'), the first Open is the first in
	// the process: the figure a command-line user sees.
	start := time.Now()
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("opened without signature check in %v", time.Since(start))
	db.Close()
	start = time.Now()
	db, err = locdb.Open(locdb.Config{Path: locdb.DefaultPath})
	if err != nil {
		t.Fatalf("open with signature check: %v", err)
	}
	defer db.Close()
	t.Logf("opened and verified in %v; created %v; %d networks", time.Since(start), db.CreatedAt(), db.NetworkCount())
	tests := []struct {
		addr string
		want locdb.Network
	}{
		{"8.8.8.8", locdb.Network{Prefix: mustPrefix("8.8.8.0/24"), Country: "US", CountryName: "United States of America",
			Continent: "NA", ContinentName: "North America", ASN: 15169, ASName: "GOOGLE", Flags: locdb.FlagAnycast}},
		{"::ffff:8.8.8.8", locdb.Network{Prefix: mustPrefix("8.8.8.0/24"), Country: "US", CountryName: "United States of America",
			Continent: "NA", ContinentName: "North America", ASN: 15169, ASName: "GOOGLE", Flags: locdb.FlagAnycast}},
		{"2.57.171.5", locdb.Network{Prefix: mustPrefix("2.57.171.0/24"), Country: "BR", CountryName: "Brazil",
			Continent: "SA", ContinentName: "South America", ASN: 262287, Flags: locdb.FlagAnonymousProxy}},
		{"2001:4860:4860::8888", locdb.Network{Prefix: mustPrefix("2001:4860::/32"), Country: "US", CountryName: "United States of America",
			Continent: "NA", ContinentName: "North America", ASN: 15169, ASName: "GOOGLE"}},
		{"10.0.0.1", locdb.Network{}},
	}
	for _, tt := range tests {
		got, ok := db.Lookup(mustAddr(tt.addr))
		if ok != tt.want.Prefix.IsValid() || got != tt.want {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", tt.addr, got, ok, tt.want)
		}
	}
	if db.CreatedAt().Year() < 2020 || db.Vendor() == "" || db.License() == "" {
		t.Errorf("metadata: %v %q %q", db.CreatedAt(), db.Vendor(), db.License())
	}
}

// realSample returns addresses for the real-database cross-check: inside
// networks drawn uniformly from the trie, uniformly random IPv4, random IPv6
// in 2000::/3 and some IPv4-mapped ones.
func realSample(t *testing.T, db *locdb.DB, r *rand.Rand, inNetworks, v4, v6, mapped int) []netip.Addr {
	// Reservoir-sample whole networks while walking the trie once.
	var sample []netip.Prefix
	seen := 0
	for n := range db.Networks() {
		seen++
		if len(sample) < inNetworks {
			sample = append(sample, n.Prefix)
		} else if j := r.IntN(seen); j < inNetworks {
			sample[j] = n.Prefix
		}
	}
	t.Logf("trie holds %d networks (%d records)", seen, db.NetworkCount())
	if seen != db.NetworkCount() {
		t.Errorf("trie walk found %d networks, the file has %d records", seen, db.NetworkCount())
	}
	var out []netip.Addr
	for _, p := range sample {
		out = append(out, randomIn(r, p, false))
	}
	rand4 := func() netip.Addr {
		v := r.Uint32()
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	for range v4 {
		out = append(out, rand4())
	}
	for range v6 {
		out = append(out, randomIn(r, mustPrefix("2000::/3"), false))
	}
	for range mapped {
		out = append(out, netip.AddrFrom16(rand4().As16()))
	}
	return out
}

// TestCrossCheckRealDatabase compares every field of at least 20,000
// lookups on the real database with the reference tool.
func TestCrossCheckRealDatabase(t *testing.T) {
	requireTool(t)
	requireRealDB(t)
	start := time.Now()
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Cross-check the answers of the index (the trie walk is checked
	// against Lookup below).
	if err := db.WaitIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	if info := db.IndexInfo(); !info.V4 || !info.V6 {
		t.Fatalf("index not built: %+v", info)
	}
	r := rand.New(rand.NewPCG(2022, 10))
	addrs := realSample(t, db, r, 9000, 7000, 4000, 500)
	if len(addrs) < 20000 {
		t.Fatalf("only %d addresses", len(addrs))
	}
	// Make sure the sample exercises every field.
	var flags locdb.Flags
	var noName, noCountry, noASN, v6 int
	for _, a := range addrs {
		n, ok := db.Lookup(a)
		if !ok {
			continue
		}
		flags |= n.Flags
		if n.ASN != 0 && n.ASName == "" {
			noName++
		}
		if n.Country == "" {
			noCountry++
		}
		if n.ASN == 0 {
			noASN++
		}
		if n.Prefix.Addr().Is6() {
			v6++
		}
	}
	t.Logf("sample: flags seen %s; %d ASNs without a name, %d without country, %d without ASN, %d IPv6 networks",
		flags, noName, noCountry, noASN, v6)
	if flags&0xF != 0xF || noName == 0 || noASN == 0 || v6 == 0 {
		t.Errorf("sample misses a case: flags %s, %d unnamed ASNs, %d without ASN, %d IPv6", flags, noName, noASN, v6)
	}
	// LookupBatch and the plain walks agree with Lookup.
	batch := make([]locdb.Network, len(addrs))
	batchOK := make([]bool, len(addrs))
	db.LookupBatch(addrs, batch, batchOK)
	for i, a := range addrs {
		n, ok := db.Lookup(a)
		if batch[i] != n || batchOK[i] != ok {
			t.Fatalf("LookupBatch[%s] = %+v, %v; Lookup gave %+v, %v", a, batch[i], batchOK[i], n, ok)
		}
		if n2, ok2 := db.LookupFromRoot(a); n2 != n || ok2 != ok {
			t.Fatalf("LookupFromRoot(%s) = %+v, %v; Lookup gave %+v, %v", a, n2, ok2, n, ok)
		}
		if n2, ok2 := db.LookupNoIndex(a); n2 != n || ok2 != ok {
			t.Fatalf("LookupNoIndex(%s) = %+v, %v; Lookup gave %+v, %v", a, n2, ok2, n, ok)
		}
	}
	found := crossCheck(t, db, locdb.DefaultPath, addrs)
	t.Logf("cross-checked %d addresses (%d found) in %v", len(addrs), found, time.Since(start))
}
