package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/raven"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
)

// benchSightings is how many sightings each path carries per measurement.
const benchSightings = 200_000

// benchBatch is the batch size on every hop.
const benchBatch = 1024

// BenchmarkEndToEnd measures, in one run and on one worker with the no-op
// engine, three paths for the same number of sightings:
//
//   - node: a real cluster node (pending table, durable verdict store) ->
//     STYX -> worker -> verdicts back to the node;
//   - styx: a bare gRPC client speaking the node's protocol -> STYX ->
//     worker -> verdicts back;
//   - direct: a bare gRPC client speaking the scheduler's protocol straight
//     to the worker, with the same batches and credits, no scheduler hop.
//
// It reports sightings/s and CPU microseconds per sighting (the whole
// process: every part runs in it) for each, and the ratios styx/direct and
// node/direct.
func BenchmarkEndToEnd(b *testing.B) {
	openDB(b) // the node needs the database; skip cleanly without it
	for b.Loop() {
		// The direct path gets a cluster without a scheduler, so that no
		// leader holds the worker's session.
		d := newEtcdOnly(b)
		dw := d.addWorker("bench-direct-w", raven.Nop{}, 0)
		direct := measure(func() { runDirect(b, dw.AdvertiseAddr(), 0) })
		d.close()

		c := newCluster(b, func(cfg *scheduler.Config) {
			cfg.BatchSize = benchBatch
			cfg.MaxPending = 4 * benchSightings
			cfg.DedupWindow = 0
		})
		c.addWorker("bench-w", raven.Nop{}, 0)
		styx := measure(func() { runSubmit(b, c.sched.GRPCAddr(), 1_000_000) })
		// The node joins only now: it follows the verdict feed into its
		// store, work that must not count against the bare client's path.
		o := newOutcomes()
		node := c.addNode("bench-node", o, func(cfg *clusternode.Config) {
			cfg.BatchSize = benchBatch
			cfg.DedupWindow = 0
		})
		viaNode := measure(func() {
			addrs := make([]netip.Addr, benchSightings)
			for i := range addrs {
				addrs[i] = addrAt(2_000_000 + i)
			}
			for len(addrs) > 0 {
				k := min(len(addrs), 4096)
				node.Submit(addrs[:k]...)
				addrs = addrs[k:]
			}
			waitUntil(b, 5*time.Minute, "every node outcome", func() bool { return o.total.Load() >= benchSightings })
		})
		c.close()

		b.ReportMetric(direct.rate(), "direct-sightings/s")
		b.ReportMetric(styx.rate(), "styx-sightings/s")
		b.ReportMetric(viaNode.rate(), "node-sightings/s")
		b.ReportMetric(styx.rate()/direct.rate(), "styx/direct")
		b.ReportMetric(viaNode.rate()/direct.rate(), "node/direct")
		b.ReportMetric(styx.cpuMicros(), "styx-cpu-µs/sighting")
		b.ReportMetric(direct.cpuMicros(), "direct-cpu-µs/sighting")
		fmt.Fprintf(os.Stderr, "end to end, %d sightings, batches of %d, one worker, no-op engine, GOMAXPROCS %d\n",
			benchSightings, benchBatch, runtime.GOMAXPROCS(0))
		for _, r := range []struct {
			name string
			m    measurement
		}{{"direct (client -> worker)", direct}, {"styx (client -> STYX -> worker)", styx}, {"node (node -> STYX -> worker)", viaNode}} {
			fmt.Fprintf(os.Stderr, "  %-34s %9.0f sightings/s  %6.2f CPU µs/sighting  %.2fx direct\n",
				r.name, r.m.rate(), r.m.cpuMicros(), r.m.rate()/direct.rate())
		}
	}
}

type measurement struct {
	wall time.Duration
	cpu  time.Duration
}

func (m measurement) rate() float64 { return benchSightings / m.wall.Seconds() }
func (m measurement) cpuMicros() float64 {
	return float64(m.cpu.Microseconds()) / benchSightings
}

func measure(fn func()) measurement {
	c0, t0 := cpuTime(), time.Now()
	fn()
	return measurement{wall: time.Since(t0), cpu: cpuTime() - c0}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func addrBytes(a netip.Addr) []byte {
	if a.Is4() {
		b := a.As4()
		return b[:]
	}
	b := a.As16()
	return b[:]
}

// runSubmit speaks SchedulerService.Submit as a node does and waits for an
// outcome per sighting.
func runSubmit(b *testing.B, addr string, base int) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := styxv1.NewSchedulerServiceClient(conn).Submit(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Hello{Hello: &styxv1.Hello{NodeId: "bench-client"}}}); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		b.Fatal(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		now := time.Now().UnixNano()
		for i := 0; i < benchSightings; i += benchBatch {
			batch := &styxv1.SightingBatch{Seq: uint64(i/benchBatch + 1)}
			for j := i; j < min(i+benchBatch, benchSightings); j++ {
				batch.Sightings = append(batch.Sightings, &styxv1.Sighting{
					Id: uint64(j + 1), Address: addrBytes(addrAt(base + j)), SeenUnixNano: now})
			}
			if err := st.Send(&styxv1.SubmitRequest{Msg: &styxv1.SubmitRequest_Sightings{Sightings: batch}}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	got := 0
	for got < benchSightings {
		m, err := st.Recv()
		if err != nil {
			b.Fatalf("submit stream: %v after %d outcomes", err, got)
		}
		for _, out := range m.GetOutcomes().GetOutcomes() {
			if out.Kind != styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
				b.Fatalf("outcome %v", out)
			}
			got++
		}
	}
	if err := <-sendErr; err != nil {
		b.Fatal(err)
	}
}

// runDirect speaks WorkerService.Work as the leader does, with the same
// batch size and honouring the worker's credits, and waits for every result.
func runDirect(b *testing.B, addr string, base int) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := styxv1.NewWorkerServiceClient(conn).Work(ctx)
	if err != nil {
		b.Fatal(err)
	}
	const term = 1
	if err := st.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Open{Open: &styxv1.Open{SchedulerId: "bench-direct", Term: term}}}); err != nil {
		b.Fatal(err)
	}
	credits := 0
	next, done := 0, 0
	now := uint64(0)
	for done < benchSightings {
		for credits > 0 && next < benchSightings {
			now++
			batch := &styxv1.Batch{BatchId: now, Term: term, Attempt: 1}
			for j := next; j < min(next+benchBatch, benchSightings); j++ {
				batch.Addresses = append(batch.Addresses, addrBytes(addrAt(base+j)))
			}
			next += len(batch.Addresses)
			if err := st.Send(&styxv1.WorkAssign{Msg: &styxv1.WorkAssign_Batch{Batch: batch}}); err != nil {
				b.Fatal(err)
			}
			credits--
		}
		rep, err := st.Recv()
		if err != nil {
			b.Fatalf("work stream: %v", err)
		}
		credits += int(rep.Credit)
		if r := rep.GetRefusal(); r != nil {
			b.Fatalf("worker refused: %s", r.Reason)
		}
		done += len(rep.GetResult().GetVerdicts())
	}
}
