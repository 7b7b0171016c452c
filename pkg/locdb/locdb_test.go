package locdb_test

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/internal/format"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

func TestLookup(t *testing.T) {
	us := func(p string, asn uint32, name string, f locdb.Flags) locdb.Network {
		return locdb.Network{Prefix: mustPrefix(p), Country: "US", CountryName: "United States of America",
			Continent: "NA", ContinentName: "North America", ASN: asn, ASName: name, Flags: f}
	}
	tests := []struct {
		fixture string
		addr    string
		want    locdb.Network // zero Prefix: not found
	}{
		// IPv4 longest-prefix match at /8, /16, /24, /32 and /31.
		{"main", "8.8.8.8", us("8.8.8.8/32", 15169, "GOOGLE", locdb.FlagAnycast|locdb.FlagDrop)},
		{"main", "8.8.8.9", us("8.8.8.0/24", 15169, "GOOGLE", locdb.FlagAnycast)},
		{"main", "8.8.4.4", us("8.8.0.0/16", 15169, "GOOGLE", 0)},
		{"main", "8.1.2.3", us("8.0.0.0/8", 3356, "", 0)}, // ASN without AS record
		{"main", "8.255.255.255", us("8.0.0.0/8", 3356, "", 0)},
		{"main", "8.8.9.1", locdb.Network{Prefix: mustPrefix("8.8.9.0/31"), Country: "JP", CountryName: "Japan",
			Continent: "AS", ContinentName: "Asia", ASN: 2500}}, // AS record with empty name
		{"main", "8.8.9.2", us("8.8.0.0/16", 15169, "GOOGLE", 0)},
		{"main", "2.57.171.5", locdb.Network{Prefix: mustPrefix("2.57.171.0/24"), Country: "BR", CountryName: "Brazil",
			Continent: "SA", ContinentName: "South America", ASN: 262287, Flags: locdb.FlagAnonymousProxy}},
		{"main", "1.1.1.1", locdb.Network{Prefix: mustPrefix("1.1.1.0/24"), Country: "AU", CountryName: "Australia",
			Continent: "OC", ContinentName: "Oceania", ASN: 13335, ASName: "CLOUDFLARENET", Flags: locdb.FlagAnycast}},
		// Unknown country and no ASN.
		{"main", "10.9.9.9", locdb.Network{Prefix: mustPrefix("10.0.0.0/8")}},
		// Dead ends at, below and above the jump-table depth fall back.
		{"main", "10.1.2.3", locdb.Network{Prefix: mustPrefix("10.0.0.0/8")}},
		{"main", "10.2.3.4", locdb.Network{Prefix: mustPrefix("10.0.0.0/8")}},
		{"main", "10.200.0.1", locdb.Network{Prefix: mustPrefix("10.0.0.0/8")}},
		{"main", "172.16.1.1", locdb.Network{}}, // dead end with nothing above
		{"main", "172.32.1.1", locdb.Network{}},
		// A code without a country record; satellite flag.
		{"main", "100.100.1.1", locdb.Network{Prefix: mustPrefix("100.64.0.0/10"), Country: "XX", Flags: locdb.FlagSatelliteProvider}},
		// All four flags.
		{"main", "192.0.2.77", locdb.Network{Prefix: mustPrefix("192.0.2.0/24"), Country: "DE", CountryName: "Germany",
			Continent: "EU", ContinentName: "Europe", ASN: 3320, ASName: "DTAG Internet service provider operations", Flags: 0xF}},
		// A country without a continent.
		{"main", "198.51.100.1", locdb.Network{Prefix: mustPrefix("198.51.100.0/24"), Country: "A1", CountryName: "Anonymous Proxy",
			ASN: 1, Flags: locdb.FlagAnonymousProxy}},
		{"main", "203.0.113.200", locdb.Network{Prefix: mustPrefix("203.0.113.128/25"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica", Flags: locdb.FlagDrop}},
		{"main", "203.0.113.1", locdb.Network{}},
		{"main", "41.31.0.1", locdb.Network{Prefix: mustPrefix("41.0.0.0/11"), Country: "ZA", CountryName: "South Africa",
			Continent: "AF", ContinentName: "Africa", ASN: 15169, ASName: "GOOGLE"}},
		{"main", "41.32.0.1", locdb.Network{}},
		{"main", "9.9.9.9", locdb.Network{}},
		{"main", "0.0.0.0", locdb.Network{}},
		{"main", "255.255.255.255", locdb.Network{}},
		// IPv4-mapped input is looked up and reported as IPv4.
		{"main", "::ffff:8.8.8.8", us("8.8.8.8/32", 15169, "GOOGLE", locdb.FlagAnycast|locdb.FlagDrop)},
		{"main", "::ffff:8.8.4.4", us("8.8.0.0/16", 15169, "GOOGLE", 0)},
		// IPv6 longest-prefix match, dead end, /128.
		{"main", "2001:db8::1", locdb.Network{Prefix: mustPrefix("2001:db8::/32"), Country: "DE", CountryName: "Germany",
			Continent: "EU", ContinentName: "Europe", ASN: 3320, ASName: "DTAG Internet service provider operations"}},
		{"main", "2001:db8:1::5", us("2001:db8:1::/48", 15169, "GOOGLE", locdb.FlagSatelliteProvider)},
		{"main", "2001:db8:1:2::1", locdb.Network{Prefix: mustPrefix("2001:db8:1:2::1/128"), Country: "JP", CountryName: "Japan",
			Continent: "AS", ContinentName: "Asia", Flags: locdb.FlagAnycast}},
		{"main", "2001:db8:1:2::2", us("2001:db8:1::/48", 15169, "GOOGLE", locdb.FlagSatelliteProvider)},
		{"main", "2001:db8:2::1", locdb.Network{Prefix: mustPrefix("2001:db8::/32"), Country: "DE", CountryName: "Germany",
			Continent: "EU", ContinentName: "Europe", ASN: 3320, ASName: "DTAG Internet service provider operations"}},
		{"main", "2001:db8:1::5%eth0", us("2001:db8:1::/48", 15169, "GOOGLE", locdb.FlagSatelliteProvider)},
		{"main", "2a0f:ffff::1", locdb.Network{Prefix: mustPrefix("2a00::/12"), Country: "DE", CountryName: "Germany",
			Continent: "EU", ContinentName: "Europe"}},
		{"main", "3000::1", locdb.Network{}},
		{"main", "::1", locdb.Network{}},
		{"main", "::", locdb.Network{}},
		{"main", "::8.8.8.8", locdb.Network{}}, // IPv4-compatible is plain IPv6
		// An IPv6 network above ::ffff:0:0/96 covers IPv4.
		{"cover", "1.2.3.4", locdb.Network{Prefix: mustPrefix("1.2.3.0/24"), Country: "AU", CountryName: "Australia",
			Continent: "OC", ContinentName: "Oceania", ASN: 13335, ASName: "CLOUDFLARENET"}},
		{"cover", "1.2.4.4", locdb.Network{Prefix: mustPrefix("::/8"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica", ASN: 2500}},
		{"cover", "9.9.9.9", locdb.Network{Prefix: mustPrefix("::/8"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica", ASN: 2500}},
		{"cover", "::ffff:200.1.1.1", locdb.Network{Prefix: mustPrefix("::/8"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica", ASN: 2500}},
		{"cover", "5.6.7.8", locdb.Network{Prefix: mustPrefix("5.0.0.0/8"), Country: "DE", CountryName: "Germany",
			Continent: "EU", ContinentName: "Europe"}},
		{"cover", "::1", locdb.Network{Prefix: mustPrefix("::/8"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica", ASN: 2500}},
		{"cover", "2001::1", locdb.Network{}},
		// Default routes.
		{"default", "5.6.7.8", locdb.Network{Prefix: mustPrefix("0.0.0.0/0"), Country: "ZA", CountryName: "South Africa",
			Continent: "AF", ContinentName: "Africa"}},
		{"default", "200.6.7.8", locdb.Network{Prefix: mustPrefix("128.0.0.0/1"), Country: "BR", CountryName: "Brazil",
			Continent: "SA", ContinentName: "South America"}},
		{"default", "2001::1", locdb.Network{Prefix: mustPrefix("2000::/3"), Country: "JP", CountryName: "Japan",
			Continent: "AS", ContinentName: "Asia"}},
		{"default", "fe80::1", locdb.Network{Prefix: mustPrefix("::/0"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica"}},
		// No IPv4 part in the trie at all.
		{"v6only", "8.8.8.8", locdb.Network{Prefix: mustPrefix("::/0"), Country: "AQ", CountryName: "Antarctica",
			Continent: "AN", ContinentName: "Antarctica"}},
		{"v6only", "2001:db8::8", locdb.Network{Prefix: mustPrefix("2001:db8::/32"), Country: "DE", CountryName: "Germany",
			Continent: "EU", ContinentName: "Europe"}},
		{"empty", "8.8.8.8", locdb.Network{}},
		{"empty", "2001:db8::8", locdb.Network{}},
	}
	dbs := map[string]*locdb.DB{}
	for _, fx := range fixtures {
		dbs[fx.name] = openFixture(t, fx.db())
	}
	for _, tt := range tests {
		t.Run(tt.fixture+"/"+tt.addr, func(t *testing.T) {
			db := dbs[tt.fixture]
			addr := mustAddr(tt.addr)
			got, ok := db.Lookup(addr)
			if ok != tt.want.Prefix.IsValid() || got != tt.want {
				t.Errorf("Lookup(%s) = %+v, %v; want %+v", addr, got, ok, tt.want)
			}
			if got2, ok2 := db.LookupFromRoot(addr); got2 != got || ok2 != ok {
				t.Errorf("LookupFromRoot(%s) = %+v, %v; Lookup gave %+v", addr, got2, ok2, got)
			}
			if got2, ok2 := db.LookupNoIndex(addr); got2 != got || ok2 != ok {
				t.Errorf("LookupNoIndex(%s) = %+v, %v; Lookup gave %+v", addr, got2, ok2, got)
			}
			if addr.Is4() {
				if got2, ok2 := db.LookupWalk(addr); got2 != got || ok2 != ok {
					t.Errorf("LookupWalk(%s) = %+v, %v; Lookup gave %+v", addr, got2, ok2, got)
				}
			}
		})
	}
}

// TestLookupMatchesNaive compares Lookup, the plain walks and a linear
// longest-prefix match over random addresses on every fixture.
func TestLookupMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			spec := fx.db()
			db := openFixture(t, spec)
			n := 20000
			if len(spec.Networks) > 100 {
				n = 5000 // the naive match is linear
			}
			addrs := randomAddrs(r, spec, n)
			batch := make([]locdb.Network, len(addrs))
			batchOK := make([]bool, len(addrs))
			db.LookupBatch(addrs, batch, batchOK)
			for i, addr := range addrs {
				want, wok := naiveLookup(spec, addr)
				got, ok := db.Lookup(addr)
				if ok != wok || got != want {
					t.Fatalf("Lookup(%s) = %+v, %v; naive %+v, %v", addr, got, ok, want, wok)
				}
				if got2, ok2 := db.LookupFromRoot(addr); got2 != got || ok2 != ok {
					t.Fatalf("LookupFromRoot(%s) = %+v, %v; Lookup gave %+v", addr, got2, ok2, got)
				}
				if got2, ok2 := db.LookupNoIndex(addr); got2 != got || ok2 != ok {
					t.Fatalf("LookupNoIndex(%s) = %+v, %v; Lookup gave %+v", addr, got2, ok2, got)
				}
				if batch[i] != got || batchOK[i] != ok {
					t.Fatalf("LookupBatch[%s] = %+v, %v; Lookup gave %+v", addr, batch[i], batchOK[i], got)
				}
			}
		})
	}
}

// TestLookupWithoutJumpTable covers databases whose networks do not fit
// jump entries: without the index, IPv4 lookups then walk from the
// ::ffff:0:0/96 node.
func TestLookupWithoutJumpTable(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			spec := fx.db()
			db := openFixtureConfig(t, spec, locdb.Config{NoIndex: true})
			db.DropJumpTable()
			addrs := randomAddrs(r, spec, 3000)
			out := make([]locdb.Network, len(addrs))
			found := make([]bool, len(addrs))
			db.LookupBatch(addrs, out, found)
			for i, a := range addrs {
				want, wok := naiveLookup(spec, a)
				if got, ok := db.Lookup(a); got != want || ok != wok {
					t.Fatalf("Lookup(%s) = %+v, %v; want %+v, %v", a, got, ok, want, wok)
				}
				if out[i] != want || found[i] != wok {
					t.Fatalf("LookupBatch[%s] = %+v, %v; want %+v, %v", a, out[i], found[i], want, wok)
				}
			}
		})
	}
}

// TestUnsortedAS reverses the AS section: names must still be found.
func TestUnsortedAS(t *testing.T) {
	spec := bigFixture()
	b := fixtureBytes(t, spec)
	start, length := binary.BigEndian.Uint32(b[format.OffAS:]), binary.BigEndian.Uint32(b[format.OffAS+4:])
	sec := b[start : start+length]
	n := len(sec) / format.ASSize
	for i := range n / 2 {
		j := n - 1 - i
		var tmp [format.ASSize]byte
		copy(tmp[:], sec[i*format.ASSize:])
		copy(sec[i*format.ASSize:(i+1)*format.ASSize], sec[j*format.ASSize:(j+1)*format.ASSize])
		copy(sec[j*format.ASSize:], tmp[:])
	}
	db, err := locdb.Open(locdb.Config{Path: writeBytes(t, b), SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, n := range spec.Networks {
		want := expected(spec, n)
		got, ok := db.Lookup(n.Prefix.Addr())
		if !ok || got.Prefix != want.Prefix {
			continue // a more specific network covers the first address
		}
		if got.ASName != want.ASName {
			t.Errorf("%s: AS%d name %q, want %q", n.Prefix, got.ASN, got.ASName, want.ASName)
		}
	}
}

func TestLookupInvalidAddr(t *testing.T) {
	db := openFixture(t, defaultFixture()) // every valid address matches
	if n, ok := db.Lookup(netip.Addr{}); ok || n != (locdb.Network{}) {
		t.Errorf("Lookup(zero Addr) = %+v, %v", n, ok)
	}
	out := []locdb.Network{{ASN: 1}, {ASN: 1}}
	found := []bool{true, false}
	db.LookupBatch([]netip.Addr{{}, mustAddr("1.2.3.4")}, out, found)
	if found[0] || out[0] != (locdb.Network{}) || !found[1] {
		t.Errorf("LookupBatch(zero Addr, 1.2.3.4) = %+v, %v", out, found)
	}
}

func TestLookupBatchShortOutput(t *testing.T) {
	db := openFixture(t, mainFixture())
	defer func() {
		if recover() == nil {
			t.Error("LookupBatch with a short output slice did not panic")
		}
	}()
	db.LookupBatch(make([]netip.Addr, 3), make([]locdb.Network, 2), make([]bool, 3))
}

func TestLookupAllocs(t *testing.T) {
	for _, noIndex := range []bool{false, true} {
		db := openFixtureConfig(t, mainFixture(), locdb.Config{NoIndex: noIndex})
		addrs := []netip.Addr{mustAddr("8.8.8.8"), mustAddr("2001:db8:1::5"), mustAddr("9.9.9.9"),
			mustAddr("::ffff:2.57.171.5"), mustAddr("3000::1"), mustAddr("2001:db8:1:2::1"), mustAddr("::1")}
		var sink locdb.Network
		allocs := testing.AllocsPerRun(1000, func() {
			for _, a := range addrs {
				n, _ := db.Lookup(a)
				sink = n
			}
		})
		_ = sink
		if allocs != 0 {
			t.Errorf("NoIndex %v: Lookup allocates %.1f times per run", noIndex, allocs)
		}
		out := make([]locdb.Network, len(addrs))
		found := make([]bool, len(addrs))
		if allocs := testing.AllocsPerRun(1000, func() { db.LookupBatch(addrs, out, found) }); allocs != 0 {
			t.Errorf("NoIndex %v: LookupBatch allocates %.1f times per run", noIndex, allocs)
		}
	}
}

func TestNetworks(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			spec := fx.db()
			db := openFixture(t, spec)
			want := map[netip.Prefix]locdb.Network{}
			for _, n := range spec.Networks {
				want[fixturePrefix(n.Prefix)] = expected(spec, n)
			}
			got := map[netip.Prefix]locdb.Network{}
			var prev netip.Prefix
			for n := range db.Networks() {
				if _, dup := got[n.Prefix]; dup {
					t.Errorf("network %s yielded twice", n.Prefix)
				}
				got[n.Prefix] = n
				prev = n.Prefix
			}
			_ = prev
			if len(got) != len(want) {
				t.Errorf("Networks yielded %d networks, want %d", len(got), len(want))
			}
			for p, w := range want {
				if got[p] != w {
					t.Errorf("network %s: got %+v, want %+v", p, got[p], w)
				}
			}
			if db.NetworkCount() != len(spec.Networks) {
				t.Errorf("NetworkCount = %d, want %d", db.NetworkCount(), len(spec.Networks))
			}
			// Stopping early is honoured.
			count := 0
			for range db.Networks() {
				count++
				break
			}
			if len(want) > 0 && count != 1 {
				t.Errorf("break after first network: %d yielded", count)
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	db := openFixture(t, mainFixture())
	if got, want := db.CreatedAt(), time.Date(2022, 10, 29, 5, 59, 54, 0, time.UTC); !got.Equal(want) {
		t.Errorf("CreatedAt = %v, want %v", got, want)
	}
	if db.Vendor() != "STYX test" || db.Description() != "main fixture" || db.License() != "CC BY-SA 4.0" {
		t.Errorf("Vendor, Description, License = %q, %q, %q", db.Vendor(), db.Description(), db.License())
	}
}

func TestCloseAndStrings(t *testing.T) {
	path := locdbtest.WriteTemp(t, mainFixture())
	db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	n, ok := db.Lookup(mustAddr("8.8.8.8"))
	if !ok {
		t.Fatal("8.8.8.8 not found")
	}
	n = n.Clone()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// Strings outlive the mapping (ASName once cloned).
	if n.ASName != "GOOGLE" || n.CountryName != "United States of America" || n.Country != "US" {
		t.Errorf("after Close: %+v", n)
	}
	if got, ok := db.Lookup(mustAddr("8.8.8.8")); ok {
		t.Errorf("Lookup after Close = %+v, true", got)
	}
	out, found := make([]locdb.Network, 1), make([]bool, 1)
	if db.LookupBatch([]netip.Addr{mustAddr("8.8.8.8")}, out, found); found[0] {
		t.Errorf("LookupBatch after Close = %+v, true", out[0])
	}
	for range db.Networks() {
		t.Error("Networks after Close yielded")
	}
}

func TestConcurrentLookups(t *testing.T) {
	spec := mainFixture()
	db := openFixture(t, spec)
	addrs := randomAddrs(rand.New(rand.NewPCG(3, 4)), spec, 2000)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for _, a := range addrs {
				want, wok := naiveLookup(spec, a)
				if got, ok := db.Lookup(a); got != want || ok != wok {
					t.Errorf("Lookup(%s) = %+v, want %+v", a, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestConfigValidate(t *testing.T) {
	if err := (locdb.Config{}).Validate(); err == nil {
		t.Error("empty Config validates")
	}
	if _, err := locdb.Open(locdb.Config{}); err == nil {
		t.Error("Open(empty Config) succeeds")
	}
	if err := (locdb.Config{Path: "x"}).Validate(); err != nil {
		t.Errorf("Config{Path: x}: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := locdb.Open(locdb.Config{Path: filepath.Join(dir, "missing.db"), SkipVerify: true}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := locdb.Open(locdb.Config{Path: dir, SkipVerify: true}); err == nil || errors.Is(err, locdb.ErrCorrupt) {
		t.Errorf("directory: %v, want a non-corruption error", err)
	}
	fifo := filepath.Join(dir, "fifo.db")
	if err := syscall.Mkfifo(fifo, 0o600); err == nil {
		if _, err := locdb.Open(locdb.Config{Path: fifo, SkipVerify: true}); err == nil {
			t.Error("FIFO opened")
		}
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := locdb.Open(locdb.Config{Path: empty, SkipVerify: true}); !errors.Is(err, locdb.ErrCorrupt) {
		t.Errorf("empty file: %v, want ErrCorrupt", err)
	}
}
