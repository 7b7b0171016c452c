package coordinator

import (
	"net/netip"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// recordLog keeps what a coordinator publishes.
type recordLog struct {
	terms   []int64
	attacks []*styxv1.AttackReport
}

func (r *recordLog) Verdicts(_ int64, _ []*styxv1.Verdict, done func()) { go done() }
func (r *recordLog) Attacks(term int64, rs []*styxv1.AttackReport) {
	r.terms = append(r.terms, term)
	r.attacks = append(r.attacks, rs...)
}

// A report sent again is published once while its key is among the last
// AttackKeys published; after that window it is published again.
func TestReportAttacksDropsRecentRepeats(t *testing.T) {
	c := testCoordinator(t)
	c.attacks = mustRecentAttacks(t, 3)
	rec := &recordLog{}
	c.cfg.Log = rec
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
	// 5 first reports, then 1 and 2 again: 7 published, each in the term.
	if len(rec.attacks) != 7 || len(rec.terms) != 7 || rec.terms[0] != c.Term() {
		t.Fatalf("published %d reports in %v, want 7 in term %d", len(rec.attacks), rec.terms, c.Term())
	}
	if got := netip.AddrFrom4([4]byte{203, 0, 113, 1}).AsSlice(); string(rec.attacks[5].GetAddress()) != string(got) {
		t.Fatalf("6th published report is %v, want 203.0.113.1", rec.attacks[5].GetAddress())
	}
}
