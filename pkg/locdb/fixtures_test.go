package locdb_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

var (
	mustPrefix = netip.MustParsePrefix
	mustAddr   = netip.MustParseAddr
)

var fixtureCountries = []locdbtest.Country{
	{Code: "US", Continent: "NA", Name: "United States of America"},
	{Code: "BR", Continent: "SA", Name: "Brazil"},
	{Code: "DE", Continent: "EU", Name: "Germany"},
	{Code: "AU", Continent: "OC", Name: "Australia"},
	{Code: "AQ", Continent: "AN", Name: "Antarctica"},
	{Code: "ZA", Continent: "AF", Name: "South Africa"},
	{Code: "JP", Continent: "AS", Name: "Japan"},
	{Code: "A1", Name: "Anonymous Proxy"}, // no continent
}

var fixtureASes = []locdbtest.AS{
	{Number: 15169, Name: "GOOGLE"},
	{Number: 13335, Name: "CLOUDFLARENET"},
	{Number: 3320, Name: "DTAG Internet service provider operations"},
	{Number: 2500, Name: ""}, // a record with an empty name
}

// mainFixture has IPv4 and IPv6 networks nested at many depths, dead ends
// above, at and below the IPv4 jump-table depth, and every odd record.
func mainFixture() *locdbtest.Database {
	return &locdbtest.Database{
		CreatedAt:   time.Date(2022, 10, 29, 5, 59, 54, 0, time.UTC),
		Vendor:      "STYX test",
		Description: "main fixture",
		License:     "CC BY-SA 4.0",
		Countries:   fixtureCountries,
		ASes:        fixtureASes,
		Networks: []locdbtest.Network{
			{Prefix: mustPrefix("8.0.0.0/8"), Country: "US", ASN: 3356}, // AS without record
			{Prefix: mustPrefix("8.8.0.0/16"), Country: "US", ASN: 15169},
			{Prefix: mustPrefix("8.8.8.0/24"), Country: "US", ASN: 15169, Flags: locdb.FlagAnycast},
			{Prefix: mustPrefix("8.8.8.8/32"), Country: "US", ASN: 15169, Flags: locdb.FlagAnycast | locdb.FlagDrop},
			{Prefix: mustPrefix("8.8.9.0/31"), Country: "JP", ASN: 2500},
			{Prefix: mustPrefix("2.57.171.0/24"), Country: "BR", ASN: 262287, Flags: locdb.FlagAnonymousProxy},
			{Prefix: mustPrefix("1.1.1.0/24"), Country: "AU", ASN: 13335, Flags: locdb.FlagAnycast},
			{Prefix: mustPrefix("10.0.0.0/8")},                                                       // no country, no ASN
			{Prefix: mustPrefix("100.64.0.0/10"), Country: "XX", Flags: locdb.FlagSatelliteProvider}, // code without record
			{Prefix: mustPrefix("192.0.2.0/24"), Country: "DE", ASN: 3320, Flags: 0xF},
			{Prefix: mustPrefix("198.51.100.0/24"), Country: "A1", ASN: 1, Flags: locdb.FlagAnonymousProxy},
			{Prefix: mustPrefix("203.0.113.128/25"), Country: "AQ", Flags: locdb.FlagDrop},
			{Prefix: mustPrefix("41.0.0.0/11"), Country: "ZA", ASN: 15169},
			{Prefix: mustPrefix("2001:db8::/32"), Country: "DE", ASN: 3320},
			{Prefix: mustPrefix("2001:db8:1::/48"), Country: "US", ASN: 15169, Flags: locdb.FlagSatelliteProvider},
			{Prefix: mustPrefix("2001:db8:1:2::1/128"), Country: "JP", Flags: locdb.FlagAnycast},
			{Prefix: mustPrefix("2a00::/12"), Country: "DE"},
			{Prefix: mustPrefix("2c0f:f000::/20"), Country: "ZA", ASN: 13335, Flags: locdb.FlagDrop},
		},
		DeadEnds: []netip.Prefix{
			mustPrefix("10.1.0.0/16"),     // ends exactly at the jump-table depth
			mustPrefix("10.2.3.0/24"),     // ends below it
			mustPrefix("10.128.0.0/9"),    // ends above it
			mustPrefix("172.16.0.0/12"),   // no network above: not found
			mustPrefix("2001:db8:2::/48"), // IPv6, under 2001:db8::/32
			mustPrefix("3000::/16"),       // IPv6, nothing above
		},
	}
}

// coverFixture has an IPv6 network above ::ffff:0:0/96 that covers IPv4.
func coverFixture() *locdbtest.Database {
	return &locdbtest.Database{
		Countries: fixtureCountries,
		ASes:      fixtureASes,
		Networks: []locdbtest.Network{
			{Prefix: mustPrefix("::/8"), Country: "AQ", ASN: 2500},
			{Prefix: mustPrefix("1.2.3.0/24"), Country: "AU", ASN: 13335},
			{Prefix: mustPrefix("::ffff:5.0.0.0/104"), Country: "DE"}, // IPv4-mapped form of 5.0.0.0/8
		},
		DeadEnds: []netip.Prefix{mustPrefix("9.9.0.0/16")},
	}
}

// defaultFixture has default routes for both families.
func defaultFixture() *locdbtest.Database {
	return &locdbtest.Database{
		Countries: fixtureCountries,
		Networks: []locdbtest.Network{
			{Prefix: mustPrefix("::/0"), Country: "AQ"},
			{Prefix: mustPrefix("0.0.0.0/0"), Country: "ZA"},
			{Prefix: mustPrefix("2000::/3"), Country: "JP"},
			{Prefix: mustPrefix("128.0.0.0/1"), Country: "BR"},
		},
	}
}

// v6OnlyFixture has no ::ffff:0:0/96 path; ::/0 must still answer IPv4.
func v6OnlyFixture() *locdbtest.Database {
	return &locdbtest.Database{
		Countries: fixtureCountries,
		Networks: []locdbtest.Network{
			{Prefix: mustPrefix("::/0"), Country: "AQ"},
			{Prefix: mustPrefix("2001:db8::/32"), Country: "DE"},
		},
	}
}

// emptyFixture has only a root node.
func emptyFixture() *locdbtest.Database { return &locdbtest.Database{} }

var fixtures = []struct {
	name string
	db   func() *locdbtest.Database
}{
	{"main", mainFixture},
	{"cover", coverFixture},
	{"default", defaultFixture},
	{"v6only", v6OnlyFixture},
	{"empty", emptyFixture},
	{"big", bigFixture},
}

// openFixture opens fixture fx and waits for its lookup index.
func openFixture(tb testing.TB, fx *locdbtest.Database) *locdb.DB {
	tb.Helper()
	return openFixtureConfig(tb, fx, locdb.Config{})
}

// openFixtureConfig opens fixture fx with cfg (Path and SkipVerify set) and
// waits for its lookup index.
func openFixtureConfig(tb testing.TB, fx *locdbtest.Database, cfg locdb.Config) *locdb.DB {
	tb.Helper()
	cfg.Path, cfg.SkipVerify = locdbtest.WriteTemp(tb, fx), true
	db, err := locdb.Open(cfg)
	if err != nil {
		tb.Fatalf("open fixture: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.WaitIndex(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return db
}

// fixturePrefix is how a fixture network is reported: IPv4 for IPv4 and
// IPv4-mapped (/96 and longer) prefixes.
func fixturePrefix(p netip.Prefix) netip.Prefix {
	p = p.Masked()
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p
}

// naiveLookup is the obvious longest-prefix match over the fixture's list.
func naiveLookup(fx *locdbtest.Database, addr netip.Addr) (locdb.Network, bool) {
	mapped := addr
	if addr.Is4() {
		mapped = netip.AddrFrom16(addr.As16())
	}
	mapped = mapped.WithZone("")
	best, bestBits := -1, -1
	for i, n := range fx.Networks {
		p := n.Prefix.Masked()
		if p.Addr().Is4() {
			p = netip.PrefixFrom(netip.AddrFrom16(p.Addr().As16()), p.Bits()+96)
		}
		if p.Contains(mapped) && p.Bits() > bestBits {
			best, bestBits = i, p.Bits()
		}
	}
	if best < 0 {
		return locdb.Network{}, false
	}
	return expected(fx, fx.Networks[best]), true
}

// expected is the Network a lookup should report for fixture network n.
func expected(fx *locdbtest.Database, n locdbtest.Network) locdb.Network {
	out := locdb.Network{Prefix: fixturePrefix(n.Prefix), Country: n.Country, ASN: n.ASN, Flags: n.Flags}
	for _, c := range fx.Countries {
		if c.Code == n.Country {
			out.CountryName, out.Continent, out.ContinentName = c.Name, c.Continent, locdb.ContinentName(c.Continent)
		}
	}
	for _, a := range fx.ASes {
		if a.Number == n.ASN {
			out.ASName = a.Name
		}
	}
	return out
}

// randomAddrs returns n addresses that probe fixture fx: inside and around
// its networks and dead ends, plus random IPv4, IPv6 and IPv4-mapped ones.
func randomAddrs(r *rand.Rand, fx *locdbtest.Database, n int) []netip.Addr {
	var prefixes []netip.Prefix
	for _, nw := range fx.Networks {
		prefixes = append(prefixes, nw.Prefix)
	}
	prefixes = append(prefixes, fx.DeadEnds...)
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		switch k := r.IntN(10); {
		case k < 5 && len(prefixes) > 0:
			p := prefixes[r.IntN(len(prefixes))].Masked()
			// Keep the prefix, randomise the rest; sometimes flip a bit
			// just above it to land next to the network.
			extra := r.IntN(3)
			out = append(out, randomIn(r, p, extra == 0))
		case k < 7:
			out = append(out, netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}))
		case k < 8:
			a := netip.AddrFrom4([4]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
			out = append(out, netip.AddrFrom16(a.As16()))
		default:
			var b [16]byte
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if r.IntN(2) == 0 {
				b[0] = 0x20 | b[0]&0x1f
			}
			out = append(out, netip.AddrFrom16(b))
		}
	}
	return out
}

// randomIn returns a random address inside p; with flip, the bit just
// above the prefix's end is flipped so the address falls beside p.
func randomIn(r *rand.Rand, p netip.Prefix, flip bool) netip.Addr {
	a := p.Addr()
	b := a.As16()
	start := p.Bits()
	if a.Is4() {
		start += 96
	}
	for bit := start; bit < 128; bit++ {
		if r.IntN(2) == 1 {
			b[bit/8] |= 0x80 >> (bit % 8)
		}
	}
	if flip && start > 0 && (!a.Is4() || start > 96) {
		bit := start - 1
		b[bit/8] ^= 0x80 >> (bit % 8)
	}
	out := netip.AddrFrom16(b)
	if a.Is4() {
		out = out.Unmap()
	}
	return out
}

// bigFixture is shaped like the real database, in small: many nested IPv4
// and IPv6 networks of all lengths, page-aligned sections, ASNs with and
// without names, networks without country, every flag, dead ends.
func bigFixture() *locdbtest.Database {
	r := rand.New(rand.NewPCG(11, 12))
	fx := &locdbtest.Database{
		CreatedAt: time.Date(2022, 10, 29, 0, 0, 0, 0, time.UTC),
		Vendor:    "STYX test", Description: "real-shaped fixture", License: "CC BY-SA 4.0",
		Countries: fixtureCountries,
		PageAlign: true,
	}
	for i := range 300 {
		fx.ASes = append(fx.ASes, locdbtest.AS{Number: uint32(i*97 + 1), Name: fmt.Sprintf("AS-NAME-%d", i)})
	}
	seen := map[netip.Prefix]bool{}
	add := func(p netip.Prefix) {
		p = p.Masked()
		if seen[p] {
			return
		}
		seen[p] = true
		n := locdbtest.Network{Prefix: p, Flags: locdb.Flags(r.IntN(16))}
		if r.IntN(10) > 0 {
			n.Country = fixtureCountries[r.IntN(len(fixtureCountries))].Code
		}
		if r.IntN(8) > 0 {
			n.ASN = uint32(r.IntN(400)*97 + 1) // some have no AS record
		}
		fx.Networks = append(fx.Networks, n)
	}
	var parents []netip.Prefix
	for range 1500 {
		var p netip.Prefix
		if len(parents) > 0 && r.IntN(2) == 0 {
			// Nest inside an earlier network.
			parent := parents[r.IntN(len(parents))]
			max := 32
			if parent.Addr().Is6() {
				max = 128
			}
			if parent.Bits() >= max {
				continue
			}
			bits := parent.Bits() + 1 + r.IntN(min(max-parent.Bits(), 16))
			p = netip.PrefixFrom(randomIn(r, parent, false), bits)
		} else if r.IntN(4) > 0 {
			v := r.Uint32()
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 8+r.IntN(25))
		} else {
			p = netip.PrefixFrom(randomIn(r, mustPrefix("2000::/3"), false), 16+r.IntN(49))
		}
		add(p)
		parents = append(parents, p.Masked())
	}
	for range 100 {
		parent := parents[r.IntN(len(parents))]
		max := 32
		if parent.Addr().Is6() {
			max = 128
		}
		if parent.Bits() < max {
			fx.DeadEnds = append(fx.DeadEnds, netip.PrefixFrom(randomIn(r, parent, false), parent.Bits()+1+r.IntN(max-parent.Bits())))
		}
	}
	return fx
}
