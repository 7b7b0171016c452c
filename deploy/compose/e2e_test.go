package compose_test

// The end-to-end test of the compose deployment: it builds the images,
// starts the stack of docker-compose.yml under a project name of its own,
// every hop over mutual TLS with the certificates its pki service issues,
// sends sightings through both cluster nodes, starts two more workers (3 to
// 5), kills a worker and the leading scheduler with SIGKILL, and checks that
// every sighting ended in a worker's verdict. Then, under load again, it
// kills one of the three JetStream servers (the leader of the clean
// stream), checks that both nodes keep applying the verdict log without a
// stall, starts the server again, and checks that nothing was lost: every
// sighting has its verdict, both nodes hold every verdict, and the three
// servers hold the same streams. It runs only with STYX_E2E=1 (make e2e)
// and a Docker engine; the stack, its volumes and its images are removed at
// the end, also when the test fails.
//
// The addresses are real ones sampled from the location database, used as
// data only: nothing dials them (the workers run the rule engine, without
// the probe). The test reaches the containers only through ports published
// on 127.0.0.1: the nodes' HTTP API, the schedulers' HTTP port (/metrics)
// and, as the stack's admin, the schedulers' gRPC (mutual TLS) and the NATS
// servers' monitoring (HTTPS). The admin's identity directory is copied out
// of the pki service's volume, as an operator would.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/grpc"

	"github.com/styx-inference/styx/pkg/addrsample"
	"github.com/styx-inference/styx/pkg/grpcauth"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// override slows every batch down on the workers, so that batches are out
// on them when the test kills one, and when it kills the leader.
const override = `services:
  worker-1: {environment: {STYX_BATCH_DELAY: 500ms}}
  worker-2: {environment: {STYX_BATCH_DELAY: 500ms}}
  worker-3: {environment: {STYX_BATCH_DELAY: 500ms}}
  worker-4: {environment: {STYX_BATCH_DELAY: 500ms}}
  worker-5: {environment: {STYX_BATCH_DELAY: 500ms}}
`

// e2ePoll is how often a wait scrapes the stack's metrics again: each
// look goes through published ports to several containers.
const e2ePoll = 250 * time.Millisecond

var (
	schedulers  = []string{"scheduler-a", "scheduler-b"}
	extraWorker = []string{"worker-4", "worker-5"} // profile "scale"
	nodes       = []string{"node-a", "node-b"}
	natsServers = []string{"nats-1", "nats-2", "nats-3"}
	logStreams  = []string{"STYX_CLEAN", "STYX_PROXY"}
)

func TestCompose(t *testing.T) {
	if os.Getenv("STYX_E2E") != "1" {
		t.Skip("the compose end-to-end test runs with STYX_E2E=1 (make e2e)")
	}
	if out, err := exec.Command("docker", "info").CombinedOutput(); err != nil {
		t.Skipf("no Docker engine (docker info: %v): %s", err, firstLine(out))
	}
	composeCmd, err := composeCommand()
	if err != nil {
		t.Skip(err)
	}
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath})
	if err != nil {
		t.Fatalf("the location database is needed (make deps installs it): %v", err)
	}
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 7))
	nets := addrsample.Networks(db, 50_000, rng)
	db.Close()

	start := time.Now()
	progress := func(format string, args ...any) {
		t.Helper()
		t.Logf("%6.1fs  %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	s := newStack(t, composeCmd)
	progress("project %s, images tagged %s, compose %s", s.project, s.project, strings.Join(composeCmd, " "))

	s.buildImages()
	progress("images built")
	s.up()
	progress("stack up")

	ctx := t.Context()
	admin := s.adminIdentity()
	progress("admin identity %s, valid until %s", admin.Identity(), admin.NotAfter().UTC().Format(time.RFC3339))
	addrs := &addrSource{nets: nets, rng: rng, seen: map[netip.Addr]bool{}}
	api := map[string]*nodeAPI{}
	for _, n := range nodes {
		api[n] = &nodeAPI{name: n, base: "http://" + s.port(n, 8080), client: &http.Client{Timeout: 15 * time.Second}}
	}
	adm := map[string]styxv1.AdminServiceClient{}
	schedulerContainers := map[string]string{}
	for _, sc := range schedulers {
		schedulerContainers[sc] = s.containers(sc)[0]
		conn, err := grpc.NewClient(s.port(sc, 7070), grpcauth.DialOption(admin, pki.AnyOf(pki.Scheduler)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		adm[sc] = styxv1.NewAdminServiceClient(conn)
	}
	leaderStatus := func(among []string) (*styxv1.StatusResponse, string) {
		for _, sc := range among {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			st, err := adm[sc].Status(cctx, &styxv1.StatusRequest{})
			cancel()
			if err == nil && st.Leader {
				return st, sc
			}
		}
		return nil, ""
	}
	readyWorkers := func(st *styxv1.StatusResponse) map[string]*styxv1.WorkerStatus {
		out := map[string]*styxv1.WorkerStatus{}
		for _, w := range st.GetWorkers() {
			if w.State == "ready" {
				out[w.WorkerId] = w
			}
		}
		return out
	}

	// 1. The cluster forms: a leader with three ready workers, both nodes
	// connected to it and to the verdict log.
	var first *styxv1.StatusResponse
	testwait.Every(t, 90*time.Second, e2ePoll, "a leader with 3 ready workers and both nodes connected", func() bool {
		st, _ := leaderStatus(schedulers)
		if st == nil || len(readyWorkers(st)) != 3 {
			return false
		}
		for _, n := range nodes {
			h, err := api[n].health()
			if err != nil || h["uplink_connected"] != true {
				return false
			}
			if lg, _ := h["log"].(map[string]any); lg == nil || lg["connected"] != true {
				return false
			}
		}
		first = st
		return true
	})
	initial := slices.Sorted(maps.Keys(readyWorkers(first)))
	progress("leader %s (term %d), workers %s", first.SchedulerId, first.Term, strings.Join(initial, " "))

	// 2. Sightings through both nodes: the first answers come from the
	// node's engine (the local rule); once the workers' verdicts are back,
	// the same queries are answered from the node's store.
	sent := map[string][]netip.Addr{}
	for _, n := range nodes {
		batch := addrs.next(1000)
		engine := api[n].mustCount(t, "engine", func() { api[n].mustQuery(t, batch) })
		if engine != len(batch) {
			t.Errorf("%s: %d of %d new addresses answered by the engine", n, engine, len(batch))
		}
		sent[n] = append(sent[n], batch...)
	}
	waitResolved(t, api, sent, progress)
	for _, n := range nodes {
		api[n].checkFromStore(t, sent[n])
	}
	progress("phase 1: %d addresses, every one answered from a worker's verdict on the node that asked", total(sent))

	// 3. Two more worker containers, each with its own certificate and etcd
	// user: STYX uses them without other change.
	s.compose(append([]string{"--profile", "scale", "up", "-d", "--no-recreate"}, extraWorker...)...)
	var grown map[string]*styxv1.WorkerStatus
	testwait.Every(t, 60*time.Second, e2ePoll, "5 ready workers", func() bool {
		st, _ := leaderStatus(schedulers)
		if st == nil {
			return false
		}
		grown = readyWorkers(st)
		return len(grown) == 5
	})
	var added []string
	for id := range grown {
		if !slices.Contains(initial, id) {
			added = append(added, id)
		}
	}
	slices.Sort(added)
	progress("scaled to 5 workers; new: %s", strings.Join(added, " "))
	testwait.Every(t, 90*time.Second, e2ePoll, "work on the new workers", func() bool {
		for _, n := range nodes {
			batch := addrs.next(200)
			api[n].mustQuery(t, batch)
			sent[n] = append(sent[n], batch...)
		}
		st, _ := leaderStatus(schedulers)
		if st == nil {
			return false
		}
		for _, id := range added {
			if w := readyWorkers(st)[id]; w == nil || w.AddressesDone == 0 {
				return false
			}
		}
		for _, id := range added {
			progress("new worker %s: %d addresses done", id, readyWorkers(st)[id].AddressesDone)
		}
		return true
	})

	// 4. Under steady load, kill a worker that holds batches and then the
	// leading scheduler, both with SIGKILL.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var (
		mu      sync.Mutex
		loadErr error
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			n := nodes[i%len(nodes)]
			mu.Lock()
			batch := addrs.next(60)
			mu.Unlock()
			if err := api[n].query(batch); err != nil {
				mu.Lock()
				loadErr = errors.Join(loadErr, err)
				mu.Unlock()
				continue
			}
			mu.Lock()
			sent[n] = append(sent[n], batch...)
			mu.Unlock()
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			stopLoad()
			wg.Wait()
		}
	}
	defer stop()

	// Kill a worker the moment the leader reports batches out on it.
	var victim string
	var before uint64
	testwait.Every(t, 30*time.Second, e2ePoll, "a worker holding batches", func() bool {
		st, _ := leaderStatus(schedulers)
		for _, w := range readyWorkers(st) {
			if w.InFlight > 0 {
				victim, before = w.WorkerId, st.Pool.GetReassigned()
				s.kill(s.containers(victim)[0]) // a worker's id is its service's name
				return true
			}
		}
		return false
	})
	progress("killed worker %s (SIGKILL) while it held batches", victim)
	testwait.Every(t, 30*time.Second, e2ePoll, "the killed worker out of the ready set", func() bool {
		st, _ := leaderStatus(schedulers)
		return st != nil && readyWorkers(st)[victim] == nil
	})
	progress("the leader no longer counts %s as ready", victim)
	var requeued uint64
	testwait.Every(t, 15*time.Second, e2ePoll, "the killed worker's batches requeued", func() bool {
		st, _ := leaderStatus(schedulers)
		if st == nil {
			return false
		}
		requeued = st.Pool.GetReassigned() - before
		return requeued > 0
	})
	progress("the leader requeued %d batches of %s", requeued, victim)
	time.Sleep(2 * time.Second)

	old, oldName := leaderStatus(schedulers)
	if old == nil {
		t.Fatal("no leader before the scheduler kill")
	}
	s.kill(schedulerContainers[oldName])
	killedAt := time.Now()
	progress("killed the leading scheduler %s (term %d, SIGKILL); pool then: received %d, examined %d, reassigned %d",
		oldName, old.Term, old.Pool.GetReceived(), old.Pool.GetExamined(), old.Pool.GetReassigned())
	survivors := slices.DeleteFunc(slices.Clone(schedulers), func(sc string) bool { return sc == oldName })
	var now *styxv1.StatusResponse
	testwait.Every(t, 60*time.Second, e2ePoll, "a new leader", func() bool {
		now, _ = leaderStatus(survivors)
		return now != nil
	})
	progress("%s leads (term %d) %.1fs after the kill", now.SchedulerId, now.Term, time.Since(killedAt).Seconds())
	time.Sleep(3 * time.Second)
	stop()
	mu.Lock()
	if loadErr != nil {
		t.Errorf("queries failed during the kills: %v", loadErr)
	}
	mu.Unlock()

	// 5. Nothing lost: every sighting either node submitted ended in a
	// verdict, and every address is now answered from the store of the
	// node that asked.
	waitResolved(t, api, sent, progress)
	for _, n := range nodes {
		api[n].checkFromStore(t, sent[n])
	}
	after, _ := leaderStatus(survivors)
	if after != nil {
		p := after.Pool
		progress("new leader %s, term %d: received %d, examined %d, verdicts %d, reassigned %d, shed %d, expired %d",
			after.SchedulerId, after.Term, p.GetReceived(), p.GetExamined(), p.GetVerdicts(), p.GetReassigned(), p.GetShed(), p.GetExpired())
		for _, w := range after.Workers {
			progress("  worker %s %s: %d batches, %d addresses", w.WorkerId, w.State, w.BatchesDone, w.AddressesDone)
		}
	}
	progress("%d addresses in all, each answered with a worker's verdict", total(sent))

	// 6. Under load, kill one of the three JetStream servers: the leader of
	// the clean stream, the one the leader publishes most to. The streams
	// keep a quorum of two, so publishing goes on, and both nodes keep
	// applying the log without a stall. Then start the server again.
	js := map[string]*natsMonitor{}
	for _, n := range natsServers {
		js[n] = &natsMonitor{name: n, base: "https://" + s.port(n, 8222), client: &http.Client{
			Timeout:   5 * time.Second,
			Transport: &http.Transport{TLSClientConfig: admin.ClientConfig(pki.AnyOf(pki.NATS))},
		}}
	}
	victimNATS := js[natsServers[0]].streamLeader(verdictlog.StreamClean)
	if !slices.Contains(natsServers, victimNATS) {
		t.Fatalf("%s /jsz names no leader of %s among %v (%q)", natsServers[0], verdictlog.StreamClean, natsServers, victimNATS)
	}
	stalls := func() float64 {
		sum := 0.0
		for _, n := range nodes {
			m := api[n].mustMetrics(t)
			sum += m["styx_node_log_stalls_total"] + m["styx_node_log_stalled"]
		}
		return sum
	}
	applied := func(n string) float64 { return sumByPrefix(api[n].mustMetrics(t), "styx_node_log_messages_total{") }
	stallsBefore := stalls()
	startLoad := func() (stop func()) {
		loadCtx, cancel := context.WithCancel(ctx)
		var done sync.WaitGroup
		done.Add(1)
		go func() {
			defer done.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-loadCtx.Done():
					return
				case <-tick.C:
				}
				n := nodes[i%len(nodes)]
				mu.Lock()
				batch := addrs.next(60)
				mu.Unlock()
				if err := api[n].query(batch); err != nil {
					mu.Lock()
					loadErr = errors.Join(loadErr, err)
					mu.Unlock()
					continue
				}
				mu.Lock()
				sent[n] = append(sent[n], batch...)
				mu.Unlock()
			}
		}()
		return func() { cancel(); done.Wait() }
	}
	stopLoad2 := startLoad()
	defer stopLoad2()
	testwait.Every(t, 30*time.Second, e2ePoll, "both nodes applying log messages under load", func() bool {
		for _, n := range nodes {
			if applied(n) == 0 {
				return false
			}
		}
		return true
	})
	victimContainer := s.containers(victimNATS)[0]
	atKill := map[string]float64{}
	for _, n := range nodes {
		atKill[n] = applied(n)
	}
	s.kill(victimContainer)
	progress("killed JetStream server %s (SIGKILL), the clean stream's leader; log messages applied then: %v", victimNATS, atKill)
	// Both nodes apply a good many messages published after the kill (at
	// least 40: some seconds of load), and no follower stalls meanwhile.
	testwait.Every(t, 60*time.Second, e2ePoll, "both nodes applying log messages with a JetStream server down", func() bool {
		if st := stalls(); st != stallsBefore {
			t.Fatalf("a verdict log follower stalled with %s down (stalls and stalled, summed over the nodes: %.0f, before %.0f)", victimNATS, st, stallsBefore)
		}
		for _, n := range nodes {
			if applied(n) < atKill[n]+40 {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		progress("%s applied %.0f log messages since the kill", n, applied(n)-atKill[n])
	}
	if out, err := exec.Command("docker", "start", victimContainer).CombinedOutput(); err != nil {
		t.Fatalf("docker start %s: %v: %s", victimContainer, err, out)
	}
	testwait.Every(t, 90*time.Second, e2ePoll, victimNATS+" healthy again", func() bool {
		out, err := exec.Command("docker", "inspect", "--format", "{{.State.Health.Status}}", victimContainer).Output()
		return err == nil && strings.TrimSpace(string(out)) == "healthy"
	})
	// A restarted container gets another published port.
	js[victimNATS].base = "https://" + s.port(victimNATS, 8222)
	progress("%s started again and healthy", victimNATS)
	time.Sleep(3 * time.Second) // some load with all three servers up again
	stopLoad2()
	mu.Lock()
	if loadErr != nil {
		t.Errorf("queries failed around the JetStream server kill: %v", loadErr)
	}
	mu.Unlock()
	if st := stalls(); st != stallsBefore {
		t.Errorf("a verdict log follower stalled (stalls and stalled, summed over the nodes: %.0f, before %.0f)", st, stallsBefore)
	}

	// 7. Nothing lost: every sighting ended in a verdict, the three servers
	// hold the same streams, both nodes applied all of them, and each node
	// answers every address either node asked for from its own store.
	waitResolved(t, api, sent, progress)
	var heads map[string]uint64
	seen := map[string]map[string]uint64{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last sequences seen on the JetStream servers: %v", seen)
		}
	})
	testwait.Every(t, 60*time.Second, e2ePoll, "the three JetStream servers holding the same streams", func() bool {
		heads = nil
		same := true
		for _, n := range natsServers {
			h := js[n].lastSeqs()
			seen[n] = h
			switch {
			case len(h) != len(logStreams):
				same = false
			case heads == nil:
				heads = h
			case !maps.Equal(h, heads):
				same = false
			}
		}
		return same
	})
	progress("every JetStream server holds the streams up to %v", heads)
	testwait.Every(t, 60*time.Second, e2ePoll, "both nodes at the streams' heads", func() bool {
		for _, n := range nodes {
			m := api[n].mustMetrics(t)
			for _, st := range logStreams {
				if uint64(m[`styx_node_log_applied_sequence{stream="`+st+`"}`]) != heads[st] {
					return false
				}
			}
		}
		return true
	})
	for _, n := range nodes {
		var all []netip.Addr
		for _, other := range nodes {
			all = append(all, sent[other]...)
		}
		api[n].checkFromStore(t, all)
	}
	if after, _ := leaderStatus(survivors); after != nil {
		m, err := schedulerMetrics("http://" + s.port(after.SchedulerId, 7080))
		if err != nil {
			t.Errorf("%s /metrics: %v", after.SchedulerId, err)
		} else {
			if d := m["styx_scheduler_log_publish_dropped_total"]; d != 0 {
				t.Errorf("%s dropped %.0f log batches", after.SchedulerId, d)
			}
			progress("%s: %.0f log messages published, %.0f publishes tried again", after.SchedulerId,
				m["styx_scheduler_log_messages_total"], m["styx_scheduler_log_publish_retries_total"])
		}
	}
	progress("%d addresses in all; each node holds the verdict of every one", total(sent))
}

// natsMonitor is a JetStream server's monitoring port, published on
// 127.0.0.1 (HTTPS, its identity checked).
type natsMonitor struct {
	name, base string
	client     *http.Client
}

// jsz is the part of nats-server's /jsz?streams=true the test reads.
type jsz struct {
	AccountDetails []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster *struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
			State struct {
				LastSeq uint64 `json:"last_seq"`
			} `json:"state"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func (m *natsMonitor) jsz() (*jsz, error) {
	resp, err := m.client.Get(m.base + "/jsz?accounts=true&streams=true")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s /jsz: %s", m.name, resp.Status)
	}
	var j jsz
	return &j, json.NewDecoder(resp.Body).Decode(&j)
}

// streamLeader is the server that leads stream, or "".
func (m *natsMonitor) streamLeader(stream string) string {
	j, err := m.jsz()
	if err != nil {
		return ""
	}
	for _, a := range j.AccountDetails {
		for _, st := range a.Streams {
			if st.Name == stream && st.Cluster != nil {
				return st.Cluster.Leader
			}
		}
	}
	return ""
}

// lastSeqs is the last sequence of each STYX stream on this server, or nil.
func (m *natsMonitor) lastSeqs() map[string]uint64 {
	j, err := m.jsz()
	if err != nil {
		return nil
	}
	out := map[string]uint64{}
	for _, a := range j.AccountDetails {
		for _, st := range a.Streams {
			if slices.Contains(logStreams, st.Name) {
				out[st.Name] = st.State.LastSeq
			}
		}
	}
	return out
}

// schedulerMetrics reads a scheduler's /metrics (the same text format as
// a node's).
func schedulerMetrics(base string) (map[string]float64, error) {
	n := &nodeAPI{name: "scheduler", base: base, client: &http.Client{Timeout: 5 * time.Second}}
	return n.metrics()
}

// sumByPrefix sums the metrics whose name{labels} key starts with prefix.
func sumByPrefix(m map[string]float64, prefix string) float64 {
	sum := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			sum += v
		}
	}
	return sum
}

// stack is one compose project.
type stack struct {
	t       *testing.T
	cmd     []string // docker-compose, or docker compose
	root    string   // the repository
	files   []string
	project string // also the image tag
}

func newStack(t *testing.T, cmd []string) *stack {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	s := &stack{t: t, cmd: cmd, root: root, project: "styxe2e" + hex.EncodeToString(b)}
	ov := filepath.Join(t.TempDir(), "e2e-override.yml")
	if err := os.WriteFile(ov, []byte(override), 0o644); err != nil {
		t.Fatal(err)
	}
	s.files = []string{filepath.Join(root, "deploy", "compose", "docker-compose.yml"), ov}
	return s
}

// buildImages builds the six images under the project's tag and removes
// them when the test ends.
func (s *stack) buildImages() {
	t := s.t
	t.Cleanup(func() {
		for _, r := range []string{"etcd", "nats", "scheduler", "worker", "node", "pki"} {
			if out, err := exec.Command("docker", "rmi", "styx-"+r+":"+s.project).CombinedOutput(); err != nil {
				t.Logf("docker rmi styx-%s:%s: %v: %s", r, s.project, err, out)
			}
		}
	})
	cmd := exec.Command("make", "-C", s.root, "images", "IMAGE_TAG="+s.project)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}
}

// up starts the stack; it is taken down with its volumes when the test
// ends, after the logs of a failed run are printed.
func (s *stack) up() {
	t := s.t
	t.Cleanup(func() {
		if out, err := s.run("--profile", "scale", "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
			t.Logf("compose down: %v: %s", err, out)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := s.run("--profile", "scale", "logs", "--no-color", "--tail", "40")
			t.Logf("compose logs (last 40 lines per container):\n%s", out)
		}
	})
	s.compose("up", "-d")
}

func (s *stack) run(args ...string) (string, error) {
	full := slices.Clone(s.cmd[1:])
	for _, f := range s.files {
		full = append(full, "-f", f)
	}
	full = append(full, "-p", s.project)
	full = append(full, args...)
	cmd := exec.Command(s.cmd[0], full...)
	cmd.Env = append(os.Environ(), "IMAGE_TAG="+s.project)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (s *stack) compose(args ...string) string {
	s.t.Helper()
	out, err := s.run(args...)
	if err != nil {
		s.t.Fatalf("compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// port is the 127.0.0.1 host address a service's container port is
// published on.
func (s *stack) port(service string, port int) string {
	s.t.Helper()
	out := strings.TrimSpace(s.compose("port", service, strconv.Itoa(port)))
	if _, err := netip.ParseAddrPort(out); err != nil {
		s.t.Fatalf("compose port %s %d: %q", service, port, out)
	}
	return out
}

func (s *stack) containers(service string) []string {
	return strings.Fields(s.compose("ps", "-q", service))
}

// adminIdentity copies the admin identity out of the pki service's
// volume (docker cp works on the exited container) and loads it.
func (s *stack) adminIdentity() *pki.Source {
	t := s.t
	t.Helper()
	dir := filepath.Join(t.TempDir(), "admin")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	src := s.containers("pki")[0] + ":/var/lib/styx-pki/admin-admin/."
	if out, err := exec.Command("docker", "cp", src, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker cp %s: %v: %s", src, err, out)
	}
	id, err := pki.Load(dir, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if id.Identity().Role != pki.Admin {
		t.Fatalf("%s holds %s, not an admin", src, id.Identity())
	}
	return id
}

func (s *stack) kill(container string) {
	s.t.Helper()
	if out, err := exec.Command("docker", "kill", "--signal", "KILL", container).CombinedOutput(); err != nil {
		s.t.Fatalf("docker kill %s: %v: %s", container, err, out)
	}
}

// nodeAPI is a cluster node's HTTP API on its published port.
type nodeAPI struct {
	name, base string
	client     *http.Client
}

// query asks for addrs in one POST /v2/.
func (n *nodeAPI) query(addrs []netip.Addr) error {
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = a.String()
	}
	resp, err := n.client.PostForm(n.base+"/v2/?p=0", url.Values{"ips": {strings.Join(list, ",")}})
	if err != nil {
		return fmt.Errorf("%s: %w", n.name, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.Status != "ok" {
		return fmt.Errorf("%s: POST /v2/: %s, status %q, %v", n.name, resp.Status, body.Status, err)
	}
	return nil
}

func (n *nodeAPI) mustQuery(t *testing.T, addrs []netip.Addr) {
	t.Helper()
	if err := n.query(addrs); err != nil {
		t.Fatal(err)
	}
}

func (n *nodeAPI) health() (map[string]any, error) {
	resp, err := n.client.Get(n.base + "/healthz")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var h map[string]any
	return h, json.NewDecoder(resp.Body).Decode(&h)
}

// metrics reads /metrics into a map keyed by name{labels}.
func (n *nodeAPI) metrics() (map[string]float64, error) {
	resp, err := n.client.Get(n.base + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, nil
}

func (n *nodeAPI) mustMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	m, err := n.metrics()
	if err != nil {
		t.Fatalf("%s /metrics: %v", n.name, err)
	}
	return m
}

// mustCount runs f and returns by how much the node's count of addresses
// answered from source ("store" or "engine") went up meanwhile.
func (n *nodeAPI) mustCount(t *testing.T, source string, f func()) int {
	t.Helper()
	key := `styx_node_query_addresses_total{source="` + source + `"}`
	before := n.mustMetrics(t)[key]
	f()
	return int(n.mustMetrics(t)[key] - before)
}

// checkFromStore asks for addrs again and checks that each answer comes
// from the node's store: the verdict a worker made for it.
func (n *nodeAPI) checkFromStore(t *testing.T, addrs []netip.Addr) {
	t.Helper()
	missing := 0
	for chunk := range slices.Chunk(addrs, 1000) {
		got := n.mustCount(t, "store", func() { n.mustQuery(t, chunk) })
		missing += len(chunk) - got
	}
	if missing != 0 {
		t.Errorf("%s: %d of %d addresses not answered from a stored verdict", n.name, missing, len(addrs))
	}
}

// waitResolved waits until every sighting each node submitted has its
// outcome, and checks that each outcome was a verdict.
func waitResolved(t *testing.T, api map[string]*nodeAPI, sent map[string][]netip.Addr, progress func(string, ...any)) {
	t.Helper()
	var last map[string]map[string]float64
	testwait.Every(t, 120*time.Second, e2ePoll, "an outcome for every sighting", func() bool {
		last = map[string]map[string]float64{}
		for _, n := range nodes {
			m, err := api[n].metrics()
			if err != nil {
				return false
			}
			last[n] = m
			outcomes := 0.0
			for _, k := range []string{"verdict", "expired", "shed", "rejected", "unspecified"} {
				outcomes += m[`styx_node_outcomes_total{kind="`+k+`"}`]
			}
			if m["styx_node_sightings_pending"] != 0 || int(m["styx_node_sightings_submitted_total"]) != len(sent[n]) || outcomes < m["styx_node_sightings_submitted_total"] {
				return false
			}
		}
		return true
	})
	for _, n := range nodes {
		m := last[n]
		submitted, verdicts := m["styx_node_sightings_submitted_total"], m[`styx_node_outcomes_total{kind="verdict"}`]
		progress("%s: %d queried, %.0f submitted, %.0f verdicts, %.0f re-sent after reconnects, %.0f duplicate outcomes ignored, %.0f verdict errors",
			n, len(sent[n]), submitted, verdicts, m["styx_node_sightings_resent_total"], m["styx_node_outcomes_duplicate_total"], m["styx_node_verdict_errors_total"])
		if verdicts != submitted {
			t.Errorf("%s: %.0f sightings submitted, %.0f verdicts (expired %.0f, shed %.0f, rejected %.0f)", n, submitted, verdicts,
				m[`styx_node_outcomes_total{kind="expired"}`], m[`styx_node_outcomes_total{kind="shed"}`], m[`styx_node_outcomes_total{kind="rejected"}`])
		}
		if e := m["styx_node_verdict_errors_total"]; e != 0 {
			t.Errorf("%s: %.0f verdict errors", n, e)
		}
	}
}

// addrSource hands out addresses never handed out before, each inside a
// network sampled from the location database, that a node streams to STYX
// (global unicast, not private).
type addrSource struct {
	nets []netip.Prefix
	rng  *mrand.Rand
	seen map[netip.Addr]bool
}

func (s *addrSource) next(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for len(out) < n {
		a := addrsample.In(s.nets[s.rng.IntN(len(s.nets))], s.rng)
		if !a.IsGlobalUnicast() || a.IsPrivate() || s.seen[a] {
			continue
		}
		s.seen[a] = true
		out = append(out, a)
	}
	return out
}

func total(sent map[string][]netip.Addr) int {
	n := 0
	for _, a := range sent {
		n += len(a)
	}
	return n
}

// composeCommand is docker-compose when installed, else the compose plugin.
func composeCommand() ([]string, error) {
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}, nil
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	return nil, errors.New("neither docker-compose nor the docker compose plugin is installed")
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}
