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

// benchDB opens the real database and waits for its index.
func benchDB(b *testing.B) *locdb.DB {
	return benchDBConfig(b, locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
}

// benchDBNoIndex opens the real database without the index: lookups walk
// the trie as before the index existed.
func benchDBNoIndex(b *testing.B) *locdb.DB {
	return benchDBConfig(b, locdb.Config{Path: locdb.DefaultPath, SkipVerify: true, NoIndex: true})
}

func benchDBConfig(b *testing.B, cfg locdb.Config) *locdb.DB {
	b.Helper()
	requireRealDB(b)
	db, err := locdb.Open(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if err := db.WaitIndex(context.Background()); err != nil {
		b.Fatal(err)
	}
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

// BenchmarkLookupIPv4InNetworks looks up random addresses inside random
// IPv4 networks of the file, through the index.
func BenchmarkLookupIPv4InNetworks(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In, db.Lookup)
}

// BenchmarkLookupIPv4InNetworksNoIndex is the same without the index: the
// jump table and the trie walk, the baseline for the index.
func BenchmarkLookupIPv4InNetworksNoIndex(b *testing.B) {
	db := benchDBNoIndex(b)
	benchLookups(b, benchSets.v4In, db.Lookup)
}

// BenchmarkLookupIPv4Hot repeats 1,024 addresses in networks: the paths
// they take stay in the CPU caches, as for real traffic with locality.
func BenchmarkLookupIPv4Hot(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.v4In[:1024], db.Lookup)
}

// BenchmarkLookupIPv4HotNoIndex is the hot set without the index.
func BenchmarkLookupIPv4HotNoIndex(b *testing.B) {
	db := benchDBNoIndex(b)
	benchLookups(b, benchSets.v4In[:1024], db.Lookup)
}

// BenchmarkLookupIPv4HotNoJumpTable is the hot set without the index or the
// jump table.
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

func BenchmarkLookupIPv6NoIndex(b *testing.B) {
	db := benchDBNoIndex(b)
	benchLookups(b, benchSets.v6In, db.Lookup)
}

func BenchmarkLookupNotFound(b *testing.B) {
	db := benchDB(b)
	benchLookups(b, benchSets.notFound, db.Lookup)
}

func BenchmarkLookupNotFoundNoIndex(b *testing.B) {
	db := benchDBNoIndex(b)
	benchLookups(b, benchSets.notFound, db.Lookup)
}

func BenchmarkLookupIPv4Parallel(b *testing.B) {
	db := benchDB(b)
	addrs := benchSets.v4In
	b.ReportAllocs()
	b.ResetTimer() // leave the index build out of B/op
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

// BenchmarkOpenNoIndex is BenchmarkOpen without starting the index build.
func BenchmarkOpenNoIndex(b *testing.B) {
	requireRealDB(b)
	b.ReportAllocs()
	for b.Loop() {
		db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true, NoIndex: true})
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
	}
}

// BenchmarkOpenIndex opens the database and waits for the index: the time
// until lookups run at full speed.
func BenchmarkOpenIndex(b *testing.B) {
	requireRealDB(b)
	b.ReportAllocs()
	var info locdb.IndexInfo
	for b.Loop() {
		db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.WaitIndex(context.Background()); err != nil {
			b.Fatal(err)
		}
		info = db.IndexInfo()
		db.Close()
	}
	if !info.V4 || !info.V6 {
		b.Fatalf("index not built: %+v", info)
	}
	b.ReportMetric(float64(info.Bytes)/(1<<20), "index-MiB")
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
	benchBatchDB(b, benchDB(b), addrs)
}

func benchBatchDB(b *testing.B, db *locdb.DB, addrs []netip.Addr) {
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

func BenchmarkLookupBatchIPv4InNetworksNoIndex(b *testing.B) {
	benchDB(b)
	benchBatchDB(b, benchDBNoIndex(b), benchSets.v4In)
}
