package pool

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// Evidence as the model engine writes it (pkg/raven, pkg/features): a
// lead, both heads' probabilities in whole percent, then the
// neighbourhood facts.
var (
	benchLeads = [...]string{"", "locdb:drop", "locdb:anonymous-proxy", "locdb:hosting-as"}
	benchFacts = [...]string{"nbr:as-anonymous-proxy", "nbr:as-drop", "nbr:wide-anonymous-proxy", "nbr:wide-drop",
		"nbr:narrow-anonymous-proxy", "nbr:narrow-drop", "nbr:near-anonymous-proxy", "nbr:near-drop"}
)

const benchModel = "raven-2026.03-s2"

// networkVerdict is what the model engine says about one network: the
// verdict of every address in it, but for the inference time.
type networkVerdict struct {
	proxy        bool
	typ          string
	risk         uint32
	lead, ra, rh int
	facts        uint32
}

// benchNetworks are 2,345 networks with distinct evidence lists, as on
// the real database (pkg/raven: 1.29 M networks have 2,345 distinct
// lists, and 100 of them cover 99% of the networks). realisticVerdict
// draws them so.
var benchNetworks = func() []networkVerdict {
	rng := rand.New(rand.NewPCG(3, 4))
	seen := make(map[networkVerdict]bool)
	var out []networkVerdict
	for len(out) < 2345 {
		n := networkVerdict{ra: min(100, int(rng.ExpFloat64()*6)), rh: min(100, int(rng.ExpFloat64()*4))}
		n.risk = uint32(max(n.ra, n.rh))
		switch x := rng.IntN(100); {
		case x < 1:
			n.lead, n.proxy, n.typ, n.risk = 1, true, "Hostile", 100
		case x < 5:
			n.lead, n.proxy, n.typ, n.risk = 2, true, "Anonymizer", max(90, n.risk)
		case x < 10:
			n.lead, n.typ, n.risk = 3, "Hosting", max(33, n.risk)
		}
		for i := range benchFacts {
			if rng.IntN(10+i) == 0 {
				n.facts |= 1 << i
			}
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}()

// realisticVerdict returns a verdict shaped like the model engine's about
// an address of a network drawn from benchNetworks.
func realisticVerdict(rng *rand.Rand, inferred int64) verdict.Verdict {
	i := rng.IntN(100)
	if rng.IntN(100) == 0 {
		i = rng.IntN(len(benchNetworks))
	}
	n := benchNetworks[i]
	v := verdict.Verdict{Proxy: n.proxy, Type: n.typ, Risk: n.risk, ModelVersion: benchModel, Inferred: verdict.UnixNano(inferred)}
	if n.lead != 0 {
		v.Evidence = append(v.Evidence, benchLeads[n.lead])
	}
	v.Evidence = append(v.Evidence, fmt.Sprintf("raven:anonymiser=%d%%", n.ra), fmt.Sprintf("raven:hostile=%d%%", n.rh))
	for i, f := range benchFacts {
		if n.facts&(1<<i) != 0 {
			v.Evidence = append(v.Evidence, f)
		}
	}
	return v
}

// wireBatch returns n realistic verdicts as the scheduler holds a
// worker's result: encoded in columns, marshalled, unmarshalled and
// decoded (so that strings and evidence lists are the decoder's).
func wireBatch(tb testing.TB, rng *rand.Rand, n int, inferred int64) []verdict.Verdict {
	tb.Helper()
	var vb columns.VerdictBuilder
	vb.Reset(n)
	for range n {
		v := realisticVerdict(rng, inferred)
		vb.AddVerdict(&v)
	}
	raw, err := proto.Marshal(vb.Columns())
	if err != nil {
		tb.Fatal(err)
	}
	var c styxv1.VerdictColumns
	if err := proto.Unmarshal(raw, &c); err != nil {
		tb.Fatal(err)
	}
	vs, err := columns.DomainVerdicts(&c, n)
	if err != nil {
		tb.Fatal(err)
	}
	return vs
}

func benchAddr(i int) netip.Addr {
	if i%8 == 7 { // an eighth IPv6, as the load generator mixes them
		return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
	}
	return netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
}

// newVerdictPool returns a pool as the ledger makes it, and its window's
// table.
func newVerdictPool(tb testing.TB, c Config) (*Pool[*verdict.Verdict], *verdictTable) {
	tb.Helper()
	p, t, err := newVerdicts(c)
	if err != nil {
		tb.Fatal(err)
	}
	return p, t
}

// cycle offers addrs[i] for i in [from, to) at now, takes them and
// completes them with a worker's batch of verdicts, batch by batch.
func cycle(tb testing.TB, p *Pool[*verdict.Verdict], rng *rand.Rand, now int64, from, to, batch int) {
	tb.Helper()
	for lo := from; lo < to; lo += batch {
		hi := min(lo+batch, to)
		for i := lo; i < hi; i++ {
			p.Offer(now, Waiter{"n", uint64(i)}, benchAddr(i), now)
		}
		es, _ := p.Take(now, hi-lo)
		vs := wireBatch(tb, rng, len(es), now)
		for j, e := range es {
			p.Complete(now, e, &vs[j], true)
		}
	}
}

// heapAlloc returns the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkRecentBytesPerEntry fills a pool's recent-verdict window with
// realistic verdicts, as a worker's results bring them (batches of 1,024
// off the wire), and reports the heap it holds per entry and the shapes
// its table interned. Before the window was compact (a recent.Set of
// *verdict.Verdict, each pinning its share of the decoded batch) it was
// 273 bytes an entry at 100,000 and 293 at 1,048,576.
func BenchmarkRecentBytesPerEntry(b *testing.B) {
	for _, n := range []int{100_000, 1 << 20} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var per float64
			var shapes int
			for b.Loop() {
				rng := rand.New(rand.NewPCG(1, 2))
				c := Config{MaxPending: 1 << 20, MaxAge: 3600 * sec, DedupWindow: 600 * sec, MaxRecent: n, MaxWaiters: 4, Policy: Policy{Mode: ShedNewest}}
				before := heapAlloc()
				p, tb := newVerdictPool(b, c)
				cycle(b, p, rng, t0, 0, n, 1024)
				after := heapAlloc()
				if got := p.Stats().Recent; got != n {
					b.Fatalf("recent window holds %d, want %d", got, n)
				}
				per = float64(after-before) / float64(n)
				shapes = len(tb.index)
				runtime.KeepAlive(p)
			}
			b.ReportMetric(per, "bytes/entry")
			b.ReportMetric(float64(shapes), "shapes")
		})
	}
}

// BenchmarkRecentAtRate runs a pool as the ledger does for a simulated
// 10 minutes (time passed in) at a rate of verdicts per second: every
// address new, offered, taken and completed in batches of 1,024 with
// verdicts off the wire, and a sweep every second. The rates are below
// the window's count bound (1,000 a second: 600,000 in the 10-minute dedup
// window), make run's (5,000), and ten times that. Above the bound the
// window holds MaxRecent (1,000,000) verdicts however fast they come. It
// reports the most heap the pool held (live bytes after a collection,
// sampled every simulated 10 s), that per verdict then in the window, the
// evictions by count, and those by age after a last sweep a dedup window
// later, which leaves the window empty.
func BenchmarkRecentAtRate(b *testing.B) {
	const (
		maxRecent = 1_000_000
		window    = 600 * sec
		batch     = 1024
	)
	rng := rand.New(rand.NewPCG(5, 6))
	// The compact window copies what it keeps of a verdict, so a few
	// decoded batches can stand for every worker result.
	batches := make([][]verdict.Verdict, 64)
	for i := range batches {
		batches[i] = wireBatch(b, rng, batch, t0)
	}
	for _, rate := range []int{1_000, 5_000, 50_000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			var peak, after uint64
			var held int
			var st Stats
			for b.Loop() {
				base := heapAlloc()
				c := Config{MaxPending: 1 << 20, MaxAge: 3600 * sec, DedupWindow: window, MaxRecent: maxRecent, MaxWaiters: 4, Policy: Policy{Mode: ShedNewest}}
				p, _ := newVerdictPool(b, c)
				peak, held = 0, 0
				next := 0
				for s := range int(window / sec) {
					for j := 0; j < rate; j += batch {
						n := min(batch, rate-j)
						now := t0 + int64(s)*sec + int64(j)*sec/int64(rate)
						for k := range n {
							p.Offer(now, Waiter{"n", uint64(next + k)}, benchAddr(next+k), now)
						}
						es, _ := p.Take(now, n)
						vs := batches[(next/batch)%len(batches)]
						for k, e := range es {
							vs[k].Inferred = verdict.UnixNano(now)
							p.Complete(now, e, &vs[k], true)
						}
						next += n
					}
					p.Sweep(t0 + int64(s+1)*sec)
					if s%10 == 9 {
						if h := heapAlloc() - base; h > peak {
							peak, held = h, p.Stats().Recent
						}
					}
				}
				p.Sweep(t0 + 2*window + 1)
				st = p.Stats()
				if st.Recent != 0 || st.RecentEvictedAge+st.RecentEvictedCount != st.Examined {
					b.Fatalf("after the last sweep: %+v", st)
				}
				after = heapAlloc() - base
				runtime.KeepAlive(p)
			}
			b.ReportMetric(float64(peak)/1e6, "peak-MB")
			b.ReportMetric(float64(held), "peak-entries")
			b.ReportMetric(float64(peak)/float64(held), "bytes/entry")
			b.ReportMetric(float64(st.Examined), "verdicts")
			b.ReportMetric(float64(st.RecentEvictedCount), "evicted-count")
			b.ReportMetric(float64(st.RecentEvictedAge), "evicted-age")
			b.ReportMetric(float64(after)/1e6, "after-MB")
		})
	}
}
