package deploy_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/styx-inference/styx/pkg/envflag"
)

// role is a STYX binary, its package and the arguments that print its
// flags.
type role struct {
	binary, pkg string
	help        []string
}

var roles = map[string]role{
	"scheduler": {"styx-scheduler", "scheduler/cmd/styx-scheduler", []string{"serve", "-h"}},
	"worker":    {"styx-worker", "worker/cmd/styx-worker", []string{"-h"}},
	"node":      {"styx-node", "clusternode/cmd/styx-node", []string{"serve", "-h"}},
}

var (
	varsOnce sync.Once
	varsErr  error
	varsOf   map[string]map[string]bool // role -> STYX_* variables
)

var flagLine = regexp.MustCompile(`^  -([a-z0-9][a-z0-9.-]*)`)

// styxVars returns the STYX_* variables a role's binary accepts, read from
// the -h output of the binary built from this tree.
func styxVars(t *testing.T, r string) map[string]bool {
	t.Helper()
	varsOnce.Do(func() {
		dir, err := os.MkdirTemp("", "styx-deploy-bin-")
		if err != nil {
			varsErr = err
			return
		}
		defer os.RemoveAll(dir)
		args := []string{"build", "-o", dir + string(filepath.Separator)}
		for _, ro := range roles {
			args = append(args, "github.com/styx-inference/styx/"+ro.pkg)
		}
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			varsErr = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		varsOf = map[string]map[string]bool{}
		for name, ro := range roles {
			cmd := exec.Command(filepath.Join(dir, ro.binary), ro.help...)
			cmd.Env = []string{} // no STYX_* variable from the test's environment
			out, _ := cmd.CombinedOutput()
			vars := map[string]bool{}
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if m := flagLine.FindStringSubmatch(sc.Text()); m != nil {
					vars[envflag.Name("STYX", m[1])] = true
				}
			}
			if len(vars) < 5 {
				varsErr = fmt.Errorf("%s %s: fewer than 5 flags in its help:\n%s", ro.binary, strings.Join(ro.help, " "), out)
				return
			}
			varsOf[name] = vars
		}
	})
	if varsErr != nil {
		t.Fatal(varsErr)
	}
	return varsOf[r]
}

// checkVars reports every STYX_* name in names that the role's binary
// does not accept.
func checkVars(t *testing.T, where, r string, names []string) {
	t.Helper()
	vars := styxVars(t, r)
	for _, n := range names {
		if strings.HasPrefix(n, "STYX_") && !vars[n] {
			t.Errorf("%s: %s is not a variable of %s (no such flag)", where, n, roles[r].binary)
		}
	}
}
