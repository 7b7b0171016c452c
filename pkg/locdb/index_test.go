package locdb_test

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

// edgesFixture puts networks where the index is easy to get wrong: at both
// ends of each address space, in runs of equal neighbours (which the index
// merges) and of equal attributes but different lengths (which it must
// not), across the boundaries of its top table and node levels, down to
// /32, and in IPv6 below the depth where the index hands over to the walk.
func edgesFixture() *locdbtest.Database {
	fx := &locdbtest.Database{
		Countries: fixtureCountries,
		ASes:      fixtureASes,
		Networks: []locdbtest.Network{
			{Prefix: mustPrefix("0.0.0.0/32"), Country: "US", ASN: 15169},
			{Prefix: mustPrefix("0.0.0.1/32"), Country: "US", ASN: 15169}, // merges with 0.0.0.0/32
			{Prefix: mustPrefix("0.0.0.2/31"), Country: "US", ASN: 15169}, // same attributes, shorter
			{Prefix: mustPrefix("255.255.255.0/24"), Country: "DE", ASN: 3320},
			{Prefix: mustPrefix("255.255.255.255/32"), Country: "DE", ASN: 3320},
			{Prefix: mustPrefix("30.0.0.0/30"), Country: "US"},
			{Prefix: mustPrefix("30.0.0.4/30"), Country: "DE"},
			{Prefix: mustPrefix("30.0.0.8/31"), Country: "JP"},
			{Prefix: mustPrefix("30.0.0.10/32"), Country: "US"},
			{Prefix: mustPrefix("30.0.0.64/26"), Country: "AU", Flags: locdb.FlagAnycast},
			{Prefix: mustPrefix("30.0.0.255/32"), Country: "BR"},
			{Prefix: mustPrefix("40.0.0.0/6"), Country: "ZA"},
			{Prefix: mustPrefix("41.0.0.0/8"), Country: "ZA", ASN: 13335},
			{Prefix: mustPrefix("41.128.0.0/9"), Country: "ZA", ASN: 13335, Flags: locdb.FlagDrop},
			{Prefix: mustPrefix("41.200.0.0/16"), Country: "JP"},
			{Prefix: mustPrefix("41.200.100.0/24"), Country: "JP", ASN: 2500},
			{Prefix: mustPrefix("41.200.100.48/28"), Country: "A1"},
			{Prefix: mustPrefix("41.200.100.50/32"), Country: "AQ"},
			{Prefix: mustPrefix("50.0.0.0/24"), Country: "US", ASN: 15169},
			{Prefix: mustPrefix("50.0.1.0/25"), Country: "US", ASN: 15169},
			{Prefix: mustPrefix("64.0.0.0/6"), Country: "BR"},
			{Prefix: mustPrefix("68.0.0.0/12"), Country: "BR"},
			{Prefix: mustPrefix("128.0.0.0/1"), Country: "XX"},
			{Prefix: mustPrefix("2001:db8::/60"), Country: "DE"},
			{Prefix: mustPrefix("2001:db8::/61"), Country: "US"},
			{Prefix: mustPrefix("2001:db8:0:8::/61"), Country: "JP"},
			{Prefix: mustPrefix("2001:db8:0:8::1/128"), Country: "JP", ASN: 2500},
			{Prefix: mustPrefix("2001:db8:0:10::/60"), Country: "DE"},
			{Prefix: mustPrefix("2001:db8:0:20::/59"), Country: "DE"},
			{Prefix: mustPrefix("2001:db8:0:40::/64"), Country: "AU"},
			{Prefix: mustPrefix("::1/128"), Country: "AQ"},
			{Prefix: mustPrefix("::/64"), Country: "ZA"},
			{Prefix: mustPrefix("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), Country: "BR"},
			{Prefix: mustPrefix("fff0::/12"), Country: "BR"},
		},
		DeadEnds: []netip.Prefix{
			mustPrefix("130.0.0.0/16"),    // under 128.0.0.0/1
			mustPrefix("150.0.0.0/20"),    // under 128.0.0.0/1
			mustPrefix("30.0.0.12/30"),    // nothing above
			mustPrefix("2001:db9::/70"),   // past the IPv6 key, nothing above
			mustPrefix("2001:db8::4/126"), // past the IPv6 key, under 2001:db8::/61
		},
	}
	// A run of equal /24s across a node boundary (20.0.0.0/18), and one of
	// equal /48s.
	for i := range 70 {
		fx.Networks = append(fx.Networks, locdbtest.Network{
			Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{20, 0, byte(i), 0}), 24), Country: "AU", ASN: 13335})
		fx.Networks = append(fx.Networks, locdbtest.Network{
			Prefix: netip.PrefixFrom(netip.AddrFrom16([16]byte{0x2a, 0x00, 0, 0, 0, byte(i)}), 48), Country: "DE"})
	}
	return fx
}

// indexFixtures are the fixtures plus edgesFixture.
var indexFixtures = append([]struct {
	name string
	db   func() *locdbtest.Database
}{{"edges", edgesFixture}}, fixtures...)

// boundaryAddrs returns, for every prefix, its first and last address and
// the addresses just outside it, in both forms for IPv4.
func boundaryAddrs(prefixes []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		if !a.IsValid() {
			return // stepped past either end of the address space
		}
		out = append(out, a)
		if a.Is4() {
			out = append(out, netip.AddrFrom16(a.As16()))
		}
	}
	for _, p := range prefixes {
		p = p.Masked()
		first := p.Addr()
		last := lastAddr(p)
		add(first)
		add(last)
		add(first.Prev())
		add(last.Next())
	}
	return out
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for bit := p.Bits(); bit < len(b)*8; bit++ {
		b[bit/8] |= 0x80 >> (bit % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// checkIndex compares Lookup (through the index) with the trie walks on
// addrs, and with want when not nil.
func checkIndex(t *testing.T, db *locdb.DB, addrs []netip.Addr, want func(netip.Addr) (locdb.Network, bool)) {
	t.Helper()
	for _, a := range addrs {
		got, ok := db.Lookup(a)
		if n, nok := db.LookupNoIndex(a); n != got || nok != ok {
			t.Fatalf("Lookup(%s) = %+v, %v; without the index %+v, %v", a, got, ok, n, nok)
		}
		if n, nok := db.LookupFromRoot(a); n != got || nok != ok {
			t.Fatalf("Lookup(%s) = %+v, %v; from the root %+v, %v", a, got, ok, n, nok)
		}
		if want != nil {
			if n, nok := want(a); n != got || nok != ok {
				t.Fatalf("Lookup(%s) = %+v, %v; want %+v, %v", a, got, ok, n, nok)
			}
		}
	}
}

// TestIndexMatchesWalk compares the index with the trie walk and the
// naive match on every fixture: at the boundaries of every network and dead
// end, and at random.
func TestIndexMatchesWalk(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, fx := range indexFixtures {
		t.Run(fx.name, func(t *testing.T) {
			spec := fx.db()
			db := openFixture(t, spec)
			info := db.IndexInfo()
			t.Logf("index: %+v", info)
			if !info.V6 {
				t.Errorf("no IPv6 index: %+v", info)
			}
			if has4 := fx.name != "v6only" && fx.name != "empty"; info.V4 != has4 {
				t.Errorf("IPv4 index %v, want %v", info.V4, has4)
			}
			prefixes := append([]netip.Prefix(nil), spec.DeadEnds...)
			for _, n := range spec.Networks {
				prefixes = append(prefixes, n.Prefix)
			}
			addrs := boundaryAddrs(prefixes)
			addrs = append(addrs, mustAddr("0.0.0.0"), mustAddr("255.255.255.255"), mustAddr("::"),
				mustAddr("::1"), mustAddr("::ffff:0:0"), mustAddr("::fffe:ffff:ffff"), mustAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
			n := 5000
			if len(spec.Networks) > 100 {
				n = 2000 // the naive match is linear
			}
			addrs = append(addrs, randomAddrs(r, spec, n)...)
			checkIndex(t, db, addrs, func(a netip.Addr) (locdb.Network, bool) { return naiveLookup(spec, a) })

			out := make([]locdb.Network, len(addrs))
			found := make([]bool, len(addrs))
			db.LookupBatch(addrs, out, found)
			for i, a := range addrs {
				if n, ok := db.Lookup(a); out[i] != n || found[i] != ok {
					t.Fatalf("LookupBatch[%s] = %+v, %v; Lookup gave %+v, %v", a, out[i], found[i], n, ok)
				}
			}
		})
	}
}

// TestIndexRealDatabase compares the index with the trie walk on the real
// database: at the boundaries of one network in 16 (256 with -short),
// inside networks and at random in both families.
func TestIndexRealDatabase(t *testing.T) {
	requireRealDB(t)
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.WaitIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	info := db.IndexInfo()
	t.Logf("index: %.1f MiB, %d tuples, built in %v", float64(info.Bytes)/(1<<20), info.Tuples, info.Took)
	if !info.V4 || !info.V6 {
		t.Fatalf("index not built: %+v", info)
	}
	every := 16
	if testing.Short() {
		every = 256
	}
	r := rand.New(rand.NewPCG(15, 16))
	var prefixes []netip.Prefix
	var addrs []netip.Addr
	i := 0
	for n := range db.Networks() {
		if i++; i%every == 0 {
			prefixes = append(prefixes, n.Prefix)
			addrs = append(addrs, randomIn(r, n.Prefix, false))
		}
	}
	addrs = append(addrs, boundaryAddrs(prefixes)...)
	for range 1 << 22 / every {
		v := r.Uint32()
		addrs = append(addrs, netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}))
	}
	for range 1 << 20 / every {
		addrs = append(addrs, randomIn(r, mustPrefix("2000::/3"), false))
	}
	for _, p := range []string{"::/64", "::/8", "fe80::/10", "ff00::/8", "::ffff:0:0/96", "64:ff9b::/96"} {
		for range 100 {
			addrs = append(addrs, randomIn(r, mustPrefix(p), false))
		}
	}
	start := time.Now()
	checkIndex(t, db, addrs, nil)
	t.Logf("%d addresses checked in %v", len(addrs), time.Since(start))
}

// TestIndexConcurrentBuild looks up addresses while the index is built and
// published (on the real database, whose build takes long enough to
// overlap, or else on the big fixture): every answer must be the walk's, and
// -race must stay quiet.
func TestIndexConcurrentBuild(t *testing.T) {
	spec := bigFixture()
	path, rounds := locdb.DefaultPath, 1
	if _, err := os.Stat(path); err != nil {
		path, rounds = locdbtest.WriteTemp(t, spec), 5
	}
	r := rand.New(rand.NewPCG(17, 18))
	addrs := randomAddrs(r, spec, 1024)
	want := make([]locdb.Network, len(addrs))
	wantOK := make([]bool, len(addrs))
	for range rounds {
		db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range addrs {
			want[i], wantOK[i] = db.LookupNoIndex(a)
		}
		ready := make(chan struct{})
		var wg sync.WaitGroup
		for g := range 3 {
			wg.Go(func() {
				out := make([]locdb.Network, 16)
				found := make([]bool, 16)
				for last := false; !last; {
					select {
					case <-ready:
						last = true // one more round with the whole index
					default:
					}
					for i := 0; i+16 <= len(addrs); i += 16 {
						if g == 0 {
							db.LookupBatch(addrs[i:i+16], out, found)
						} else {
							for k := range 16 {
								out[k], found[k] = db.Lookup(addrs[i+k])
							}
						}
						for k := range 16 {
							if out[k] != want[i+k] || found[k] != wantOK[i+k] {
								t.Errorf("lookup of %s during the build = %+v, %v; want %+v, %v",
									addrs[i+k], out[k], found[k], want[i+k], wantOK[i+k])
								return
							}
						}
					}
				}
			})
		}
		err = db.WaitIndex(context.Background())
		close(ready)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
}

// TestIndexClose closes databases while their index is being built: Close
// stops the build and waits for it (TestMain checks that no goroutine
// leaks), and the closed database answers nothing.
func TestIndexClose(t *testing.T) {
	path := locdb.DefaultPath
	if _, err := os.Stat(path); err != nil {
		path = locdbtest.WriteTemp(t, bigFixture()) // the real database is missing
	}
	for i := range 5 {
		db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i) * 10 * time.Millisecond)
		start := time.Now()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("closed %v after Open in %v", time.Duration(i)*10*time.Millisecond, time.Since(start))
		if err := db.WaitIndex(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n, ok := db.Lookup(mustAddr("8.8.8.8")); ok {
			t.Fatalf("Lookup after Close = %+v", n)
		}
		if info := db.IndexInfo(); info.V4 || info.V6 {
			t.Fatalf("index kept after Close: %+v", info)
		}
	}
}

func TestNoIndex(t *testing.T) {
	spec := mainFixture()
	db := openFixtureConfig(t, spec, locdb.Config{NoIndex: true})
	if info := db.IndexInfo(); info.V4 || info.V6 {
		t.Fatalf("index built with NoIndex: %+v", info)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := db.WaitIndex(ctx); err != nil {
		t.Fatalf("WaitIndex with NoIndex: %v", err)
	}
	checkIndex(t, db, randomAddrs(rand.New(rand.NewPCG(19, 20)), spec, 2000),
		func(a netip.Addr) (locdb.Network, bool) { return naiveLookup(spec, a) })
}

// TestIndexCloseRightAfterOpen closes while the build has barely started,
// at many points: an aborted build once emitted ranges after the gap it
// left and crashed the process from its goroutine.
func TestIndexCloseRightAfterOpen(t *testing.T) {
	for _, fx := range []*locdbtest.Database{mainFixture(), coverFixture(), edgesFixture()} {
		path := locdbtest.WriteTemp(t, fx)
		for i := range 200 {
			db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
			if err != nil {
				t.Fatal(err)
			}
			if i%4 != 0 {
				time.Sleep(time.Duration(i%50) * time.Microsecond)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			if p := db.IndexPanic(); p != nil {
				t.Fatalf("index build panicked: %v", p)
			}
		}
	}
}
