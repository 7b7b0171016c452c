//go:build linux

package integration

import (
	"bufio"
	"bytes"
	"net/netip"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// parityVerdicts is how many verdicts are made while node B is away.
const parityVerdicts = 200_000

// Node B is away while node A has parityVerdicts addresses examined; once
// back, B holds exactly A's verdicts (styx-node export-verdicts on both).
// A node that joins for the first time half-way (C, empty store) reaches
// the same set while the load runs. The variants break something
// half-way: the leader is killed (kill -9) and the standby takes over, or
// the JetStream server restarts.
func TestNodeAwayReachesParity(t *testing.T) {
	for _, tc := range []struct {
		name   string
		break_ func(t *testing.T, c *procCluster, s1, s2 *procScheduler)
	}{
		{"away", nil},
		{"leader killed", func(t *testing.T, c *procCluster, s1, s2 *procScheduler) {
			s1.signal(t, syscall.SIGKILL)
			c.waitLeading(s2)
		}},
		{"log server restarted", func(t *testing.T, c *procCluster, _, _ *procScheduler) {
			c.nats.Stop()
			time.Sleep(time.Second)
			c.nats.Restart()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() {
				t.Skip("-short: 200,000 verdicts per variant")
			}
			c := newProcCluster(t)
			s1 := c.startScheduler("s1")
			c.waitLeading(s1)
			s2 := c.startScheduler("s2")
			c.startWorker("w1", 0)
			c.startWorker("w2", 0)
			a := c.startNode("a")
			b := c.startNode("b")
			b.stop(t)

			addrs := procAddrs(0, parityVerdicts)
			half := len(addrs) / 2
			submitChunks(t, a, addrs[:half])
			a.waitResolved(t, 3*time.Minute, half)
			fresh := c.startNode("c") // new, empty store: replays, then follows
			if tc.break_ != nil {
				tc.break_(t, c, s1, s2)
			}
			submitChunks(t, a, addrs[half:])
			a.waitResolved(t, 3*time.Minute, len(addrs))
			a.checkExactlyOnce(t, addrs)

			b = c.startNode("b") // on its data directory: from its cursors
			heads := logHeads(t, c.nats.URL())
			for _, n := range []*procNode{a, b, fresh} {
				waitApplied(t, n.node, 3*time.Minute, heads)
			}
			for _, n := range []*procNode{a, b, fresh} {
				n.stop(t)
			}
			want := c.exportVerdicts(t, "a")
			if len(want) < parityVerdicts {
				t.Fatalf("node A holds %d verdicts, want at least %d", len(want), parityVerdicts)
			}
			for _, id := range []string{"b", "c"} {
				got := c.exportVerdicts(t, id)
				missing, extra := 0, 0
				for l := range want {
					if !got[l] {
						missing++
					}
				}
				for l := range got {
					if !want[l] {
						extra++
					}
				}
				if missing != 0 || extra != 0 {
					t.Fatalf("node %s: %d of %d verdicts missing, %d not on node A", id, missing, len(want), extra)
				}
				t.Logf("node %s holds all %d verdicts of node A", id, len(want))
			}
		})
	}
}

// submitChunks submits addrs in chunks of 4,096.
func submitChunks(t *testing.T, n *procNode, addrs []netip.Addr) {
	t.Helper()
	for len(addrs) > 0 {
		k := min(len(addrs), 4096)
		n.submit(t, addrs[:k])
		addrs = addrs[k:]
	}
}

// exportVerdicts runs styx-node export-verdicts on a stopped node's data
// directory and returns its lines (address,label).
func (c *procCluster) exportVerdicts(t *testing.T, id string) map[string]bool {
	t.Helper()
	cmd := exec.Command(filepath.Join(c.bin, "styx-node"), "export-verdicts", "--data-dir", filepath.Join(c.dir, "node-"+id), "--out", "-")
	cmd.Env = procEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("export-verdicts of node %s: %v\n%s", id, err, stderr.String())
	}
	lines := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if l := sc.Text(); l != "" && l != "address,label" {
			lines[l] = true
		}
	}
	return lines
}
