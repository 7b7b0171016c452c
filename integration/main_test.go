package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no test leaves goroutines behind and removes the
// binaries built for the multi-process tests.
func TestMain(m *testing.M) {
	code := 0
	defer func() {
		if binDir != "" {
			os.RemoveAll(binDir)
		}
		os.Exit(code)
	}()
	code = runWithLeakCheck(m)
}

func runWithLeakCheck(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	if err := goleak.Find(
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreTopFunction("go.etcd.io/etcd/client/pkg/v3/logutil.(*MergeLogger).outputLoop"),
	); err != nil {
		os.Stderr.WriteString("goroutine leak: " + err.Error() + "\n")
		return 1
	}
	return 0
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds styx-scheduler, styx-worker and styx-node once per test
// run and returns the directory holding them.
func binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "styx-integration-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
			"github.com/styx-inference/styx/scheduler/cmd/styx-scheduler",
			"github.com/styx-inference/styx/worker/cmd/styx-worker",
			"github.com/styx-inference/styx/clusternode/cmd/styx-node")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = err
			t.Logf("go build: %s", out)
		}
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return binDir
}
