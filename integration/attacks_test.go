package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/testwait"
)

const attackToken = "integration-attack-token"

// historyEngine finds nothing, but keeps the attack history the worker
// hands it, as a trained engine would to use it as a feature.
type historyEngine struct {
	raven.Nop
	mu sync.Mutex
	h  attacks.History
}

func (e *historyEngine) UseAttackHistory(h attacks.History) {
	e.mu.Lock()
	e.h = h
	e.mu.Unlock()
}

func (e *historyEngine) history() attacks.History {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.h
}

// runningNode is a cluster node that the test can stop and start again on
// the same data directory.
type runningNode struct {
	*clusternode.Node
	cancel context.CancelFunc
	done   chan error
}

func startAttackNode(t *testing.T, c *cluster, db *locdb.DB, id, dataDir string) *runningNode {
	t.Helper()
	cfg := clusternode.DefaultConfig()
	cfg.ID = id
	cfg.EtcdEndpoints = []string{c.etcd.Endpoint()}
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.DataDir = dataDir
	cfg.LeaseTTL = 2 * time.Second
	cfg.NATSURL = c.nats.URL()
	cfg.Locator = db
	cfg.AttackToken = attackToken
	cfg.ReconnectMin, cfg.ReconnectMax = 10*time.Millisecond, 200*time.Millisecond
	n, err := clusternode.New(cfg, quiet(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningNode{Node: n, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- n.Run(ctx) }()
	<-n.Ready()
	return r
}

func (r *runningNode) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("node %s: %v", r.ID(), err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("node %s did not stop", r.ID())
	}
}

func postAttacks(t *testing.T, n *runningNode, body string) map[string]any {
	t.Helper()
	req, err := http.NewRequest("POST", "http://"+n.HTTPAddr()+"/v2/attacks", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+attackToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("POST /v2/attacks: %d %s (%v)", resp.StatusCode, raw, err)
	}
	return out
}

// attackHistory returns the "attack history" object of n's risk=2 answer
// for addr, or nil.
func attackHistory(t *testing.T, n *runningNode, addr string) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + n.HTTPAddr() + "/v2/" + addr + "?risk=2&short=1&p=0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	h, _ := out["attack history"].(map[string]any)
	return h
}

func sameHistory(got map[string]any, want map[string]float64) bool {
	if len(got) != len(want) {
		return false
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// A report posted to node A reaches node B's risk=2 answer and the
// worker's attack table through the verdict log; a node that was away
// resumes the log from its cursors and gets the reports it missed.
func TestAttackReportsReachEveryNodeAndWorker(t *testing.T) {
	db := openDB(t)
	c := newCluster(t, nil)
	eng := &historyEngine{}
	w := c.addWorker("w1", eng, 2)
	table := w.AttackTable()
	if table == nil || eng.history() != attacks.History(table) {
		t.Fatalf("the engine did not get the worker's attack table (%v, %v)", table, eng.history())
	}
	a := startAttackNode(t, c, db, "node-a", t.TempDir())
	defer a.stop(t)
	bDir := t.TempDir()
	b := startAttackNode(t, c, db, "node-b", bDir)
	defer func() { b.stop(t) }()

	// Warm-up: a report that both followers (node B, the worker) apply.
	warm := "198.51.100.200"
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	tries := 0
	testwait.For(t, 20*time.Second, "node B and the worker following the log", func() bool {
		if n, _ := table.Attacks(netip.MustParseAddr(warm)); n > 0 && attackHistory(t, b, warm) != nil {
			return true
		}
		if tries%10 == 0 { // a new report every 200 ms
			postAttacks(t, a, fmt.Sprintf("%s,%d,scan\n", warm, base.Unix()+int64(tries)))
		}
		tries++
		return false
	})

	at := func(sec int) string { return base.Add(time.Duration(sec) * time.Second).UTC().Format(time.RFC3339) }
	ans := postAttacks(t, a, "address,time,kind\n"+
		"203.0.113.50,"+at(100)+",login\n"+
		"203.0.113.50,"+at(101)+",login\n"+
		`{"address":"203.0.113.50","time":"`+at(102)+`","kind":"exploit"}`+"\n"+
		"2001:db8:50::1,"+at(103)+",spam\n"+
		"not-an-address,"+at(104)+",login\n")
	if ans["status"] != "warning" || ans["new"] != 4.0 || ans["rejected"] != 1.0 {
		t.Fatalf("answer %v", ans)
	}
	want50 := map[string]float64{"Total": 3, "Vulnerability Probing": 1, "Login Attempt": 2}
	testwait.For(t, 15*time.Second, "node B's attack history", func() bool {
		return sameHistory(attackHistory(t, b, "203.0.113.50"), want50) &&
			sameHistory(attackHistory(t, b, "2001:db8:50::1"), map[string]float64{"Total": 1, "Comment Spam": 1})
	})
	testwait.For(t, 15*time.Second, "the worker's attack table", func() bool {
		n, last := eng.history().Attacks(netip.MustParseAddr("203.0.113.50"))
		return n == 3 && last.Equal(base.Add(102*time.Second))
	})
	if cnt, ok := table.Counts(netip.MustParseAddr("2001:db8:50::1")); !ok || cnt.ByKind[attacks.KindCommentSpam] != 1 {
		t.Fatalf("worker counts %+v", cnt)
	}
	// Node A saw its own reports come back in the log: counted once.
	if h := attackHistory(t, a, "203.0.113.50"); !sameHistory(h, want50) {
		t.Fatalf("node A's history %v", h)
	}

	// Node B goes away; node A takes more reports meanwhile.
	b.stop(t)
	postAttacks(t, a, "192.0.2.77,"+at(200)+",ddos\n192.0.2.77,"+at(201)+",ddos\n203.0.113.50,"+at(202)+",login\n")
	testwait.For(t, 15*time.Second, "the reports in the log (the worker has them)", func() bool {
		n, _ := table.Attacks(netip.MustParseAddr("192.0.2.77"))
		m, _ := table.Attacks(netip.MustParseAddr("203.0.113.50"))
		return n == 2 && m == 4
	})
	// The worker can see the reports in the log before node A has the
	// leader's answer, which empties its outbox: wait for that too.
	testwait.For(t, 15*time.Second, "node A's attack outbox empty", func() bool {
		return a.Stats().AttackOutbox == 0
	})

	// Back on the same data directory: it resumes from its stored cursors.
	b = startAttackNode(t, c, db, "node-b", bDir)
	testwait.For(t, 15*time.Second, "node B catching up", func() bool {
		return sameHistory(attackHistory(t, b, "192.0.2.77"), map[string]float64{"Total": 2, "Denial of Service": 2}) &&
			sameHistory(attackHistory(t, b, "203.0.113.50"), map[string]float64{"Total": 4, "Vulnerability Probing": 1, "Login Attempt": 3})
	})
	for _, st := range b.Stats().Log.Streams {
		if st.Skipped != 0 {
			t.Fatalf("node B skipped %d messages of %s", st.Skipped, st.Stream)
		}
	}
	total, byKind, last, err := b.Attacks(netip.MustParseAddr("192.0.2.77"))
	if err != nil || total != 2 || byKind[attacks.KindDDoS] != 2 || !last.Equal(base.Add(201*time.Second)) {
		t.Fatalf("node B: %d %v %v %v", total, byKind, last, err)
	}
	// risk=1 is unchanged: no attack history.
	resp, err := http.Get("http://" + b.HTTPAddr() + "/v2/192.0.2.77?risk=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), "attack history") {
		t.Fatalf("risk=1 answer: %s", body)
	}
}
