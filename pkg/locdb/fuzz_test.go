package locdb_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

// fuzzFile is one scratch file per fuzzing process, rewritten in place:
// a fresh file per input would cost more than the Open under test.
type fuzzFile struct {
	f    *os.File
	path string
}

func newFuzzFile(f *testing.F) *fuzzFile {
	path := filepath.Join(f.TempDir(), "fuzz.db")
	file, err := os.Create(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { file.Close() })
	return &fuzzFile{f: file, path: path}
}

func (ff *fuzzFile) set(t *testing.T, b []byte) {
	if _, err := ff.f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := ff.f.Truncate(int64(len(b))); err != nil {
		t.Fatal(err)
	}
}

var fuzzAddrs = []netip.Addr{
	mustAddr("8.8.8.8"), mustAddr("10.1.2.3"), mustAddr("1.1.1.1"), mustAddr("0.0.0.0"),
	mustAddr("255.255.255.255"), mustAddr("::ffff:2.57.171.5"), mustAddr("2001:db8:1:2::1"),
	mustAddr("::"), mustAddr("::1"), mustAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), mustAddr("2a00::1"),
}

// FuzzOpen opens arbitrary files: Open must fail cleanly or give a DB whose
// lookups and walk stay in bounds.
func FuzzOpen(f *testing.F) {
	for _, fx := range fixtures {
		spec := fx.db()
		if fx.name == "big" {
			continue // too large a seed to mutate usefully
		}
		spec.PageAlign = false
		b, err := spec.Bytes()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("LOCDBXX\x01"))
	ff := newFuzzFile(f)
	out := make([]locdb.Network, len(fuzzAddrs))
	found := make([]bool, len(fuzzAddrs))
	f.Fuzz(func(t *testing.T, b []byte) {
		ff.set(t, b)
		db, err := locdb.Open(locdb.Config{Path: ff.path, SkipVerify: true})
		if err != nil {
			return
		}
		defer db.Close()
		if err := db.WaitIndex(context.Background()); err != nil {
			t.Fatal(err)
		}
		for _, a := range fuzzAddrs {
			n, ok := db.Lookup(a)
			if n2, ok2 := db.LookupFromRoot(a); n2 != n || ok2 != ok {
				t.Fatalf("Lookup(%s) = %+v, %v; from root %+v, %v", a, n, ok, n2, ok2)
			}
			if n2, ok2 := db.LookupNoIndex(a); n2 != n || ok2 != ok {
				t.Fatalf("Lookup(%s) = %+v, %v; without the index %+v, %v", a, n, ok, n2, ok2)
			}
		}
		db.LookupBatch(fuzzAddrs, out, found)
		count := 0
		for range db.Networks() {
			if count++; count > 10000 {
				break
			}
		}
		_, _, _, _ = db.CreatedAt(), db.Vendor(), db.Description(), db.License()
	})
}

// FuzzLookup checks Lookup (through the index), LookupBatch and the plain
// walks against the naive longest-prefix match on the real-shaped fixture,
// for any address.
func FuzzLookup(f *testing.F) {
	spec := bigFixture()
	db := openFixture(f, spec)
	main := mainFixture()
	mainDB := openFixture(f, main)
	for _, a := range fuzzAddrs {
		b := a.As16()
		f.Add(b[:], a.Is4())
	}
	for _, n := range spec.Networks[:50] {
		b := n.Prefix.Addr().As16()
		f.Add(b[:], n.Prefix.Addr().Is4())
	}
	out := make([]locdb.Network, 1)
	found := make([]bool, 1)
	f.Fuzz(func(t *testing.T, raw []byte, v4 bool) {
		var b [16]byte
		copy(b[:], raw)
		addr := netip.AddrFrom16(b)
		if v4 {
			addr = netip.AddrFrom4([4]byte(b[12:]))
		}
		for _, c := range []struct {
			spec *locdbtest.Database
			db   *locdb.DB
		}{{spec, db}, {main, mainDB}} {
			want, wok := naiveLookup(c.spec, addr)
			got, ok := c.db.Lookup(addr)
			if got != want || ok != wok {
				t.Fatalf("Lookup(%s) = %+v, %v; naive %+v, %v", addr, got, ok, want, wok)
			}
			if got2, ok2 := c.db.LookupFromRoot(addr); got2 != got || ok2 != ok {
				t.Fatalf("LookupFromRoot(%s) = %+v, %v", addr, got2, ok2)
			}
			if got2, ok2 := c.db.LookupNoIndex(addr); got2 != got || ok2 != ok {
				t.Fatalf("LookupNoIndex(%s) = %+v, %v", addr, got2, ok2)
			}
			if addr.Is4() {
				if got2, ok2 := c.db.LookupWalk(addr); got2 != got || ok2 != ok {
					t.Fatalf("LookupWalk(%s) = %+v, %v", addr, got2, ok2)
				}
			}
			c.db.LookupBatch([]netip.Addr{addr}, out, found)
			if out[0] != got || found[0] != ok {
				t.Fatalf("LookupBatch(%s) = %+v, %v", addr, out[0], found[0])
			}
		}
	})
}
