package clusternode

import (
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// BenchmarkNodeCatchUp measures how fast a node with an empty store applies
// what the verdict log holds: 200 messages of 1,024 verdicts (one worker
// result each, a quarter of them proxies, so both streams carry some), read
// by the node's follower and written with their cursors, with the threats
// window and the history table fed as verdicts land. Each iteration starts
// a new node and waits until it has applied both streams to their heads.
// verdicts/s is the catch-up rate; cpu-µs/verdict is the process's CPU time
// per verdict while catching up, the embedded NATS server included.
func BenchmarkNodeCatchUp(b *testing.B) {
	const perMessage, messages = 1024, 200
	etcdClient(b)
	l := startLog(b)
	inferred := time.Now().Add(-5 * time.Minute).UnixNano()
	var wg sync.WaitGroup
	for m := range messages {
		vs := make([]*styxv1.Verdict, perMessage)
		for i := range vs {
			k := uint32(m*perMessage + i)
			a := netip.AddrFrom4([4]byte{byte(1 + k>>16), byte(k >> 8), byte(k), 1})
			vs[i] = &styxv1.Verdict{Address: a.AsSlice(), Proxy: i%4 == 0, Type: "VPN", Risk: 70, ModelVersion: "bench", InferredUnixNano: inferred + int64(k)}
		}
		wg.Add(1)
		l.pub.Verdicts(1, vs, wg.Done)
	}
	wg.Wait()
	heads := l.heads(b)
	dbPath := fixtureDBPath(b)

	var elapsed, cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		cfg := l.config(testConfig(b, b.TempDir(), dbPath))
		cpu0 := cpuTime(b)
		b.StartTimer()
		start := time.Now()
		r := startNode(b, cfg)
		testwait.For(b, time.Minute, "the node caught up with the log", func() bool {
			st := r.node.Stats().Log
			for _, s := range st.Streams {
				if s.Applied != heads[s.Stream] {
					return false
				}
			}
			return len(st.Streams) == len(heads)
		})
		elapsed += time.Since(start)
		b.StopTimer()
		cpu += cpuTime(b) - cpu0
		if got := r.node.Stats().LogVerdicts; got != perMessage*messages {
			b.Fatalf("%d verdicts applied, want %d", got, perMessage*messages)
		}
		r.stop(b)
		b.StartTimer()
	}
	total := float64(perMessage * messages * b.N)
	b.ReportMetric(total/elapsed.Seconds(), "verdicts/s")
	b.ReportMetric(float64(cpu.Microseconds())/total, "cpu-µs/verdict")
}

// cpuTime is the process's user and system CPU time.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
