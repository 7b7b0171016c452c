// Package featurestest builds a synthetic location database with
// neighbourhood structure for the tests of the features, the learner, the
// trainer and the model engine: most ASes are clean, some are mostly
// anonymous proxies, some mostly drop, so a network's flags can be learnt
// from its AS and its neighbours.
package featurestest

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

// Kinds of synthetic AS.
const (
	KindClean   = "clean"
	KindAnon    = "anon"
	KindDrop    = "drop"
	KindHosting = "hosting"
)

// Database returns a synthetic database of about ases*25 networks, the
// same for the same seed.
func Database(ases int, seed uint64) *locdbtest.Database {
	rng := rand.New(rand.NewPCG(seed, 7))
	db := &locdbtest.Database{
		CreatedAt: time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		Vendor:    "STYX synthetic", Description: "featurestest", License: "CC0",
		Countries: []locdbtest.Country{
			{Code: "BR", Continent: "SA", Name: "Brazil"}, {Code: "DE", Continent: "EU", Name: "Germany"},
			{Code: "JP", Continent: "AS", Name: "Japan"}, {Code: "NL", Continent: "EU", Name: "Netherlands"},
			{Code: "US", Continent: "NA", Name: "United States"},
		},
	}
	countries := []string{"BR", "DE", "JP", "NL", "US"}
	for i := range ases {
		asn := uint32(64500 + i)
		kind := KindClean
		switch r := rng.Float64(); {
		case r < 0.12:
			kind = KindAnon
		case r < 0.20:
			kind = KindDrop
		case r < 0.28:
			kind = KindHosting
		}
		var pAnon, pDrop float64 = 0.004, 0.004
		name := fmt.Sprintf("ISP %d", i)
		switch kind {
		case KindAnon:
			pAnon = 0.6
			name = fmt.Sprintf("PRIVACY NET %d", i)
			if rng.IntN(2) == 0 {
				name = fmt.Sprintf("VPN HOSTING %d", i)
			}
		case KindDrop:
			pDrop, name = 0.7, ""
		case KindHosting:
			pAnon, name = 0.05, fmt.Sprintf("CLOUD HOSTING %d", i)
		}
		if name != "" {
			db.ASes = append(db.ASes, locdbtest.AS{Number: asn, Name: name})
		}
		country := countries[rng.IntN(len(countries))]
		nets := 10 + rng.IntN(30)
		for c := range nets {
			p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(11 + i/256), byte(i % 256), byte(c), 0}), 24)
			db.Networks = append(db.Networks, locdbtest.Network{Prefix: p, Country: country, ASN: asn, Flags: flags(rng, pAnon, pDrop)})
		}
		for c := range 2 + rng.IntN(3) {
			p := netip.PrefixFrom(netip.AddrFrom16([16]byte{0x2a, 0x00, byte(i >> 8), byte(i), 0, byte(c)}), 48)
			db.Networks = append(db.Networks, locdbtest.Network{Prefix: p, Country: country, ASN: asn, Flags: flags(rng, pAnon, pDrop)})
		}
	}
	// Networks without an ASN.
	for c := range 40 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(c / 8), byte(c), 0}), 24)
		db.Networks = append(db.Networks, locdbtest.Network{Prefix: p, Country: "US", Flags: flags(rng, 0.05, 0.05)})
	}
	return db
}

func flags(rng *rand.Rand, pAnon, pDrop float64) locdb.Flags {
	var f locdb.Flags
	if rng.Float64() < pAnon {
		f |= locdb.FlagAnonymousProxy
	} else if rng.Float64() < pDrop {
		f |= locdb.FlagDrop
	}
	if rng.Float64() < 0.02 {
		f |= locdb.FlagAnycast
	}
	return f
}

// WriteTemp writes Database(ases, seed) under tb.TempDir and returns its
// path (unsigned: open it with SkipVerify).
func WriteTemp(tb testing.TB, ases int, seed uint64) string {
	tb.Helper()
	return locdbtest.WriteTemp(tb, Database(ases, seed))
}

// Open writes and opens Database(ases, seed); the test closes it.
func Open(tb testing.TB, ases int, seed uint64) *locdb.DB {
	tb.Helper()
	db, err := locdb.Open(locdb.Config{Path: WriteTemp(tb, ases, seed), SkipVerify: true})
	if err != nil {
		tb.Fatalf("open synthetic database: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
