package clusternode

import (
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/styx-inference/styx/clusternode/internal/nodehistory"
	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/clusternode/internal/threats"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/verdict"
)

// memScanner scans verdicts held in memory and counts its verdict scans.
type memScanner struct {
	addrs []netip.Addr
	vs    []verdict.Verdict
	scans int
}

func (m *memScanner) ScanVerdicts(want func(time.Time) bool, fn func(netip.Addr, verdict.Verdict)) error {
	m.scans++
	for i, v := range m.vs {
		if want(v.Inferred) {
			fn(m.addrs[i], v)
		}
	}
	return nil
}

func (m *memScanner) ScanAttacks(func(netip.Addr, store.AttackHistory)) error { return nil }

// One pass over the stored verdicts fills the threats window and the
// history table as two separate fills would.
func TestFillScanOnePassForBoth(t *testing.T) {
	m := &memScanner{}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 3000 {
		m.addrs = append(m.addrs, netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}))
		m.vs = append(m.vs, verdict.Verdict{Proxy: rand.IntN(3) > 0, Type: "VPN", Risk: 90,
			Inferred: t0.Add(time.Duration(rand.IntN(1_000_000)) * time.Second)})
	}
	const win, max = 50, 400

	r1, _ := threats.New(win)
	h1 := history.New(history.Config{MaxAddrs: max})
	if err := r1.Fill(m); err != nil {
		t.Fatal(err)
	}
	st1, err := nodehistory.Fill(h1, m, max)
	if err != nil {
		t.Fatal(err)
	}

	m.scans = 0
	r2, _ := threats.New(win)
	h2 := history.New(history.Config{MaxAddrs: max})
	st2, err := nodehistory.Fill(h2, &fillScan{Scanner: m, threats: r2}, max)
	if err != nil {
		t.Fatal(err)
	}
	if m.scans != 1 {
		t.Fatalf("%d verdict scans, want 1", m.scans)
	}
	if st1 != st2 {
		t.Fatalf("history fill %+v, alone %+v", st2, st1)
	}
	if got, want := r2.Sample(win), r1.Sample(win); !reflect.DeepEqual(got, want) {
		t.Fatalf("threats window %v, alone %v", got, want)
	}
	for _, a := range m.addrs {
		e1, ok1 := h1.Entry(a)
		e2, ok2 := h2.Entry(a)
		if ok1 != ok2 || !reflect.DeepEqual(e1, e2) {
			t.Fatalf("%s: history entry %+v %v, alone %+v %v", a, e2, ok2, e1, ok1)
		}
	}
}
