package coordinator

import (
	"net/netip"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// A report sent again is put on the feed once while its key is among the
// last FeedSize fed; after that window it is fed again.
func TestReportAttacksDropsRecentRepeats(t *testing.T) {
	c := testCoordinator(t)
	c.attacks = mustRecentAttacks(t, 3)
	now := time.Now()
	report := func(i int) *styxv1.AttackReport {
		r := attacks.Report{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), Time: now.Add(-time.Duration(i) * time.Second), Kind: attacks.KindLogin, Reporter: "n1"}
		return r.Proto()
	}
	for i := range 5 {
		if res := c.ReportAttacks("n1", []*styxv1.AttackReport{report(i)}); res.Accepted != 1 {
			t.Fatalf("report %d: %+v", i, res)
		}
	}
	// Keys 2, 3, 4 are held; 1 is fed again and pushes 2 out.
	for _, tc := range []struct {
		i   int
		dup bool
	}{{4, true}, {3, true}, {2, true}, {1, false}, {2, false}, {4, true}} {
		res := c.ReportAttacks("n1", []*styxv1.AttackReport{report(tc.i)})
		if (res.Duplicates == 1) != tc.dup || (res.Accepted == 1) == tc.dup {
			t.Fatalf("report %d again: %+v, want duplicate %v", tc.i, res, tc.dup)
		}
	}
}
