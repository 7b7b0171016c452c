package integration

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/clusternode"
	"github.com/styx-inference/styx/pkg/testwait"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// markEngine calls every address a VPN with risk 77, so that an answer
// from the node's store is told apart from its own rule engine.
type markEngine struct{}

func (markEngine) Examine(netip.Addr) verdict.Verdict {
	return verdict.Verdict{Proxy: true, Type: "VPN", Risk: 77, Evidence: []string{"test:mark"}}
}
func (markEngine) ModelVersion() string { return "mark-1" }

// TestNodeDirectWorker runs a node whose uplink talks to one worker
// directly (no scheduler): every sighting gets exactly one verdict, and
// the verdicts land in the node's store.
func TestNodeDirectWorker(t *testing.T) {
	db := openDB(t)
	c := newEtcdOnly(t)
	w := c.addWorker("direct-w", markEngine{}, 2)
	o := newOutcomes()
	n := c.addNode("direct-node", o, func(cfg *clusternode.Config) {
		cfg.Locator = db
		cfg.DirectWorker = w.AdvertiseAddr()
		cfg.BatchSize = 100
	})
	const count = 5000
	addrs := make([]netip.Addr, count)
	for i := range addrs {
		addrs[i] = addrAt(10_000 + i)
	}
	addrs[0] = netip.MustParseAddr("8.8.8.8")
	submitAll(t, n, addrs)
	testwait.For(t, time.Minute, "an outcome per sighting", func() bool { return o.total.Load() >= count })
	time.Sleep(100 * time.Millisecond) // a late duplicate would show now
	o.mu.Lock()
	if len(o.byID) != count || o.twice != 0 || o.byKind[styxv1.OutcomeKind_OUTCOME_KIND_VERDICT] != count {
		t.Errorf("%d sightings resolved (want %d), %d twice, by kind %v", len(o.byID), count, o.twice, o.byKind)
	}
	o.mu.Unlock()
	if st := n.Stats(); st.Pending != 0 || st.DuplicateOutcomes != 0 || !st.Connected {
		t.Errorf("stats %+v", st)
	}

	resp, err := http.Get("http://" + n.HTTPAddr() + "/v2/8.8.8.8?vpn=1&risk=1&short=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `"risk": 77`) || !strings.Contains(string(body), `"type": "VPN"`) {
		t.Errorf("answer does not come from the worker's stored verdict:\n%s", body)
	}
}
