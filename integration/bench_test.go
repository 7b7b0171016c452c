package integration

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/testwait"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler"
)

// benchSightings is how many sightings each path carries per measurement.
const benchSightings = 200_000

// benchBatch is the batch size on every hop.
const benchBatch = 1024

// BenchmarkEndToEnd measures, in one run and on one worker with the no-op
// engine, four paths for the same number of sightings:
//
//   - client direct: a bare gRPC client speaking the scheduler's protocol
//     straight to the worker, with the same batches and credits;
//   - client via STYX: a bare gRPC client speaking the node's protocol ->
//     STYX -> worker -> outcomes back;
//   - node direct: a real cluster node (pending table, durable verdict
//     store) whose uplink speaks WorkerService to the worker itself
//     (clusternode.Config.DirectWorker), without the scheduler hop;
//   - node via STYX: the same node code -> STYX -> worker -> outcomes back
//     to the node, which also follows the verdict log, as it does in
//     production;
//   - catch-up: a node that joins afterwards replays every verdict of the
//     two paths through STYX from the log into its empty store while
//     another node keeps the cluster making verdicts at make run's rate;
//     its rate is compared with that live rate.
//
// It reports sightings/s and CPU microseconds per sighting (the whole
// process: every part runs in it) for each, and the ratios of each path
// through STYX to its direct twin.
func BenchmarkEndToEnd(b *testing.B) {
	// The nodes share one database, its index built before any
	// measurement (skip cleanly without it).
	db := openDB(b)
	if err := db.WaitIndex(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		// The direct paths get a cluster without a scheduler, so that no
		// leader holds the worker's session.
		d := newEtcdOnly(b)
		dw := d.addWorker("bench-direct-w", raven.Nop{}, 0)
		clientDirect := measure(func() { runDirect(b, dw.AdvertiseAddr(), 0) })
		feedDirect := startE2ENode(b, d, db, "bench-direct-node", 3_000_000, func(cfg *clusternode.Config) { cfg.DirectWorker = dw.AdvertiseAddr() })
		nodeDirect := measure(feedDirect)
		d.close()

		c := newCluster(b, func(cfg *scheduler.Config) {
			cfg.BatchSize = benchBatch
			cfg.MaxPending = 4 * benchSightings
			cfg.DedupWindow = 0
		})
		c.addWorker("bench-w", raven.Nop{}, 0)
		clientStyx := measure(func() { runSubmit(b, c.sched.GRPCAddr(), 1_000_000) })
		// The node joins only now: it follows the verdict log into its
		// store, work that must not count against the bare client's path.
		nodeStyx := measure(startE2ENode(b, c, db, "bench-node", 2_000_000, nil))
		// Catch-up: a node that joins now replays every verdict the two
		// paths through STYX made from the log into its empty store, while
		// live load goes on at make run's rate (benchLiveRate sightings/s
		// from another node), as when a node rejoins a busy cluster.
		heads := logHeads(b, c.nats.URL(), c.natsOpts(b)...)
		inLog := 2 * benchSightings
		live := startLiveLoad(b, c, db)
		catchUp := measure(func() {
			n := c.addNode("bench-catchup", newOutcomes(), func(cfg *clusternode.Config) { cfg.Locator = db })
			waitApplied(b, n, 5*time.Minute, heads)
		})
		liveRate, liveAnswered := live.stop()
		c.close()
		catchUpRate := float64(inLog) / catchUp.wall.Seconds()

		b.ReportMetric(clientDirect.rate(), "client-direct-sightings/s")
		b.ReportMetric(clientStyx.rate(), "client-styx-sightings/s")
		b.ReportMetric(nodeDirect.rate(), "node-direct-sightings/s")
		b.ReportMetric(nodeStyx.rate(), "node-styx-sightings/s")
		b.ReportMetric(clientStyx.rate()/clientDirect.rate(), "client-styx/direct")
		b.ReportMetric(nodeStyx.rate()/nodeDirect.rate(), "node-styx/direct")
		b.ReportMetric(clientStyx.cpuMicros(), "client-styx-cpu-µs/sighting")
		b.ReportMetric(nodeStyx.cpuMicros(), "node-styx-cpu-µs/sighting")
		b.ReportMetric(catchUpRate, "catch-up-verdicts/s")
		b.ReportMetric(liveRate, "live-sightings/s")
		b.ReportMetric(liveAnswered, "live-answered/s")
		b.ReportMetric(catchUpRate/liveRate, "catch-up/live")
		b.ReportMetric(float64(catchUp.cpu.Microseconds())/float64(inLog), "catch-up-cpu-µs/verdict")
		fmt.Fprintf(os.Stderr, "end to end, %d sightings, batches of %d, one worker, no-op engine, GOMAXPROCS %d\n",
			benchSightings, benchBatch, runtime.GOMAXPROCS(0))
		for _, r := range []struct {
			name    string
			m, base measurement
		}{
			{"client direct (client -> worker)", clientDirect, clientDirect},
			{"client via STYX (client -> STYX -> worker)", clientStyx, clientDirect},
			{"node direct (node -> worker)", nodeDirect, nodeDirect},
			{"node via STYX (node -> STYX -> worker)", nodeStyx, nodeDirect},
		} {
			fmt.Fprintf(os.Stderr, "  %-43s %9.0f sightings/s  %6.2f CPU µs/sighting  %.2fx its direct path\n",
				r.name, r.m.rate(), r.m.cpuMicros(), r.m.rate()/r.base.rate())
		}
		fmt.Fprintf(os.Stderr, "  %-43s %9.0f verdicts/s   %6.2f CPU µs/verdict   %.1fx the live rate (%.0f sightings/s offered, %.0f answered meanwhile)\n",
			"catch-up (a new node replays the log)", catchUpRate, float64(catchUp.cpu.Microseconds())/float64(inLog), catchUpRate/liveRate, liveRate, liveAnswered)
	}
}

// startE2ENode starts a cluster node over db and returns the measured
// part: offer the node benchSightings new addresses from base on, and wait
// for an outcome per sighting.
func startE2ENode(b *testing.B, c *cluster, db *locdb.DB, id string, base int, mod func(*clusternode.Config)) func() {
	o := newOutcomes()
	node := c.addNode(id, o, func(cfg *clusternode.Config) {
		cfg.Locator = db
		cfg.BatchSize = benchBatch
		cfg.DedupWindow = 0
		if mod != nil {
			mod(cfg)
		}
	})
	testwait.For(b, 30*time.Second, id+" connected", func() bool { return node.Stats().Connected })
	if c.sched != nil { // through STYX, so following the log (the direct path follows none)
		// A node replays the log from the start of retention (here: the
		// verdicts of the paths measured before); that is the catch-up,
		// measured below, not this path: wait for it before measuring.
		waitApplied(b, node, 5*time.Minute, logHeads(b, c.nats.URL(), c.natsOpts(b)...))
	}
	addrs := make([]netip.Addr, benchSightings)
	for i := range addrs {
		addrs[i] = addrAt(base + i)
	}
	return func() {
		for len(addrs) > 0 {
			k := min(len(addrs), 4096)
			node.Submit(addrs[:k]...)
			addrs = addrs[k:]
		}
		testwait.For(b, 5*time.Minute, "every node outcome", func() bool { return o.total.Load() >= benchSightings })
		o.mu.Lock()
		defer o.mu.Unlock()
		if k := o.byKind[styxv1.OutcomeKind_OUTCOME_KIND_VERDICT]; k != benchSightings || o.twice != 0 {
			b.Fatalf("%s: %d verdicts of %d outcomes, %d resolved twice", id, k, o.total.Load(), o.twice)
		}
	}
}

// benchLiveRate is the live load during catch-up: make run's rate.
const benchLiveRate = 5000

type liveLoad struct {
	o         *outcomes
	submitted atomic.Int64
	start     time.Time
	stopc     chan struct{}
	done      chan struct{}
}

// startLiveLoad starts a node that submits benchLiveRate new addresses a
// second (in steps of 10 ms) until stop, which returns the rate of
// verdicts it got back meanwhile.
func startLiveLoad(b *testing.B, c *cluster, db *locdb.DB) *liveLoad {
	l := &liveLoad{o: newOutcomes(), stopc: make(chan struct{}), done: make(chan struct{})}
	node := c.addNode("bench-live", l.o, func(cfg *clusternode.Config) { cfg.Locator = db; cfg.DedupWindow = 0 })
	testwait.For(b, 30*time.Second, "bench-live connected", func() bool { return node.Stats().Connected })
	l.start = time.Now()
	go func() {
		defer close(l.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		next := 10_000_000
		for {
			select {
			case <-l.stopc:
				return
			case <-t.C:
			}
			// Paced by the clock, not by the ticks, which a busy machine drops.
			due := int(time.Since(l.start).Seconds()*benchLiveRate) - (next - 10_000_000)
			if due <= 0 {
				continue
			}
			addrs := make([]netip.Addr, due)
			for i := range addrs {
				addrs[i] = addrAt(next)
				next++
			}
			l.submitted.Add(int64(node.Submit(addrs...)))
		}
	}()
	return l
}

// stop stops the load and returns the rates of sightings submitted and
// of outcomes back, per second.
func (l *liveLoad) stop() (offered, answered float64) {
	close(l.stopc)
	<-l.done
	secs := time.Since(l.start).Seconds()
	return float64(l.submitted.Load()) / secs, float64(l.o.total.Load()) / secs
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
				columns.AppendSighting(batch, columns.Sighting{ID: uint64(j + 1), Addr: addrAt(base + j), Seen: now})
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
		if ob := m.GetOutcomes(); ob != nil {
			outs, err := columns.Outcomes(ob)
			if err != nil {
				b.Fatal(err)
			}
			for _, out := range outs {
				if out.Kind != styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
					b.Fatalf("outcome %+v", out)
				}
				got++
			}
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
			end := min(next+benchBatch, benchSightings)
			for j := next; j < end; j++ {
				batch.Addresses = columns.AppendAddr(batch.Addresses, addrAt(base+j))
			}
			next = end
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
		if res := rep.GetResult(); res != nil {
			// Decoded as the leader decodes it, so that both paths pay for it.
			vs, err := columns.DecodeVerdicts(res.GetVerdicts(), int(res.GetVerdicts().GetCount()))
			if err != nil {
				b.Fatal(err)
			}
			done += len(vs)
		}
	}
}
