package trainer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/trainer/internal/labels"
)

// Scorers compared by Eval.
const (
	// ScorerModel is the model alone: the network's surroundings, without
	// its own flags.
	ScorerModel = "model"
	// ScorerEngine is raven.Model as a worker runs it: the network's own
	// flags, then the model.
	ScorerEngine = "engine"
	// ScorerRule is raven.Rule, the baseline engine, with the flags.
	ScorerRule = "rule"
)

// EvalConfig says what to evaluate.
type EvalConfig struct {
	ModelPath  string
	LabelsFile string
	DBPath     string
	DBKeyPath  string
	SkipVerify bool
	SkipBad    bool // go on without bad lines instead of failing
	// VerdictsFile and AttacksFile fill a schema 2 model's history, as for
	// Train (each labelled address left out of its own bucket and AS);
	// without them its history features are 0.
	VerdictsFile string
	AttacksFile  string
}

// EvalResult is the metrics of every scorer for both heads.
type EvalResult struct {
	Model     *model.Model
	Entries   int
	BadLines  error // the bad lines skipped (SkipBad), or nil
	NoNetwork int   // entries whose address has no network (scored 0 by all)
	Heads     []EvalHead
}

// EvalHead is one head's metrics by scorer.
type EvalHead struct {
	Head    string
	Scorers map[string]model.Metrics
}

// Eval scores a labelled list with a model and the rule.
func Eval(ctx context.Context, cfg EvalConfig) (*EvalResult, error) {
	if cfg.ModelPath == "" || cfg.LabelsFile == "" {
		return nil, errors.New("a model and a labels file are required")
	}
	m, err := model.Load(cfg.ModelPath)
	if err != nil {
		return nil, err
	}
	entries, lerr := labels.ReadFile(cfg.LabelsFile)
	res := &EvalResult{Model: m}
	if lerr != nil {
		var le *labels.Error
		if !errors.As(lerr, &le) || !cfg.SkipBad || len(entries) == 0 {
			return nil, lerr
		}
		res.BadLines = lerr
	}
	db, err := locdb.Open(locdb.Config{Path: cfg.DBPath, KeyPath: cfg.DBKeyPath, SkipVerify: cfg.SkipVerify})
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ex, err := features.NewExtractor(db)
	if err != nil {
		return nil, err
	}
	var fx raven.FeatureExtractor = ex
	if m.FeatureSchema() == features.SchemaHistory {
		h, err := loadHistory(db, cfg.VerdictsFile, cfg.AttacksFile, time.Now())
		if err != nil {
			return nil, err
		}
		hx := features.NewHistoryExtractor(ex, nil)
		if h != nil {
			hx = features.NewHistoryExtractor(ex, h.t)
		}
		fx = hx
	} else if cfg.VerdictsFile != "" || cfg.AttacksFile != "" {
		return nil, fmt.Errorf("model %s uses feature schema %d, which has no history features", m.Version, m.FeatureSchema())
	}
	eng, err := raven.NewModel(m, fx)
	if err != nil {
		return nil, err
	}
	rule := raven.NewRule(db)
	res.Entries = len(entries)
	n := len(entries)
	type scores struct{ model, engine, rule []float64 }
	sc := map[string]*scores{}
	for _, h := range heads {
		sc[h] = &scores{make([]float64, n), make([]float64, n), make([]float64, n)}
	}
	lab := map[string][]bool{model.HeadAnonymiser: make([]bool, n), model.HeadHostile: make([]bool, n)}
	for i, e := range entries {
		if i%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		lab[model.HeadAnonymiser][i] = e.Label == labels.Anonymiser
		lab[model.HeadHostile][i] = e.Label == labels.Hostile
		s, ok := eng.Score(e.Addr())
		if !ok {
			res.NoNetwork++
			continue
		}
		f := s.Network.Flags
		a, h := sc[model.HeadAnonymiser], sc[model.HeadHostile]
		a.model[i], h.model[i] = s.Anonymiser, s.Hostile
		a.engine[i], h.engine[i] = s.Anonymiser, s.Hostile
		if f.AnonymousProxy() {
			a.engine[i] = 1
		}
		if f.Drop() {
			h.engine[i] = 1
		}
		v := rule.Examine(e.Addr())
		switch v.Type {
		case raven.TypeAnonymizer:
			a.rule[i] = float64(v.Risk) / 100
		case raven.TypeHostile:
			h.rule[i] = float64(v.Risk) / 100
		case raven.TypeHosting:
			a.rule[i], h.rule[i] = 0.33, 0.33
		}
	}
	for _, name := range heads {
		hi := m.Head(name)
		thr := m.Heads[hi].Threshold
		ruleThr := 0.9
		if name == model.HeadHostile {
			ruleThr = 1.0
		}
		s := sc[name]
		res.Heads = append(res.Heads, EvalHead{Head: name, Scorers: map[string]model.Metrics{
			ScorerModel:  model.Evaluate(s.model, lab[name], thr),
			ScorerEngine: model.Evaluate(s.engine, lab[name], thr),
			ScorerRule:   model.Evaluate(s.rule, lab[name], ruleThr),
		}})
	}
	return res, nil
}

// FormatMetrics is one line of a metrics table.
func FormatMetrics(name string, m model.Metrics) string {
	auc := func(v float64) string {
		if v < 0 {
			return "   n/a"
		}
		return fmt.Sprintf("%6.4f", v)
	}
	return fmt.Sprintf("  %-10s precision %6.4f  recall %6.4f  F1 %6.4f  PR-AUC %s  ROC-AUC %s  (tp %d fp %d fn %d; %d positives of %d; yes at >= %.2f)",
		name, m.Precision, m.Recall, m.F1, auc(m.PRAUC), auc(m.ROCAUC), m.TP, m.FP, m.FN, m.Positives, m.Examples, m.Threshold)
}
