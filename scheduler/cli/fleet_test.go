package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// TestMain checks that no test leaves goroutines behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"))
}

// fakeAdmin is a scheduler's AdminService with canned answers. Status
// lists the workers in listed; Drain removes the drained ones from it after
// goneAfter more Status calls (never when goneAfter < 0).
type fakeAdmin struct {
	styxv1.UnimplementedAdminServiceServer

	mu        sync.Mutex
	listed    []*styxv1.WorkerStatus
	goneAfter int
	draining  map[string]bool
	requests  []*styxv1.DrainRequest
	statusReq []*styxv1.StatusRequest
}

func (f *fakeAdmin) Status(_ context.Context, req *styxv1.StatusRequest) (*styxv1.StatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statusReq = append(f.statusReq, req)
	if len(f.draining) > 0 && f.goneAfter >= 0 {
		if f.goneAfter == 0 {
			var keep []*styxv1.WorkerStatus
			for _, w := range f.listed {
				if !f.draining[w.WorkerId] {
					keep = append(keep, w)
				}
			}
			f.listed = keep
		}
		f.goneAfter--
	}
	return &styxv1.StatusResponse{
		SchedulerId: "sched-a", Leader: true, Term: 7, LeaderId: "sched-a", Workers: f.listed,
		Pool: &styxv1.PoolStatus{
			Pending: 12, InFlight: 512, OldestAgeMillis: 35, Received: 10000, Examined: 9400, Deduplicated: 88,
			Shed: 500, Expired: 100, Reassigned: 3, Verdicts: 9488, Coverage: 0.94, ShedPolicy: "sample 1/5",
		},
		Nodes: []string{"node-1", "node-2"},
	}, nil
}

func (f *fakeAdmin) Drain(_ context.Context, req *styxv1.DrainRequest) (*styxv1.DrainResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	resp := &styxv1.DrainResponse{SchedulerId: "sched-a", Term: 7}
	for _, id := range req.WorkerIds {
		found := false
		for _, w := range f.listed {
			if w.WorkerId == id {
				found = true
			}
		}
		if !found {
			return nil, grpcstatus.Errorf(codes.NotFound, "no such worker: %s", id)
		}
	}
	if f.draining == nil {
		f.draining = map[string]bool{}
	}
	for _, w := range f.listed {
		if (req.Host != "" && w.Host == req.Host) || contains(req.WorkerIds, w.WorkerId) {
			f.draining[w.WorkerId] = true
			d := proto.Clone(w).(*styxv1.WorkerStatus)
			d.State, d.DrainRequested = "draining", true
			resp.Workers = append(resp.Workers, d)
		}
	}
	if len(resp.Workers) == 0 {
		return nil, grpcstatus.Errorf(codes.NotFound, "no worker on host %q", req.Host)
	}
	return resp, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func testWorkers() []*styxv1.WorkerStatus {
	return []*styxv1.WorkerStatus{
		{WorkerId: "host-a-numa0", Address: "10.0.0.1:7171", Host: "host-a", NumaNode: 0, Cpus: "0-15", Capacity: 32, Credits: 20,
			InFlight: 12, BatchesDone: 4100, AddressesDone: 4_198_400, AddressesPerSecond: 61234.5, ModelVersion: "raven-2026-11", State: "ready"},
		{WorkerId: "host-a-numa1", Address: "10.0.0.1:7172", Host: "host-a", NumaNode: 1, Cpus: "16-31", Capacity: 32, Credits: 32,
			ModelVersion: "raven-2026-11", State: "connecting"},
		{WorkerId: "host-b-7171", Address: "10.0.0.2:7171", Host: "host-b", NumaNode: -1, Cpus: "0-3", Capacity: 8, Credits: 0,
			InFlight: 8, BatchesDone: 900, AddressesDone: 921_600, AddressesPerSecond: 15000, ModelVersion: "raven-2026-11", State: "ready"},
	}
}

// startFake serves f on 127.0.0.1:0 and returns its address.
func startFake(t *testing.T, f *fakeAdmin) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	styxv1.RegisterAdminServiceServer(srv, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "STYX_") {
			k, _, _ := strings.Cut(kv, "=")
			t.Setenv(k, "") // flags only
			os.Unsetenv(k)
		}
	}
	// The fake scheduler is plaintext; TestFleetOverMutualTLS covers TLS.
	t.Setenv("STYX_INSECURE", "true")
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (run with -update):\n%s", name, path, got)
	}
}

func TestFleetTables(t *testing.T) {
	f := &fakeAdmin{listed: testWorkers()}
	addr := startFake(t, f)
	for _, tc := range []struct{ name, cmd string }{{"workers", "workers"}, {"pool", "pool"}} {
		code, out, errs := run(t, "fleet", tc.cmd, "--addr", addr)
		if code != 0 || errs != "" {
			t.Fatalf("fleet %s: exit %d, stderr %q", tc.cmd, code, errs)
		}
		golden(t, "fleet_"+tc.name, out)
	}
	for _, r := range f.statusReq {
		if !r.ViaLeader {
			t.Errorf("Status without via_leader: a standby would not forward it")
		}
	}
}

func TestFleetJSON(t *testing.T) {
	addr := startFake(t, &fakeAdmin{listed: testWorkers()})
	code, out, _ := run(t, "fleet", "workers", "--addr", addr, "--json")
	var ws struct {
		SchedulerID string `json:"scheduler_id"`
		Term        int64  `json:"term"`
		Workers     []struct {
			WorkerID           string  `json:"worker_id"`
			NumaNode           int     `json:"numa_node"`
			Credits            int     `json:"credits"`
			AddressesPerSecond float64 `json:"addresses_per_second"`
			AddressesDone      string  `json:"addresses_done"`
		} `json:"workers"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &ws) != nil {
		t.Fatalf("fleet workers --json: exit %d:\n%s", code, out)
	}
	if ws.SchedulerID != "sched-a" || ws.Term != 7 || len(ws.Workers) != 3 || ws.Workers[2].NumaNode != -1 ||
		ws.Workers[2].Credits != 0 || ws.Workers[0].AddressesPerSecond != 61234.5 || ws.Workers[0].AddressesDone != "4198400" {
		t.Errorf("fleet workers --json: %+v", ws)
	}
	if !strings.Contains(out, `"credits": 0`) {
		t.Errorf("zero values left out:\n%s", out)
	}
	code, out, _ = run(t, "fleet", "pool", "--addr", addr, "--json")
	var p struct {
		Pool struct {
			Pending  string  `json:"pending"`
			Coverage float64 `json:"coverage"`
		} `json:"pool"`
		Workers, WorkersReady int
		Nodes                 []string `json:"nodes"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &p) != nil || p.Pool.Pending != "12" || p.Pool.Coverage != 0.94 || len(p.Nodes) != 2 {
		t.Errorf("fleet pool --json: exit %d, %+v:\n%s", code, p, out)
	}
}

func TestFleetDrain(t *testing.T) {
	t.Run("wait", func(t *testing.T) {
		f := &fakeAdmin{listed: testWorkers(), goneAfter: 1}
		addr := startFake(t, f)
		code, out, errs := run(t, "fleet", "drain", "--addr", addr, "--host", "host-a", "--wait", "--reason", "reboot")
		if code != 0 {
			t.Fatalf("exit %d, stderr %q", code, errs)
		}
		for _, want := range []string{"leader sched-a (term 7) is draining 2 workers:", "host-a-numa0", "worker host-a-numa0 left after", "worker host-a-numa1 left after", "drained 2 workers in"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if r := f.requests[0]; r.Host != "host-a" || r.Reason != "reboot" || len(r.WorkerIds) != 0 {
			t.Errorf("request %v", r)
		}
	})
	t.Run("json", func(t *testing.T) {
		addr := startFake(t, &fakeAdmin{listed: testWorkers(), goneAfter: 0})
		code, out, _ := run(t, "fleet", "drain", "--addr", addr, "--worker", "host-b-7171", "--wait", "--json")
		var v struct {
			Workers []struct {
				WorkerID string `json:"worker_id"`
				State    string `json:"state"`
			} `json:"workers"`
			Waited    bool              `json:"waited"`
			Left      []json.RawMessage `json:"left"`
			Remaining []json.RawMessage `json:"remaining"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &v) != nil || len(v.Workers) != 1 || v.Workers[0].State != "draining" ||
			!v.Waited || len(v.Left) != 1 || v.Remaining == nil || len(v.Remaining) != 0 {
			t.Errorf("exit %d, %+v:\n%s", code, v, out)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		addr := startFake(t, &fakeAdmin{listed: testWorkers(), goneAfter: -1})
		code, _, errs := run(t, "fleet", "drain", "--addr", addr, "--worker", "host-b-7171", "--wait", "--timeout", "1ns")
		if code != 3 || !strings.Contains(errs, "1 worker still registered after 1ns") || !strings.Contains(errs, "host-b-7171") {
			t.Errorf("exit %d, stderr %q", code, errs)
		}
	})
	t.Run("not found", func(t *testing.T) {
		addr := startFake(t, &fakeAdmin{listed: testWorkers()})
		code, out, errs := run(t, "fleet", "drain", "--addr", addr, "--worker", "nope")
		if code != 4 || out != "" || !strings.Contains(errs, "no such worker: nope") {
			t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
		}
	})
}

func TestFleetUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"fleet"}, 2, "Exit status:"},
		{[]string{"fleet", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"fleet", "drain"}, 2, "name a worker (--worker ID) or a host (--host HOST)"},
		{[]string{"fleet", "drain", "--worker", "w", "--timeout", "0s"}, 2, "--timeout must be positive"},
		{[]string{"fleet", "workers", "extra"}, 2, "unexpected arguments"},
		{[]string{"fleet", "pool", "--no-such-flag"}, 2, "no-such-flag"},
		{[]string{"fleet", "workers", "--addr", "127.0.0.1:1"}, 1, "cannot connect to the scheduler at 127.0.0.1:1"},
	} {
		code, _, errs := run(t, tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.err) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, errs, tc.code, tc.err)
		}
	}
	code, out, _ := run(t, "fleet", "-h")
	if code != 0 || !strings.Contains(out, "4  drain: no such worker") {
		t.Errorf("fleet -h: exit %d:\n%s", code, out)
	}
}
