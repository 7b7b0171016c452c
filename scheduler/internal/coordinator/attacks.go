package coordinator

import (
	"fmt"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/logging"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// MaxAttackBatch is the most reports one ReportAttacks call may carry.
const MaxAttackBatch = 4096

// maxAttackErrors bounds the explanations one ReportAttacks answer carries.
const maxAttackErrors = 10

// AttackResult counts what ReportAttacks did with a batch.
type AttackResult struct {
	Accepted, Duplicates, Rejected uint32
	Errors                         []string // the first few rejections, explained
}

// ReportAttacks validates attack reports a node accepted and publishes each
// one not seen recently to the verdict log. A report's reporter must be nodeID (an
// empty one is taken as nodeID). The leader's clock bounds report times
// (attacks.CheckTime).
func (c *Coordinator) ReportAttacks(nodeID string, rs []*styxv1.AttackReport) AttackResult {
	var res AttackResult
	reject := func(i int, err error) {
		res.Rejected++
		if len(res.Errors) < maxAttackErrors {
			res.Errors = append(res.Errors, fmt.Sprintf("report %d: %v", i, err))
		}
	}
	now := c.now()
	valid := make([]attacks.Report, 0, len(rs))
	for i, p := range rs {
		if p.GetReporter() == "" {
			p.Reporter = nodeID
		}
		if p.GetReporter() != nodeID {
			reject(i, fmt.Errorf("reporter %q is not the sending node %q", p.GetReporter(), nodeID))
			continue
		}
		r, err := attacks.FromProto(p)
		if err == nil {
			err = attacks.CheckTime(r.Time, now)
		}
		if err != nil {
			reject(i, err)
			continue
		}
		valid = append(valid, r)
	}
	out := make([]*styxv1.AttackReport, 0, len(valid))
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range valid {
		k := r.Key()
		if _, seen := c.attacks.Get(0, k); seen {
			res.Duplicates++
			continue
		}
		c.attacks.Put(0, k, struct{}{})
		out = append(out, r.Proto()) // canonical: unmapped address
		res.Accepted++
	}
	if len(out) > 0 && c.cfg.Log != nil {
		c.cfg.Log.Attacks(c.cfg.Term, out)
	}
	c.counters.AttackReports += uint64(res.Accepted)
	c.counters.AttackDuplicates += uint64(res.Duplicates)
	c.counters.AttackRejected += uint64(res.Rejected)
	if res.Rejected > 0 {
		c.log.Warn().Str(logging.NodeID, nodeID).Uint32("rejected", res.Rejected).
			Strs("errors", res.Errors).Msg("attack reports rejected")
	}
	return res
}
