//go:build linux

package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
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
			heads := logHeads(t, c.nats.URL(), c.natsOpts(t)...)
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

// A node process is killed (kill -9) while it applies the log: after a
// restart on its data directory it holds exactly node A's verdicts, and
// every attack report counted once.
func TestNodeKilledMidApply(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: 200,000 verdicts")
	}
	c := newProcCluster(t)
	s1 := c.startScheduler("s1")
	c.waitLeading(s1)
	c.startWorker("w1", 0)
	c.startWorker("w2", 0)
	a := c.startNode("a")
	addrs := procAddrs(0, parityVerdicts)
	submitChunks(t, a, addrs)
	a.waitResolved(t, 3*time.Minute, len(addrs))

	// Attack reports in 500 messages of one: 50 addresses, 10 reports each.
	pub, stopPub := logPublisher(t, c.nats.URL(), c.natsOpts(t)...)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	for k := range 500 {
		r := attacks.Report{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(k % 50)}), Time: base.Add(time.Duration(k) * time.Second), Kind: attacks.KindLogin, Reporter: "a"}
		pub.Attacks(1, []*styxv1.AttackReport{r.Proto()})
	}
	stopPub()
	heads := logHeads(t, c.nats.URL(), c.natsOpts(t)...)

	args := []string{"serve", "--id=b", "--etcd-endpoints=" + c.etcd.Endpoint(), "--http-addr=127.0.0.1:0",
		"--data-dir=" + filepath.Join(c.dir, "node-b"), "--db=" + locdb.DefaultPath, "--skip-verify",
		"--nats-url=" + c.nats.URL(), "--lease-ttl=" + procTTL.String(), "--log-level=info",
		"--pki-dir=" + c.identity(pki.Node, "b")}
	b := c.start("node-b", "styx-node", args...)
	addr, _ := b.waitLog(t, 30*time.Second, "node serving")["http_addr"].(string)
	var applied uint64
	testwait.Every(t, 60*time.Second, time.Millisecond, "node B applying the log", func() bool {
		applied = c.nodeApplied(addr)[verdictlog.StreamClean]
		return applied > 0
	})
	b.signal(t, syscall.SIGKILL)
	if applied >= heads[verdictlog.StreamClean] {
		t.Fatalf("node B had applied all %d messages before the kill: nothing was cut", applied)
	}
	t.Logf("node B killed after %d of %d messages of %s", applied, heads[verdictlog.StreamClean], verdictlog.StreamClean)

	b = c.start("node-b-again", "styx-node", args...)
	addr, _ = b.waitLog(t, 30*time.Second, "node serving")["http_addr"].(string)
	testwait.For(t, 3*time.Minute, "node B at the log's heads", func() bool {
		got := c.nodeApplied(addr)
		return got[verdictlog.StreamClean] >= heads[verdictlog.StreamClean] && got[verdictlog.StreamProxy] >= heads[verdictlog.StreamProxy]
	})
	b.signal(t, syscall.SIGTERM)
	testwait.For(t, 30*time.Second, "node B stopped", b.exited)
	a.stop(t)
	want, got := c.exportVerdicts(t, "a"), c.exportVerdicts(t, "b")
	if len(got) != len(want) || len(want) < parityVerdicts {
		t.Fatalf("node B holds %d verdicts, node A %d", len(got), len(want))
	}
	for l := range want {
		if !got[l] {
			t.Fatalf("node B lacks %s", l)
		}
	}
	// Each report counted once. (Asking for the addresses makes them
	// sightings, so this comes after comparing the verdicts.)
	b = c.start("node-b-third", "styx-node", args...)
	addr, _ = b.waitLog(t, 30*time.Second, "node serving")["http_addr"].(string)
	for k := range 50 {
		ip := netip.AddrFrom4([4]byte{203, 0, 113, byte(k)})
		body, err := c.get("http://" + addr + "/v2/" + ip.String() + "?risk=2")
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		var ans struct {
			History map[string]float64 `json:"attack history"`
		}
		if err := json.Unmarshal(body, &m); err != nil || json.Unmarshal(m[ip.String()], &ans) != nil {
			t.Fatalf("%s: %v", body, err)
		}
		if ans.History["Total"] != 10 || ans.History["Login Attempt"] != 10 {
			t.Fatalf("%s: attack history %v, want 10 reports", ip, ans.History)
		}
	}
}

// nodeApplied reads a node process's applied sequences from its /healthz.
func (c *procCluster) nodeApplied(httpAddr string) map[string]uint64 {
	out := map[string]uint64{}
	body, err := c.get("http://" + httpAddr + "/healthz")
	if err != nil {
		return out
	}
	var h struct {
		Log struct {
			Streams map[string]struct {
				Applied uint64 `json:"applied"`
			} `json:"streams"`
		} `json:"log"`
	}
	if json.Unmarshal(body, &h) != nil {
		return out
	}
	for s, st := range h.Log.Streams {
		out[s] = st.Applied
	}
	return out
}

// etcd is down for 10 s: the leader loses its session and, once etcd is
// back, the same scheduler wins again. Node B, which submits nothing,
// keeps receiving every verdict: the log does not go through etcd.
func TestEtcdBlipNodesKeepReceiving(t *testing.T) {
	c := newProcCluster(t)
	s1 := c.startScheduler("s1")
	c.waitLeading(s1)
	c.startWorker("w1", 0)
	a := c.startNode("a")
	b := c.startNode("b")
	const n = 20_000
	addrs := procAddrs(0, 2*n)
	submitChunks(t, a, addrs[:n])
	a.waitResolved(t, time.Minute, n)
	before, err := c.status(s1)
	if err != nil {
		t.Fatal(err)
	}

	endpoint := strings.TrimPrefix(c.etcd.Endpoint(), "http://")
	c.etcd.Close()
	time.Sleep(10 * time.Second)
	srv, err := embedetcd.Start(embedetcd.Config{Dir: filepath.Join(c.dir, "etcd"), ClientAddr: endpoint, PKIDir: c.pki.Dir(t, pki.Etcd, procEtcdID)})
	if err != nil {
		t.Fatalf("etcd again on %s: %v", endpoint, err)
	}
	c.etcd = srv
	c.waitLeading(s1)
	after, err := c.status(s1)
	if err != nil || after.Term <= before.Term {
		t.Fatalf("term %d before the blip, %v after (%v)", before.Term, after, err)
	}

	submitChunks(t, a, addrs[n:])
	a.waitResolved(t, 2*time.Minute, 2*n)
	heads := logHeads(t, c.nats.URL(), c.natsOpts(t)...)
	waitApplied(t, b.node, time.Minute, heads)
	if st := b.node.Stats(); st.LogVerdicts < 2*n || st.Log.Stalled {
		t.Fatalf("node B applied %d verdicts from the log (stalled %v), want %d", st.LogVerdicts, st.Log.Stalled, 2*n)
	}
	a.stop(t)
	b.stop(t)
	want, got := c.exportVerdicts(t, "a"), c.exportVerdicts(t, "b")
	if len(want) != 2*n || len(got) != len(want) {
		t.Fatalf("node A holds %d verdicts, node B %d, want %d", len(want), len(got), 2*n)
	}
}
