package trainer

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/model"
)

// Baseline names.
const (
	// BaselineRuleLOO is raven.Rule judged honestly on leave-one-out data:
	// the rule decides from the network's own flags, which are the labels,
	// so on held-out networks it must do without them. What remains of it
	// is the hosting-name rule (risk 33, never a proxy): its score is
	// risk/100 and it says "proxy" at 0.9 (anonymiser) or 1.0 (hostile),
	// which it never reaches.
	BaselineRuleLOO = "rule-loo"
	// BaselineASShare is a transparent neighbourhood heuristic: the share
	// of the AS's other networks carrying the head's flag (0 without an
	// AS), "yes" at 0.5.
	BaselineASShare = "as-share"
)

// ruleLOO is the rule's risk/100 without the network's own flags.
func ruleLOO(x []float32) float64 {
	if x[features.ASHostingName] == 1 {
		return 0.33
	}
	return 0
}

func asShare(x []float32, head string) float64 {
	v := x[features.ASAnonShare]
	if head == model.HeadHostile {
		v = x[features.ASDropShare]
	}
	return max(0, float64(v))
}

// EvaluateSet scores a split with the model and the baselines.
func EvaluateSet(m *model.Model, s *Set, set string) []model.Evaluation {
	n := s.Rows()
	var out []model.Evaluation
	for _, name := range heads {
		hi := m.Head(name)
		ms, rs, as := make([]float64, n), make([]float64, n), make([]float64, n)
		for i := range n {
			x := s.Data.Row(i)
			ms[i] = m.Probability(hi, x)
			rs[i] = ruleLOO(x)
			as[i] = asShare(x, name)
		}
		lab := s.labelsOf(name)
		ruleThr := 0.9
		if name == model.HeadHostile {
			ruleThr = 1.0
		}
		out = append(out, model.Evaluation{
			Head: name, Set: set,
			Model: model.Evaluate(ms, lab, m.Heads[hi].Threshold),
			Baselines: map[string]model.Metrics{
				BaselineRuleLOO: model.Evaluate(rs, lab, ruleThr),
				BaselineASShare: model.Evaluate(as, lab, 0.5),
			},
		})
	}
	return out
}

// readASList reads one ASN per line ("AS64500" or "64500"; # comments).
func readASList(path string) (map[uint32]bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[uint32]bool{}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		t := strings.TrimSpace(sc.Text())
		if i := strings.IndexByte(t, '#'); i >= 0 {
			t = strings.TrimSpace(t[:i])
		}
		if t == "" {
			continue
		}
		t = strings.TrimPrefix(strings.ToUpper(t), "AS")
		v, err := strconv.ParseUint(t, 10, 32)
		if err != nil || v == 0 {
			return nil, fmt.Errorf("%s:%d: %q is not an AS number", path, line, sc.Text())
		}
		out[uint32(v)] = true
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no AS numbers", path)
	}
	return out, nil
}
