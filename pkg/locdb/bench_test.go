package locdb_test

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
)

// Address sets for the benchmarks on the real database, built once.
var benchSets struct {
	once     sync.Once
	v4In     []netip.Addr // inside random IPv4 networks of the file
	v6In     []netip.Addr // inside random IPv6 networks of the file
	notFound []netip.Addr // random IPv4 that no network covers
	err      error
}

const benchSetSize = 1 << 16

func benchDB(b *testing.B) *locdb.DB {
	b.Helper()
	requireRealDB(b)
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	benchSets.once.Do(func() {
		r := rand.New(rand.NewPCG(42, 42))
		var v4, v6 []netip.Prefix
		seen4, seen6 := 0, 0
		// Reservoir-sample networks of each family.
		for n := range db.Networks() {
			if n.Prefix.Addr().Is4() {
				seen4++
				if len(v4) < benchSetSize {
					v4 = append(v4, n.Prefix)
				} else if j := r.IntN(seen4); j < benchSetSize {
					v4[j] = n.Prefix
				}
			} else {
				seen6++
				if len(v6) < benchSetSize {
					v6 = append(v6, n.Prefix)
				} else if j := r.IntN(seen6); j < benchSetSize {
					v6[j] = n.Prefix
				}
			}
		}
		for _, p := range v4 {
			benchSets.v4In = append(benchSets.v4In, randomIn(r, p, false))
		}
		for _, p := range v6 {
			benchSets.v6In = append(benchSets.v6In, randomIn(r, p, false))
		}
		for len(benchSets.notFound) < benchSetSize {
			v := r.Uint32()
			a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
			if _, ok := db.Lookup(a); !ok {
				benchSets.notFound = append(benchSets.notFound, a)
			}
		}
	})
	return db
}

func benchLookups(b *testing.B, addrs []netip.Addr, lookup func(netip.Addr) (locdb.Network, bool)) {
	b.ReportAllocs()
	var found int
	i := 0
	for b.Loop() {
		if _, ok := lookup(addrs[i&(len(addrs)-1)]); ok {
			found++
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "lookups/s")
	_ = found
}

func BenchmarkLookupIPv4InNetworks(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In, db.Lookup)
}

// BenchmarkLookupIPv4Hot repeats 1,024 addresses in networks: the paths
// they take stay in the CPU caches, as for real traffic with locality.
func BenchmarkLookupIPv4Hot(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In[:1024], db.Lookup)
}

// BenchmarkLookupIPv4HotNoJumpTable is the hot set without the jump table.
func BenchmarkLookupIPv4HotNoJumpTable(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In[:1024], db.LookupWalk)
}

// BenchmarkLookupIPv4NoJumpTable is the plain walk from the ::ffff:0:0/96
// node, the baseline for the jump table.
func BenchmarkLookupIPv4NoJumpTable(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In, db.LookupWalk)
}

// BenchmarkLookupIPv4FromRoot walks all 128 bits from the root.
func BenchmarkLookupIPv4FromRoot(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In, db.LookupFromRoot)
}

func BenchmarkLookupIPv6(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v6In, db.Lookup)
}

func BenchmarkLookupNotFound(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.notFound, db.Lookup)
}

func BenchmarkLookupIPv4Parallel(b *testing.B) {
	db := benchDB(b)
	addrs := benchSets.v4In
	b.ReportAllocs()
	start := time.Now()
	var mu sync.Mutex
	total := 0
	b.RunParallel(func(pb *testing.PB) {
		i := rand.IntN(len(addrs))
		n := 0
		for pb.Next() {
			db.Lookup(addrs[i&(len(addrs)-1)])
			i++
			n++
		}
		mu.Lock()
		total += n
		mu.Unlock()
	})
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "lookups/s")
}

func BenchmarkOpen(b *testing.B) {
	requireRealDB(b)
	b.ReportAllocs()
	for b.Loop() {
		db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}

func BenchmarkOpenVerify(b *testing.B) {
	requireRealDB(b)
	for b.Loop() {
		db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath})
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}

// BenchmarkReferenceTool measures the reference tool on the same kind of
// addresses, one run of 2,000 addresses per iteration, for comparison.
func BenchmarkReferenceTool(b *testing.B) {
	requireTool(b)
	benchDB(b)
	addrs := make([]string, 2000)
	for i := range addrs {
		addrs[i] = benchSets.v4In[i].String()
	}
	n := 0
	for b.Loop() {
		if _, _, err := locdbtest.ReferenceLookup(context.Background(), locdb.DefaultPath, addrs,
			locdbtest.ReferenceOptions{Batch: len(addrs), Parallel: 1, Warmup: "8.8.8.8"}); err != nil {
			b.Fatal(err)
		}
		n += len(addrs)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lookups/s")
}

func benchBatch(b *testing.B, addrs []netip.Addr) {
	db := benchDB(b)
	const size = 256
	out := make([]locdb.Network, size)
	found := make([]bool, size)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		off := (i * size) & (len(addrs) - 1)
		db.LookupBatch(addrs[off:off+size], out, found)
		i++
	}
	b.ReportMetric(float64(i*size)/b.Elapsed().Seconds(), "lookups/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(i*size), "ns/lookup")
}

func BenchmarkLookupBatchIPv4InNetworks(b *testing.B) {
	benchDB(b)
	benchBatch(b, benchSets.v4In)
}

func BenchmarkLookupBatchIPv6(b *testing.B) {
	benchDB(b)
	benchBatch(b, benchSets.v6In)
}
