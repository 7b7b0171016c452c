package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/addrsample"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/modelstore"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/trainer"
)

// The node query benchmark's knobs (STYX_BENCH_DURATION and
// STYX_BENCH_CONNS override two of them; see BenchmarkNodeQuery).
const (
	nodeBenchAddrs    = 100_000         // distinct addresses the load cycles through
	nodeBenchDuration = 5 * time.Second // one wrk run
	nodeBenchWarmup   = 3 * time.Second // one wrk run per server before the steps
	nodeBenchGoal     = 2 * time.Millisecond
)

// nodeBenchConns are the closed-loop steps: wrk keeps this many requests
// in flight, so each step offers more load than the one before.
var nodeBenchConns = []int{1, 2, 3, 4, 6, 8, 16, 32, 64}

// nodeBenchPaced are the paced steps, as shares of the node's closed-loop
// peak: wrk's connections each wait a random delay before their next
// request, so the offered rate stays fixed whatever the latency, as a
// server sees it from many independent clients.
var nodeBenchPaced = []float64{0.5, 0.7, 0.85, 1.0}

// Pacing: each connection waits a uniform random delay of
// [pacedDelayLo, pacedDelayHi] ms between a response and its next
// request (mean 10 ms), so a rate of r requests/s takes r/100 connections.
const (
	pacedDelayLo = 5
	pacedDelayHi = 15
	// pacedKeptUp is the share of the floor's rate at the same step the
	// node must reach to have kept up with it (keptUp).
	pacedKeptUp = 0.95
)

// nodeBenchSaturated is the share of the peak rate a step must reach to
// count as the highest rate the machine sustains (rates near saturation
// differ by noise).
const nodeBenchSaturated = 0.95

// floorBody is what the HTTP floor answers: a small fixed proxycheck-like
// answer.
const floorBody = `{"status":"ok","192.0.2.1":{"proxy":"no"}}` + "\n"

// BenchmarkNodeQuery measures a cluster node's query API under a real HTTP
// load generator, wrk (Debian's package; make deps installs it), with the
// real-time client on: embedded etcd, a cluster node over the real
// location database, and a trained model published through pkg/modelstore
// that the node loads from /styx/models/current. wrk then sends
// GET /v2/{ip}?vpn=1&asn=1 over many distinct addresses drawn from the
// location database (data only: wrk talks to the node on 127.0.0.1 and
// nothing dials the addresses).
//
// wrk is closed-loop, so instead of fixed rates the steps raise the number
// of connections (1, 2, 3, 4, 6, 8, 16, 32, 64). Each step reports requests/s, p50, p99
// and p99.9, and the test process's CPU time per request (the node and
// etcd run in it; wrk does not). The same steps run against a net/http
// handler that returns a fixed small JSON body: the HTTP floor of this
// machine, so that node/floor shows what the node adds. The goal is p99
// under 2 ms at the highest rate the machine sustains.
//
// A closed-loop step at many connections measures queueing as much as
// service time: past saturation, more connections add only waiting. So
// the benchmark reports the sustainable rate, the highest step rate
// whose p99 stays under 2 ms, for the node and the floor, and the node's
// as a share of its own closed-loop peak and of the floor's.
//
// Closed-loop steps measure capacity, not latency at a rate: wrk sends
// the next request as soon as an answer arrives, so a stall delays only
// the requests in flight. The paced steps then offer fixed rates, shares
// of the node's closed-loop peak (50%, 70%, 85%, 100%), from many connections that
// each wait a random 5–15 ms between an answer and their next request, as
// independent clients would; the floor gets the same rates. The node kept
// up with a step when it reached 95% of the floor's rate there (wrk's
// timers make both fall short of the nominal rate). The benchmark's
// answer to the goal is the node's p99 at the highest paced rate it kept
// up with, printed with the floor's p99 at that rate.
//
// The model: STYX_BENCH_MODEL=path names an artifact (for example the
// real training's, docs/trainer.md); without it the benchmark trains a
// small one on the real database first (300 trees per head at depth 4,
// as the default, so scoring costs what it costs live; fewer examples).
// STYX_BENCH_DURATION (a Go duration) sets the length of one step,
// STYX_BENCH_CONNS (comma-separated) the closed-loop steps and
// STYX_BENCH_PACED (comma-separated shares of the peak, or "off") the
// paced ones.
func BenchmarkNodeQuery(b *testing.B) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		// go test shows a skipped benchmark's message only with -v.
		const msg = "wrk is not installed (make deps installs it): skipping the node query benchmark"
		fmt.Fprintln(os.Stderr, msg)
		b.Skip(msg)
	}
	db := openDB(b)
	duration, conns, paced := nodeBenchDuration, nodeBenchConns, nodeBenchPaced
	if s := os.Getenv("STYX_BENCH_DURATION"); s != "" {
		if duration, err = time.ParseDuration(s); err != nil || duration < time.Second {
			b.Fatalf("STYX_BENCH_DURATION=%q: want a duration of at least 1s", s)
		}
	}
	if s := os.Getenv("STYX_BENCH_CONNS"); s != "" {
		if conns, err = parseConns(s); err != nil {
			b.Fatalf("STYX_BENCH_CONNS=%q: %v", s, err)
		}
	}
	if s := os.Getenv("STYX_BENCH_PACED"); s != "" {
		if paced, err = parseShares(s); err != nil {
			b.Fatalf("STYX_BENCH_PACED=%q: %v", s, err)
		}
	}

	// The addresses go to wrk's script; the benchmark keeps neither them
	// nor its copy of the database, so that they do not weigh on the
	// process the node runs in.
	addrs := sampleAddrs(db, nodeBenchAddrs, rand.New(rand.NewPCG(1, 2)))
	db.Close() // the node opens its own; openDB's cleanup then does nothing
	script, pacedScript, err := writeWrkScripts(b.TempDir(), addrs)
	if err != nil {
		b.Fatal(err)
	}
	firstAddr, nAddrs := addrs[0], len(addrs)
	artifact, source := nodeBenchModel(b)
	m, err := model.Decode(bytes.NewReader(artifact))
	if err != nil {
		b.Fatal(err)
	}
	version := m.ModelVersion()
	fmt.Fprintf(os.Stderr, "node query benchmark: model %s, %s\n", version, source)

	for b.Loop() {
		// The HTTP floor: the same load against a fixed answer.
		floorURL, stopFloor := startFloor(b)

		// The node, following the published model.
		c := newEtcdOnly(b)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		ref, err := modelstore.Store(ctx, c.cli, version, artifact)
		if err == nil {
			_, err = modelstore.Activate(ctx, c.cli, ref)
		}
		cancel()
		if err != nil {
			b.Fatalf("publish the model: %v", err)
		}
		node := startBenchNode(b, c)
		testwait.For(b, 2*time.Minute, "the node answers with "+version, func() bool { return node.ModelVersion() == version })
		nodeURL := "http://" + node.HTTPAddr()
		if err := checkAnswer(nodeURL, firstAddr); err != nil {
			b.Fatal(err)
		}

		w := wrkRunner{bin: wrk, script: script, pacedScript: pacedScript}
		// Warm up both: connections, caches, and the node's first sighting
		// of many addresses (its dedup window then holds them, as it holds
		// a live node's frequent askers).
		for _, u := range []string{floorURL, nodeURL} {
			if _, err := w.run(u, 16, nodeBenchWarmup); err != nil {
				b.Fatal(err)
			}
		}
		var rows []nodeBenchRow
		for _, k := range conns {
			floor, n := w.step(b, w.script, floorURL, nodeURL, k, duration)
			rows = append(rows, nodeBenchRow{conns: k, threads: wrkThreads(k), node: n, floor: floor})
		}
		best, peak := summarise(rows, nodeCol)
		// The paced steps, at shares of the node's closed-loop peak; the
		// floor gets the same offered rates.
		var prows []pacedRow
		for _, share := range paced {
			rate := share * rows[peak].node.rps
			k := pacedConns(rate)
			floor, n := w.step(b, w.pacedScript, floorURL, nodeURL, k, duration)
			prows = append(prows, pacedRow{share: share, offered: rate, conns: k, node: n, floor: floor})
		}
		st := node.Stats()
		c.close()
		stopFloor()

		printNodeBench(os.Stderr, rows, best, peak, version, nAddrs, duration, st)
		if len(prows) > 0 {
			sus, fast := printPaced(os.Stderr, prows, rows[peak].node.rps)
			if sus >= 0 {
				b.ReportMetric(prows[sus].node.rps, "node-sustained-req/s")
				b.ReportMetric(prows[sus].node.p99.Seconds()*1e3, "node-sustained-p99-ms")
			}
			if fast >= 0 {
				b.ReportMetric(prows[fast].node.rps, "node-paced-req/s@p99<2ms")
			}
		}
		if best >= 0 {
			b.ReportMetric(rows[best].node.rps, "node-req/s@p99<2ms")
			b.ReportMetric(rows[best].node.p99.Seconds()*1e3, "node-p99-ms")
		}
		if fb, _ := summarise(rows, floorCol); fb >= 0 {
			b.ReportMetric(rows[fb].floor.rps, "floor-req/s@p99<2ms")
		}
		b.ReportMetric(rows[peak].node.rps, "node-peak-req/s")
		b.ReportMetric(rows[peak].node.rps/rows[peak].floor.rps, "node/floor")
	}
}

type nodeBenchRow struct {
	conns, threads int
	node, floor    wrkResult
}

// pacedRow is one paced step: the offered rate (share of the node's
// closed-loop peak) and what the node and the floor did with it.
type pacedRow struct {
	share, offered float64
	conns          int
	node, floor    wrkResult
}

// pacedConns is how many paced connections offer rate requests/s: each
// sends one request per mean delay.
func pacedConns(rate float64) int {
	meanDelay := float64(pacedDelayLo+pacedDelayHi) / 2 / 1e3
	return max(1, int(math.Round(rate*meanDelay)))
}

// keptUp reports whether the node kept up with a paced step: it reached
// pacedKeptUp of the rate the floor reached with the same connections. A
// server that falls behind lengthens its connections' cycles (delay plus
// latency), so its rate drops; the floor, which answers at once, shows
// what wrk's pacing itself delivers (its timers fire late by up to a
// millisecond, so even the floor gets about 92% of the nominal rate).
func keptUp(r pacedRow) bool { return r.node.rps >= pacedKeptUp*r.floor.rps }

// printPaced prints the paced steps and the benchmark's answer to "p99
// under 2 ms at the highest rate the machine sustains": the highest
// offered rate the node kept up with, and its p99 there. It returns that
// step (-1 when none) and the fastest step with p99 under the goal (-1
// when none).
func printPaced(w io.Writer, prows []pacedRow, peak float64) (sustained, fastest int) {
	fmt.Fprintf(w, "paced load: each connection waits %d-%d ms (uniform) between a response and its next request, so the offered rate holds whatever the latency; offered rates are shares of the node's closed-loop peak (%.0f requests/s), the floor gets the same\n",
		pacedDelayLo, pacedDelayHi, peak)
	fmt.Fprintf(w, "  %5s %8s %5s | %9s %8s %8s %8s %6s %5s | %9s %8s %8s %6s %5s\n",
		"share", "offered", "conns", "node r/s", "p50", "p99", "p99.9", "CPUµs", "other", "floor r/s", "p50", "p99", "CPUµs", "other")
	sustained, fastest = -1, -1
	ffastest := -1
	disturbed := false
	for i, r := range prows {
		mark := ""
		if !keptUp(r) {
			mark = "  (node fell behind)"
		}
		if keptUp(r) && (sustained < 0 || r.node.rps > prows[sustained].node.rps) {
			sustained = i
		}
		if r.node.p99 < nodeBenchGoal && (fastest < 0 || r.node.rps > prows[fastest].node.rps) {
			fastest = i
		}
		if r.floor.p99 < nodeBenchGoal && (ffastest < 0 || r.floor.rps > prows[ffastest].floor.rps) {
			ffastest = i
		}
		disturbed = disturbed || r.node.others > nodeBenchDisturbed || r.floor.others > nodeBenchDisturbed
		fmt.Fprintf(w, "  %4.0f%% %8.0f %5d | %9.0f %8s %8s %8s %6.1f %5s | %9.0f %8s %8s %6.1f %5s%s\n",
			100*r.share, r.offered, r.conns,
			r.node.rps, ms(r.node.p50), ms(r.node.p99), ms(r.node.p999), r.node.cpuPerReq, cores(r.node.others),
			r.floor.rps, ms(r.floor.p50), ms(r.floor.p99), r.floor.cpuPerReq, cores(r.floor.others), mark)
	}
	if disturbed {
		fmt.Fprintf(w, "  WARNING: other processes used more than %.1f core during some paced steps (after three tries)\n", nodeBenchDisturbed)
	}
	if fastest >= 0 {
		r := prows[fastest]
		fmt.Fprintf(w, "  highest paced rate with node p99 < %s: %.0f requests/s (p99 %s), %.0f%% of the node's closed-loop peak\n",
			nodeBenchGoal, r.node.rps, ms(r.node.p99), 100*r.node.rps/peak)
	}
	if ffastest >= 0 {
		r := prows[ffastest]
		fmt.Fprintf(w, "  highest paced rate with floor p99 < %s: %.0f requests/s (p99 %s)\n", nodeBenchGoal, r.floor.rps, ms(r.floor.p99))
	} else {
		fmt.Fprintf(w, "  the floor's p99 reached %s at every paced step: at these rates this machine and load generator do not keep any server's p99 under it\n", nodeBenchGoal)
	}
	switch {
	case sustained < 0:
		fmt.Fprintf(w, "  PACED GOAL NOT met: the node kept up with none of the paced steps\n")
	case prows[sustained].node.p99 < nodeBenchGoal:
		r := prows[sustained]
		fmt.Fprintf(w, "  PACED GOAL met: at the highest rate the node kept up with, %.0f requests/s (%.0f%% of its closed-loop peak), p99 is %s < %s\n",
			r.node.rps, 100*r.node.rps/peak, ms(r.node.p99), nodeBenchGoal)
	default:
		r := prows[sustained]
		fmt.Fprintf(w, "  PACED GOAL NOT met: at the highest rate the node kept up with, %.0f requests/s (%.0f%% of its closed-loop peak), p99 is %s\n",
			r.node.rps, 100*r.node.rps/peak, ms(r.node.p99))
	}
	return sustained, fastest
}

// summarise returns the step with the highest throughput whose p99 is
// under the goal (-1 when none) and the step with the highest throughput,
// of the columns col picks (the node's or the floor's).
func summarise(rows []nodeBenchRow, col func(nodeBenchRow) wrkResult) (best, peak int) {
	best = -1
	for i, r := range rows {
		c := col(r)
		if c.p99 < nodeBenchGoal && (best < 0 || c.rps > col(rows[best]).rps) {
			best = i
		}
		if c.rps > col(rows[peak]).rps {
			peak = i
		}
	}
	return best, peak
}

func nodeCol(r nodeBenchRow) wrkResult  { return r.node }
func floorCol(r nodeBenchRow) wrkResult { return r.floor }

func printNodeBench(w io.Writer, rows []nodeBenchRow, best, peak int, version string, addrs int, d time.Duration, st clusternode.Stats) {
	fmt.Fprintf(w, "node query latency and throughput: wrk, GET /v2/{ip}?vpn=1&asn=1 over %d distinct addresses, %s per step, GOMAXPROCS %d on %d CPUs, model %s\n",
		addrs, d, runtime.GOMAXPROCS(0), runtime.NumCPU(), version)
	fmt.Fprintf(w, "  %5s %3s | %9s %8s %8s %8s %6s %5s | %9s %8s %8s %6s %5s | %6s %6s %6s\n",
		"conns", "thr", "node r/s", "p50", "p99", "p99.9", "CPUµs", "other",
		"floor r/s", "p50", "p99", "CPUµs", "other", "r/s", "p50", "CPU")
	disturbed := false
	for i, r := range rows {
		mark := ""
		if i == best {
			mark = "  <- highest rate with p99 < 2 ms"
		}
		disturbed = disturbed || r.node.others > nodeBenchDisturbed || r.floor.others > nodeBenchDisturbed
		fmt.Fprintf(w, "  %5d %3d | %9.0f %8s %8s %8s %6.1f %5s | %9.0f %8s %8s %6.1f %5s | %5.2fx %5.2fx %5.2fx%s\n",
			r.conns, r.threads,
			r.node.rps, ms(r.node.p50), ms(r.node.p99), ms(r.node.p999), r.node.cpuPerReq, cores(r.node.others),
			r.floor.rps, ms(r.floor.p50), ms(r.floor.p99), r.floor.cpuPerReq, cores(r.floor.others),
			r.floor.rps/r.node.rps, ratio(r.node.p50, r.floor.p50), r.node.cpuPerReq/r.floor.cpuPerReq, mark)
	}
	fmt.Fprintf(w, "  CPUµs: this process's CPU per request (the server, and etcd for the node; not wrk). other: cores busy with other processes meanwhile.\n")
	fmt.Fprintf(w, "  The last three columns: floor r/s ÷ node r/s, node p50 ÷ floor p50, node CPU ÷ floor CPU.\n")
	if disturbed {
		fmt.Fprintf(w, "  WARNING: other processes used more than %.1f core during some steps (after three tries); their latencies are not this node's alone\n", nodeBenchDisturbed)
	}
	p := rows[peak]
	switch {
	case best < 0:
		fmt.Fprintf(w, "  goal NOT met: no step kept p99 under %s; the node peaks at %.0f requests/s (%d connections, p99 %s)\n",
			nodeBenchGoal, p.node.rps, p.conns, ms(p.node.p99))
	case rows[best].node.rps >= nodeBenchSaturated*p.node.rps:
		r := rows[best]
		fmt.Fprintf(w, "  goal met: p99 %s < %s at %.0f requests/s (%d connections), %.0f%% of the highest rate measured\n",
			ms(r.node.p99), nodeBenchGoal, r.node.rps, r.conns, 100*r.node.rps/p.node.rps)
	default:
		r := rows[best]
		fmt.Fprintf(w, "  goal NOT met at the peak: %.0f requests/s (%d connections) has p99 %s; the highest rate with p99 < %s is %.0f requests/s (%d connections, %.0f%% of the peak)\n",
			p.node.rps, p.conns, ms(p.node.p99), nodeBenchGoal, r.node.rps, r.conns, 100*r.node.rps/p.node.rps)
	}
	fmt.Fprintf(w, "  %s\n", floorSummary(rows))
	fmt.Fprintf(w, "  %s\n", sustainableSummary(rows, best, peak))
	fmt.Fprintf(w, "  node uplink: %d sightings submitted, %d deduplicated, %d pending (no scheduler: they wait for a leader)\n",
		st.Submitted, st.Deduplicated, st.Pending)
}

func cores(x float64) string {
	if x < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", x)
}

// floorSummary says how the HTTP floor fared against the same goal: the
// machine's own limit with this load generator.
func floorSummary(rows []nodeBenchRow) string {
	best, peak := summarise(rows, floorCol)
	p := rows[peak]
	s := fmt.Sprintf("the HTTP floor peaks at %.0f requests/s (%d connections, p99 %s)", p.floor.rps, p.conns, ms(p.floor.p99))
	if best < 0 {
		return s + "; no floor step kept p99 under " + nodeBenchGoal.String()
	}
	return s + fmt.Sprintf("; its highest rate with p99 < %s is %.0f requests/s (%d connections)", nodeBenchGoal, rows[best].floor.rps, rows[best].conns)
}

// sustainableSummary is the benchmark's answer to "p99 under 2 ms at the
// highest rate the machine sustains": the node's highest step rate with
// p99 under the goal, against its closed-loop peak, the floor's peak and
// the floor's own rate under the same bound.
func sustainableSummary(rows []nodeBenchRow, best, peak int) string {
	fb, fp := summarise(rows, floorCol)
	if best < 0 {
		return fmt.Sprintf("SUSTAINABLE RATE (p99 < %s): none for the node at these steps", nodeBenchGoal)
	}
	r := rows[best].node
	s := fmt.Sprintf("SUSTAINABLE RATE (p99 < %s): node %.0f requests/s (%d connections, p99 %s) = %.0f%% of its closed-loop peak, %.0f%% of the floor's peak",
		nodeBenchGoal, r.rps, rows[best].conns, ms(r.p99), 100*r.rps/rows[peak].node.rps, 100*r.rps/rows[fp].floor.rps)
	if fb >= 0 {
		s += fmt.Sprintf(", %.0f%% of the floor's sustainable %.0f requests/s (%d connections)", 100*r.rps/rows[fb].floor.rps, rows[fb].floor.rps, rows[fb].conns)
	}
	return s
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3fms", d.Seconds()*1e3) }

// parseShares reads STYX_BENCH_PACED: comma-separated shares of the
// closed-loop peak in (0, 2], or "off" for no paced steps.
func parseShares(s string) ([]float64, error) {
	if s == "off" {
		return nil, nil
	}
	var out []float64
	for f := range strings.SplitSeq(s, ",") {
		x, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || x <= 0 || x > 2 {
			return nil, fmt.Errorf("%q is not a share of the peak in (0, 2]", f)
		}
		out = append(out, x)
	}
	return out, nil
}

func parseConns(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 {
			return nil, fmt.Errorf("%q is not a connection count", f)
		}
		out = append(out, k)
	}
	return out, nil
}

// nodeBenchModel returns the artifact to publish and says where it came
// from.
func nodeBenchModel(b *testing.B) ([]byte, string) {
	if p := os.Getenv("STYX_BENCH_MODEL"); p != "" {
		art, err := os.ReadFile(p)
		if err != nil {
			b.Fatalf("STYX_BENCH_MODEL: %v", err)
		}
		return art, "artifact STYX_BENCH_MODEL=" + p
	}
	cfg := trainer.DefaultConfig()
	cfg.OutDir = b.TempDir()
	cfg.ModelVersion = "raven-bench-small"
	cfg.Folds = 0           // plain leave-one-out: no fold indexes to build
	cfg.NegativeRate = 0.05 // a fifth of the default's training negatives
	cfg.ValidationFraction = 0.05
	cfg.Progress = "off"
	fmt.Fprintf(os.Stderr, "node query benchmark: no STYX_BENCH_MODEL, training a small model on %s ...\n", cfg.DBPath)
	t0 := time.Now()
	res, err := trainer.Train(context.Background(), cfg, zerolog.Nop(), io.Discard)
	if err != nil {
		b.Fatalf("train the benchmark's model: %v", err)
	}
	art, err := os.ReadFile(res.Path)
	if err != nil {
		b.Fatal(err)
	}
	return art, fmt.Sprintf("trained here in %s (%d trees per head, depth %d, negatives kept %.0f%%, no folds; STYX_BENCH_MODEL=path uses an artifact instead)",
		time.Since(t0).Round(100*time.Millisecond), cfg.Params.Trees, cfg.Params.MaxDepth, 100*cfg.NegativeRate)
}

// startBenchNode starts a cluster node with its defaults (the real
// database, following /styx/models/current), quiet below errors.
func startBenchNode(b *testing.B, c *cluster) *clusternode.Node {
	b.Helper()
	cfg := clusternode.DefaultConfig()
	cfg.ID = "bench-node"
	cfg.EtcdEndpoints = []string{c.etcd.Endpoint()}
	cfg.NATSURL = c.nats.URL()
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = b.TempDir()
	n, err := clusternode.New(cfg, zerolog.New(zerolog.NewTestWriter(b)).Level(zerolog.ErrorLevel))
	if err != nil {
		b.Fatal(err)
	}
	c.run("node bench-node", n.Run)
	<-n.Ready()
	return n
}

// startFloor serves the HTTP floor on 127.0.0.1:0; stop shuts it down and
// waits for it (at cleanup if not before).
func startFloor(b *testing.B) (url string, stop func()) {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	body := []byte(floorBody)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stop = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.Errorf("floor server shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			b.Errorf("floor server: %v", err)
		}
	})
	b.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}

// checkAnswer asks the node about one address, as wrk will.
func checkAnswer(base, addr string) error {
	resp, err := http.Get(base + "/v2/" + addr + "?vpn=1&asn=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"status": "ok"`)) {
		return fmt.Errorf("GET /v2/%s: %s %s", addr, resp.Status, body)
	}
	return nil
}

// sampleAddrs draws n networks uniformly from the database and a random
// address inside each, without repeats, shuffled.
func sampleAddrs(db *locdb.DB, n int, rng *rand.Rand) []string {
	nets := addrsample.Networks(db, n, rng)
	out := make([]string, 0, len(nets))
	uniq := make(map[netip.Addr]bool, len(nets))
	for _, p := range nets {
		a := addrsample.In(p, rng)
		if !uniq[a] {
			uniq[a] = true
			out = append(out, a.String())
		}
	}
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// wrkScript makes wrk ask for /v2/<addr>?vpn=1&asn=1, cycling through the
// address list (each thread from its own place in it), and print its
// figures as one line in microseconds.
const wrkScript = `-- written by BenchmarkNodeQuery (integration/nodebench_test.go)
local addrs = {}
for line in io.lines(ADDRS_FILE) do addrs[#addrs + 1] = line end
local n = #addrs
local ids = 0

function setup(thread)
  thread:set("id", ids)
  ids = ids + 1
end

local i = 0
function init(args)
  local threads = tonumber(args[1]) or 1
  i = math.floor((id or 0) * n / threads)
end

function request()
  i = i % n + 1
  return wrk.format("GET", "/v2/" .. addrs[i] .. "?vpn=1&asn=1")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("styx-bench requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
`

// wrkPacing, appended to wrkScript, makes wrk wait between a response and
// the connection's next request (wrk calls delay() when the script has
// it); the latency it reports starts when a request is sent.
const wrkPacing = `
local seeded = false
function delay()
  if not seeded then
    math.randomseed((id or 0) * 7919 + 17)
    seeded = true
  end
  return math.random(DELAY_LO, DELAY_HI)
end
`

// writeWrkScripts writes the address list and two scripts that read it:
// closed-loop and paced.
func writeWrkScripts(dir string, addrs []string) (closed, paced string, err error) {
	list := filepath.Join(dir, "addrs.txt")
	if err := os.WriteFile(list, []byte(strings.Join(addrs, "\n")+"\n"), 0o600); err != nil {
		return "", "", err
	}
	src := strings.Replace(wrkScript, "ADDRS_FILE", strconv.Quote(list), 1)
	closed = filepath.Join(dir, "node.lua")
	if err := os.WriteFile(closed, []byte(src), 0o600); err != nil {
		return "", "", err
	}
	pacing := strings.NewReplacer("DELAY_LO", strconv.Itoa(pacedDelayLo), "DELAY_HI", strconv.Itoa(pacedDelayHi)).Replace(wrkPacing)
	paced = filepath.Join(dir, "node-paced.lua")
	return closed, paced, os.WriteFile(paced, []byte(src+pacing), 0o600)
}

// wrkThreads is wrk's thread count for k connections. The machine's cores
// are shared by wrk and the server under test; one wrk thread per two
// cores leaves the server the rest.
func wrkThreads(k int) int { return max(1, min(k, runtime.NumCPU()/2)) }

type wrkRunner struct{ bin, script, pacedScript string }

type wrkResult struct {
	requests       int64
	rps            float64
	p50, p99, p999 time.Duration
	max            time.Duration
	cpuPerReq      float64 // µs of this process's CPU per request
	others         float64 // cores busy with other processes meanwhile (-1: unknown)
}

// nodeBenchDisturbed is how many cores other processes may use during a
// step before it is run again.
const nodeBenchDisturbed = 0.1

// step runs one step of script with k connections for d against the
// floor, then against the node, each as quiet does.
func (w wrkRunner) step(b *testing.B, script, floorURL, nodeURL string, k int, d time.Duration) (floor, node wrkResult) {
	b.Helper()
	var err error
	if floor, err = w.quiet(script, floorURL, k, d); err != nil {
		b.Fatal(err)
	}
	if node, err = w.quiet(script, nodeURL, k, d); err != nil {
		b.Fatal(err)
	}
	return floor, node
}

// quiet is runScript, repeated up to twice more while other processes on
// the machine used more than nodeBenchDisturbed cores meanwhile (a shared
// machine); it keeps the least disturbed run.
func (w wrkRunner) quiet(script, url string, k int, d time.Duration) (wrkResult, error) {
	var best wrkResult
	for attempt := range 3 {
		r, err := w.runScript(script, url, k, d)
		if err != nil {
			return r, err
		}
		if attempt == 0 || r.others < best.others {
			best = r
		}
		if best.others < nodeBenchDisturbed {
			break
		}
	}
	return best, nil
}

// run drives url with k connections for d and parses the script's line.
// Any failed request (socket error, non-2xx answer, timeout) is an error.
func (w wrkRunner) run(url string, k int, d time.Duration) (wrkResult, error) {
	return w.runScript(w.script, url, k, d)
}

func (w wrkRunner) runScript(script, url string, k int, d time.Duration) (wrkResult, error) {
	threads := wrkThreads(k)
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bin, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(k),
		"-d", fmt.Sprintf("%ds", int(d.Round(time.Second).Seconds())), "--timeout", "5s",
		"-s", script, url+"/", "--", strconv.Itoa(threads))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	busy0, busyErr := machineBusy()
	c0, t0 := cpuTime(), time.Now()
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk %v: %w: %s%s", cmd.Args[1:], err, out.Bytes(), errOut.Bytes())
	}
	cpu, wall := cpuTime()-c0, time.Since(t0)
	busy1, busyErr1 := machineBusy()
	r, err := parseWrk(out.String())
	if err != nil {
		return r, fmt.Errorf("wrk %v: %w:\n%s", cmd.Args[1:], err, out.Bytes())
	}
	r.cpuPerReq = float64(cpu.Microseconds()) / float64(r.requests)
	r.others = -1
	if busyErr == nil && busyErr1 == nil {
		wrkCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		r.others = max(0, (busy1-busy0-cpu-wrkCPU).Seconds()/wall.Seconds())
	}
	return r, nil
}

// machineBusy is the CPU time every core of the machine has spent on
// anything but idling (including time stolen by a hypervisor), from
// /proc/stat. Only differences are used.
func machineBusy() (time.Duration, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, errors.New("/proc/stat is empty")
	}
	// cpu user nice system idle iowait irq softirq steal guest guest_nice,
	// in USER_HZ (100 on Linux); guest time is already in user.
	fs := strings.Fields(sc.Text())
	if len(fs) < 9 || fs[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", sc.Text())
	}
	var ticks int64
	for i, f := range fs[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += v
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// parseWrk reads the line the script's done() prints.
func parseWrk(out string) (wrkResult, error) {
	var line string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l, ok := strings.CutPrefix(sc.Text(), "styx-bench "); ok {
			line = l
		}
	}
	if line == "" {
		return wrkResult{}, errors.New("no styx-bench line in wrk's output")
	}
	v := map[string]int64{}
	for f := range strings.FieldsSeq(line) {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return wrkResult{}, fmt.Errorf("bad field %q", f)
		}
		x, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return wrkResult{}, fmt.Errorf("bad field %q", f)
		}
		v[key] = x
	}
	for _, k := range []string{"connect", "read", "write", "status", "timeout"} {
		if v[k] != 0 {
			return wrkResult{}, fmt.Errorf("%d %s errors", v[k], k)
		}
	}
	if v["requests"] == 0 || v["duration_us"] <= 0 {
		return wrkResult{}, errors.New("no request completed")
	}
	us := func(k string) time.Duration { return time.Duration(v[k]) * time.Microsecond }
	return wrkResult{
		requests: v["requests"],
		rps:      float64(v["requests"]) / (float64(v["duration_us"]) / 1e6),
		p50:      us("p50_us"), p99: us("p99_us"), p999: us("p999_us"), max: us("max_us"),
	}, nil
}
