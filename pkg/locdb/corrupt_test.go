package locdb_test

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/internal/format"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

func fixtureBytes(tb testing.TB, fx *locdbtest.Database) []byte {
	tb.Helper()
	b, err := fx.Bytes()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func writeBytes(tb testing.TB, b []byte) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "location.db")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

func sectionOf(b []byte, off int) (start, length uint32) {
	return binary.BigEndian.Uint32(b[off:]), binary.BigEndian.Uint32(b[off+4:])
}

// probe looks up addresses all over the fixture and must not panic.
func probe(db *locdb.DB) {
	for _, s := range []string{"8.8.8.8", "10.1.2.3", "1.1.1.1", "255.255.255.255", "0.0.0.0",
		"2001:db8:1:2::1", "::", "::1", "ffff::1", "2a00::1"} {
		db.Lookup(netip.MustParseAddr(s))
	}
	for range db.Networks() {
	}
}

func TestOpenCorrupt(t *testing.T) {
	good := fixtureBytes(t, mainFixture())
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.BigEndian.PutUint32(b[off:], v); return b }
	}
	tests := []struct {
		name   string
		mutate func([]byte) []byte
	}{
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"version 0", func(b []byte) []byte { b[format.OffVersion] = 0; return b }},
		{"version 2", func(b []byte) []byte { b[format.OffVersion] = 2; return b }},
		{"header only", func(b []byte) []byte { return b[:format.HeaderSize] }},
		{"short header", func(b []byte) []byte { return b[:format.HeaderSize-1] }},
		{"AS section past end", put32(format.OffAS, uint32(len(good)))},
		{"network section past end", put32(format.OffNetworks+4, 0xFFFFFFF0)},
		{"tree section past end", put32(format.OffTree+4, uint32(len(good)))},
		{"country section past end", put32(format.OffCountries, 0xFFFFFFFF)},
		{"pool past end", put32(format.OffPool+4, uint32(len(good)))},
		{"tree length not whole nodes", func(b []byte) []byte {
			_, l := sectionOf(b, format.OffTree)
			return put32(format.OffTree+4, l-1)(b)
		}},
		{"network length not whole records", func(b []byte) []byte {
			_, l := sectionOf(b, format.OffNetworks)
			return put32(format.OffNetworks+4, l+1)(b)
		}},
		{"AS length not whole records", func(b []byte) []byte {
			_, l := sectionOf(b, format.OffAS)
			return put32(format.OffAS+4, l-3)(b)
		}},
		{"country length not whole records", func(b []byte) []byte {
			_, l := sectionOf(b, format.OffCountries)
			return put32(format.OffCountries+4, l+4)(b)
		}},
		{"tree inside header", put32(format.OffTree, 100)},
		{"pool inside signature slot", put32(format.OffPool, format.OffSig2)},
		{"signature 1 too long", func(b []byte) []byte { binary.BigEndian.PutUint16(b[format.OffSig1Len:], 2049); return b }},
		{"signature 2 too long", func(b []byte) []byte { binary.BigEndian.PutUint16(b[format.OffSig2Len:], 0xFFFF); return b }},
		{"vendor outside pool", put32(format.OffVendor, 0xFFFFFF00)},
		{"description outside pool", func(b []byte) []byte {
			_, l := sectionOf(b, format.OffPool)
			return put32(format.OffDescription, l)(b)
		}},
		{"license outside pool", put32(format.OffLicense, 0x80000000)},
		{"AS name outside pool", func(b []byte) []byte {
			s, _ := sectionOf(b, format.OffAS)
			return put32(int(s)+4, 0x7FFFFFFF)(b)
		}},
		{"country name outside pool", func(b []byte) []byte {
			s, _ := sectionOf(b, format.OffCountries)
			_, l := sectionOf(b, format.OffPool)
			return put32(int(s)+4, l)(b)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(append([]byte(nil), good...))
			db, err := locdb.Open(locdb.Config{Path: writeBytes(t, b), SkipVerify: true})
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, locdb.ErrCorrupt) {
				t.Errorf("error %v does not wrap ErrCorrupt", err)
			}
		})
	}
}

// TestOpenTruncated truncates a fixture at every length: Open must fail
// with ErrCorrupt, never panic.
func TestOpenTruncated(t *testing.T) {
	for _, page := range []bool{false, true} {
		fx := mainFixture()
		fx.PageAlign = page
		good := fixtureBytes(t, fx)
		path := writeBytes(t, good)
		// Shrink one file step by step: much cheaper than a new file each time.
		for n := len(good) - 1; n >= 0; n-- {
			if page && n%13 != 0 {
				continue // the page-aligned layout is mostly padding: sample it
			}
			if err := os.Truncate(path, int64(n)); err != nil {
				t.Fatal(err)
			}
			db, err := locdb.Open(locdb.Config{Path: path, SkipVerify: true})
			if err == nil {
				db.Close()
				t.Fatalf("page=%v: Open of the first %d of %d bytes succeeded", page, n, len(good))
			}
			if !errors.Is(err, locdb.ErrCorrupt) {
				t.Fatalf("page=%v: %d bytes: %v does not wrap ErrCorrupt", page, n, err)
			}
		}
	}
}

// TestCorruptTree damages tree nodes and network indexes: the file opens
// (nodes are checked when read, not at open) and lookups stay in bounds.
func TestCorruptTree(t *testing.T) {
	good := fixtureBytes(t, mainFixture())
	treeStart, treeLen := sectionOf(good, format.OffTree)
	nodes := int(treeLen / format.NodeSize)
	r := rand.New(rand.NewPCG(5, 6))
	values := []uint32{0, 1, uint32(nodes - 1), uint32(nodes), uint32(nodes + 1), 0x7FFFFFFF, 0xFFFFFFFE, 0xFFFFFFFF}
	for i := range 300 {
		b := append([]byte(nil), good...)
		for range 1 + i%5 {
			node := r.IntN(nodes)
			field := r.IntN(3)
			v := values[r.IntN(len(values))]
			if r.IntN(4) == 0 {
				v = r.Uint32()
			}
			binary.BigEndian.PutUint32(b[int(treeStart)+node*format.NodeSize+field*4:], v)
		}
		db, err := locdb.Open(locdb.Config{Path: writeBytes(t, b), SkipVerify: true})
		if err != nil {
			t.Fatalf("open with damaged nodes: %v", err)
		}
		if err := db.WaitIndex(context.Background()); err != nil {
			t.Fatal(err)
		}
		probe(db)
		for _, a := range randomAddrs(r, mainFixture(), 200) {
			got, ok := db.Lookup(a)
			if got2, ok2 := db.LookupFromRoot(a); got != got2 || ok != ok2 {
				t.Fatalf("Lookup(%s) = %+v; from root %+v", a, got, got2)
			}
			if got2, ok2 := db.LookupNoIndex(a); got != got2 || ok != ok2 {
				t.Fatalf("Lookup(%s) = %+v; without the index %+v", a, got, got2)
			}
		}
		db.Close()
	}

	// A cycle: every node's children point back at the root or at itself.
	b := append([]byte(nil), good...)
	for n := range nodes {
		off := int(treeStart) + n*format.NodeSize
		binary.BigEndian.PutUint32(b[off:], uint32(n))
		binary.BigEndian.PutUint32(b[off+4:], 1)
	}
	db, err := locdb.Open(locdb.Config{Path: writeBytes(t, b), SkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.WaitIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Flattening the cycle would never end: the build gives up, and
	// lookups walk.
	if info := db.IndexInfo(); info.V4 || info.V6 {
		t.Errorf("index built over a cyclic trie: %+v", info)
	}
	probe(db)
}
