package uplink

import (
	"net/netip"
	"testing"
	"time"

	"github.com/styx-inference/styx/clusternode/internal/fakesched"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/testwait"
)

// Reports accepted on the node wait in the store's outbox until the leader
// has answered for them; a failed call leaves them there for the next try.
func TestAttacksForwardedFromOutbox(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.AttackRetry = 20 * time.Millisecond })
	a := netip.MustParseAddr("203.0.113.7")
	rep := func(sec int64) attacks.Report {
		return attacks.Report{Addr: a, Time: time.Unix(1_700_000_000+sec, 0), Kind: attacks.KindLogin, Reporter: "node-a"}
	}
	// Accepted before any leader is known.
	if _, err := h.store.AddAttacks([]attacks.Report{rep(1), rep(2)}); err != nil {
		t.Fatal(err)
	}
	f := h.fake(fakesched.Config{}, "x")
	f.SetAttacksDown(true)
	h.start()
	testwait.For(t, testwait.Timeout, "a failed forward", func() bool { _, calls := f.Attacks(); return calls >= 2 })
	if h.store.OutboxLen() != 2 {
		t.Fatalf("outbox %d after failed calls, want 2", h.store.OutboxLen())
	}
	f.SetAttacksDown(false)
	testwait.For(t, testwait.Timeout, "the outbox forwarded", func() bool { return h.store.OutboxLen() == 0 })
	got, _ := f.Attacks()
	if len(got) != 2 {
		t.Fatalf("leader got %d reports, want 2", len(got))
	}
	if r, err := attacks.FromProto(got[0]); err != nil || r.Key() != rep(1).Key() {
		t.Fatalf("first report %+v %v", r, err)
	}
	// A new report is forwarded at once when kicked (AttackRetry is short
	// here, so only check that it arrives).
	if _, err := h.store.AddAttacks([]attacks.Report{rep(3)}); err != nil {
		t.Fatal(err)
	}
	h.up.KickAttacks()
	testwait.For(t, testwait.Timeout, "the new report forwarded", func() bool { got, _ := f.Attacks(); return len(got) == 3 })
	// The leader has the report before the node has its answer: wait.
	testwait.For(t, testwait.Timeout, "the forward counted", func() bool { return h.up.Stats().AttacksForwarded == 3 })
}
