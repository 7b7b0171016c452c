package integration

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"testing"

	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/scheduler"
)

// BenchmarkMutualTLS measures the node's path through STYX (a real node ->
// scheduler -> worker -> outcomes back, the node following the verdict
// log) in a plaintext cluster and in the same cluster over mutual TLS:
// every hop with certificates, etcd with per-identity permissions, NATS
// with certificate roles. The two alternate, two rounds each, so that a
// change in the shared machine's load falls on both; the figure is the
// ratio of their summed rates (goal >= 0.9). Each round swaps which runs
// first.
func BenchmarkMutualTLS(b *testing.B) {
	db := openDB(b)
	if err := db.WaitIndex(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		var rate, cpu [2]float64 // [plaintext, mutual TLS]
		makers := []func(testing.TB, func(*scheduler.Config)) *cluster{newCluster, newSecureCluster}
		for round := range 2 {
			// Plaintext first in one round, mutual TLS first in the other:
			// whichever runs first pays for the warm-up.
			for k := range makers {
				i := (k + round) % 2
				mk := makers[i]
				c := mk(b, func(cfg *scheduler.Config) {
					cfg.BatchSize = benchBatch
					cfg.MaxPending = 4 * benchSightings
					cfg.DedupWindow = 0
				})
				c.addWorker("bench-w", raven.Nop{}, 0)
				m := measure(startE2ENode(b, c, db, "bench-node", 1_000_000, nil))
				c.close()
				rate[i] += m.rate()
				cpu[i] += m.cpuMicros()
			}
		}
		b.ReportMetric(rate[0]/2, "plaintext-sightings/s")
		b.ReportMetric(rate[1]/2, "mtls-sightings/s")
		b.ReportMetric(rate[1]/rate[0], "mtls/plaintext")
		b.ReportMetric(cpu[1]/2, "mtls-cpu-µs/sighting")
		fmt.Fprintf(os.Stderr, "node via STYX, %d sightings x 2 rounds each, one worker, no-op engine, GOMAXPROCS %d\n", benchSightings, runtime.GOMAXPROCS(0))
		fmt.Fprintf(os.Stderr, "  %-22s %9.0f sightings/s  %6.2f CPU µs/sighting\n", "plaintext", rate[0]/2, cpu[0]/2)
		fmt.Fprintf(os.Stderr, "  %-22s %9.0f sightings/s  %6.2f CPU µs/sighting  %.2fx plaintext\n", "mutual TLS", rate[1]/2, cpu[1]/2, rate[1]/rate[0])
	}
}
