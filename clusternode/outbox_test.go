package clusternode

import (
	"context"
	"net/netip"
	"testing"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/pkg/testwait"
)

// Sightings a node accepted while no leader was there survive a graceful
// restart: the restarted node sends every one of them to the leader, and
// stores their verdicts.
func TestNodeRestartSubmitsAcceptedSightings(t *testing.T) {
	cli := etcdClient(t)
	dataDir, dbPath := t.TempDir(), fixtureDBPath(t)
	cfg := testConfig(t, dataDir, dbPath)

	a := startNode(t, cfg)
	const n = 200
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{198, 51, byte(100 + i/256), byte(i)})
	}
	if got := a.node.Submit(addrs...); got != n {
		t.Fatalf("Submit took %d, want %d", got, n)
	}
	a.stop(t) // at once: the last of them are not committed until the stop

	f, err := fakesched.Start(fakesched.Config{ID: "styx-1", Answer: fakesched.VerdictFor})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	if err := f.Register(context.Background(), cli, "x"); err != nil {
		t.Fatal(err)
	}
	b := startNode(t, cfg)
	testwait.For(t, testwait.Timeout, "every accepted sighting resolved after the restart", func() bool {
		return b.node.Stats().Verdicts == n
	})
	got := map[netip.Addr]bool{}
	for _, sg := range f.Sightings() {
		got[sg.Addr] = true
	}
	for _, a := range addrs {
		if !got[a] {
			t.Fatalf("%s, accepted before the restart, never reached the leader", a)
		}
		if e, err := b.node.store.Lookup(a); err != nil || !e.HasVerdict {
			t.Fatalf("%s: no verdict stored (%v)", a, err)
		}
	}
	if s := b.node.Stats(); s.Submitted != 0 || s.Resent != n || s.Pending != 0 {
		t.Fatalf("restarted node: %+v; want the %d restored sightings re-sent, none new", s, n)
	}
	body := metrics(t, b.node)
	if v := metricValue(t, body, "styx_node_sightings_restored_total"); v != n {
		t.Fatalf("styx_node_sightings_restored_total %v, want %d", v, n)
	}
}
