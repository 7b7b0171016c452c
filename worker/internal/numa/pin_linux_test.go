package numa

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"k8s.io/utils/cpuset"
)

// pinHelperEnv tells the test binary, re-executed by TestPin, to pin itself
// to the cpulist in the variable and report what it got.
const pinHelperEnv = "NUMA_TEST_PIN_CPUS"

// pinReport is what the helper prints on one line after pinReportPrefix.
type pinReport struct {
	Threads    map[int]string `json:"threads"` // tid -> cpulist
	Status     string         `json:"status"`  // Cpus_allowed_list of the process
	GOMAXPROCS int            `json:"gomaxprocs"`
	MemPolicy  string         `json:"mempolicy"` // "ok", "unsupported" or the error
	Error      string         `json:"error,omitempty"`
}

const pinReportPrefix = "PIN-REPORT "

// TestPinHelper is not a test: it runs only inside the subprocess TestPin
// starts, so the test process itself is never pinned.
func TestPinHelper(t *testing.T) {
	list, ok := os.LookupEnv(pinHelperEnv)
	if !ok {
		t.Skip("helper process for TestPin")
	}
	rep := pinReport{Threads: map[int]string{}}
	defer func() {
		b, _ := json.Marshal(rep)
		fmt.Println(pinReportPrefix + string(b))
	}()
	cpus, err := cpuset.Parse(list)
	if err != nil {
		rep.Error = err.Error()
		return
	}
	if err := Pin(cpus); err != nil {
		rep.Error = err.Error()
		return
	}
	switch err := PreferMemory(0); {
	case err == nil:
		rep.MemPolicy = "ok"
	case IsUnsupported(err):
		rep.MemPolicy = "unsupported"
	default:
		rep.MemPolicy = err.Error()
	}
	// Make the runtime start more threads after pinning: they must inherit
	// the affinity.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			x := 0
			for i := range 100_000 {
				x += i
			}
			_ = x
		})
	}
	wg.Wait()
	rep.GOMAXPROCS = runtime.GOMAXPROCS(0)
	tids, err := ThreadIDs()
	if err != nil {
		rep.Error = err.Error()
		return
	}
	for _, tid := range tids {
		a, err := Affinity(tid)
		if err != nil {
			continue // exited
		}
		rep.Threads[tid] = a.String()
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		rep.Error = err.Error()
		return
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			rep.Status = strings.TrimSpace(v)
		}
	}
}

func TestPin(t *testing.T) {
	topo, err := Read("/sys")
	if err != nil {
		t.Skipf("no host topology: %v", err)
	}
	allowed, err := Affinity(0)
	if err != nil {
		t.Fatal(err)
	}
	node0 := topo.Nodes[0].CPUs.Intersection(allowed)
	if node0.IsEmpty() {
		t.Skip("this process may not run on node 0")
	}
	tests := []struct {
		name string
		cpus cpuset.CPUSet
	}{
		{"node 0", node0},
		{"first cpu of node 0", cpuset.New(node0.List()[0])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := runPinHelper(t, tt.cpus.String())
			if rep.Error != "" {
				t.Fatalf("helper: %s", rep.Error)
			}
			want := tt.cpus.String()
			if rep.Status != want {
				t.Errorf("Cpus_allowed_list = %q, want %q", rep.Status, want)
			}
			if len(rep.Threads) < 2 {
				t.Errorf("saw %d threads, want several", len(rep.Threads))
			}
			for tid, got := range rep.Threads {
				if got != want {
					t.Errorf("thread %d affinity = %s, want %s", tid, got, want)
				}
			}
			if rep.GOMAXPROCS != tt.cpus.Size() {
				t.Errorf("GOMAXPROCS = %d, want %d", rep.GOMAXPROCS, tt.cpus.Size())
			}
			if rep.MemPolicy != "ok" && rep.MemPolicy != "unsupported" {
				t.Errorf("PreferMemory(0): %s", rep.MemPolicy)
			}
		})
	}
}

func runPinHelper(t *testing.T, cpus string) pinReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPinHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), pinHelperEnv+"="+cpus)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if js, ok := strings.CutPrefix(sc.Text(), pinReportPrefix); ok {
			var rep pinReport
			if err := json.Unmarshal([]byte(js), &rep); err != nil {
				t.Fatalf("helper report %q: %v", js, err)
			}
			return rep
		}
	}
	t.Fatalf("helper printed no report:\n%s", out)
	return pinReport{}
}

func TestPreferMemoryInvalid(t *testing.T) {
	if err := PreferMemory(-1); err == nil {
		t.Error("PreferMemory(-1) succeeded")
	}
}
