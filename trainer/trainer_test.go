package trainer

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/trainer/internal/progress"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testConfig(t *testing.T, db string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DBPath, cfg.SkipVerify, cfg.OutDir = db, true, t.TempDir()
	cfg.HoldoutFraction, cfg.ValidationFraction, cfg.NegativeRate = 0.3, 0.1, 0.5
	cfg.Params.Trees, cfg.Params.MaxDepth, cfg.Params.MinLeafRows, cfg.Params.MaxBins = 30, 4, 5, 32
	cfg.CheckpointEvery, cfg.Progress, cfg.ModelVersion = 5, progress.Off, "test"
	return cfg
}

func metricsOf(t *testing.T, m *model.Model, set, head string) model.Evaluation {
	t.Helper()
	for _, ev := range m.Metrics {
		if ev.Set == set && ev.Head == head {
			return ev
		}
	}
	t.Fatalf("no %s metrics for head %s", set, head)
	return model.Evaluation{}
}

// TestBeatsRule trains on the synthetic database and checks that the model
// finds held-out flagged networks from their surroundings better than the
// rule engine judged on the same leave-one-out data.
func TestBeatsRule(t *testing.T) {
	db := featurestest.WriteTemp(t, 400, 1)
	cfg := testConfig(t, db)
	res, err := Train(context.Background(), cfg, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, head := range heads {
		ev := metricsOf(t, res.Model, "holdout", head)
		rule := ev.Baselines[BaselineRuleLOO]
		t.Logf("%s: model %+v\nrule %+v\nas-share %+v", head, ev.Model, rule, ev.Baselines[BaselineASShare])
		if ev.Model.Positives < 20 {
			t.Fatalf("%s: only %d held-out positives", head, ev.Model.Positives)
		}
		if ev.Model.PRAUC < rule.PRAUC+0.2 || ev.Model.ROCAUC < rule.ROCAUC+0.1 {
			t.Errorf("%s: model PR-AUC %.3f ROC-AUC %.3f does not beat the rule's %.3f %.3f", head, ev.Model.PRAUC, ev.Model.ROCAUC, rule.PRAUC, rule.ROCAUC)
		}
		if ev.Model.Recall <= rule.Recall || ev.Model.F1 < 0.3 {
			t.Errorf("%s: model recall %.3f F1 %.3f, rule recall %.3f", head, ev.Model.Recall, ev.Model.F1, rule.Recall)
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.OutDir, CheckpointFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoint left behind: %v", err)
	}
	if _, err := model.Load(res.Path); err != nil {
		t.Fatal(err)
	}
}

// TestResume: a run interrupted mid-way and resumed ends with the same
// trees as an uninterrupted run with the same seed.
func TestResume(t *testing.T) {
	db := featurestest.WriteTemp(t, 200, 2)
	full := testConfig(t, db)
	want, err := Train(context.Background(), full, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopAt := cfg.Params.Trees + 7 // inside the second head, between checkpoints
	cfg.afterTree = func(done int) {
		if done == stopAt {
			cancel()
		}
	}
	_, err = Train(ctx, cfg, zerolog.Nop(), io.Discard)
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("interrupted run: %v", err)
	}
	ck, err := readCheckpoint(filepath.Join(cfg.OutDir, CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	if ck.trees() != stopAt {
		t.Fatalf("checkpoint holds %d trees, want %d", ck.trees(), stopAt)
	}

	// Without --resume or --restart the checkpoint is not silently lost.
	cfg.afterTree = nil
	if _, err := Train(context.Background(), cfg, zerolog.Nop(), io.Discard); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("second run without --resume: %v", err)
	}
	// Other hyper-parameters refuse the checkpoint.
	other := cfg
	other.Resume, other.Params.LearningRate = true, 0.3
	if _, err := Train(context.Background(), other, zerolog.Nop(), io.Discard); err == nil || !strings.Contains(err.Error(), "hyper-parameters") {
		t.Fatalf("resume with other parameters: %v", err)
	}

	cfg.Resume = true
	got, err := Train(context.Background(), cfg, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.ResumedTrees != stopAt {
		t.Errorf("resumed after %d trees, want %d", got.ResumedTrees, stopAt)
	}
	if !reflect.DeepEqual(got.Model.Heads, want.Model.Heads) {
		t.Fatal("the resumed model's heads differ from the uninterrupted run's")
	}
	if !reflect.DeepEqual(got.Model.Metrics, want.Model.Metrics) {
		t.Fatal("the resumed model's metrics differ")
	}

	// --restart discards a checkpoint and starts over.
	cfg.Resume = false
	cfg.Restart = true
	if err := os.WriteFile(filepath.Join(cfg.OutDir, CheckpointFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := Train(context.Background(), cfg, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if again.ResumedTrees != 0 || !reflect.DeepEqual(again.Model.Heads, want.Model.Heads) {
		t.Fatal("restart did not reproduce the model from scratch")
	}
}

func TestEvalBadLines(t *testing.T) {
	db := featurestest.WriteTemp(t, 120, 3)
	cfg := testConfig(t, db)
	cfg.Params.Trees = 5
	res, err := Train(context.Background(), cfg, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	lf := filepath.Join(t.TempDir(), "labels.csv")
	content := "address,label\n" +
		"# a comment\n" +
		"11.0.3.9,anonymiser\n" +
		"not-an-ip,clean\n" +
		"11.0.4.0/24,hostile\n" +
		"11.0.5.1,maybe\n" +
		"11.0.6.1\n" +
		"11.0.7.1,clean\n" +
		"2a00:0:0:1::1,clean\n"
	if err := os.WriteFile(lf, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	ecfg := EvalConfig{ModelPath: res.Path, LabelsFile: lf, DBPath: db, SkipVerify: true}
	_, err = Eval(context.Background(), ecfg)
	if err == nil {
		t.Fatal("a file with bad lines was accepted")
	}
	for _, want := range []string{"3 bad lines", lf + ":4: not an address or prefix", lf + `:6: unknown label "maybe"`, lf + ":7: 1 fields, want 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	ecfg.SkipBad = true
	er, err := Eval(context.Background(), ecfg)
	if err != nil {
		t.Fatal(err)
	}
	if er.Entries != 4 || er.BadLines == nil || len(er.Heads) != 2 {
		t.Fatalf("eval with --skip-bad: %d entries, bad %v, %d heads", er.Entries, er.BadLines, len(er.Heads))
	}
	// The engine knows the database's own flags; the rule does too.
	for _, h := range er.Heads {
		for _, s := range []string{ScorerModel, ScorerEngine, ScorerRule} {
			if _, ok := h.Scorers[s]; !ok {
				t.Errorf("head %s: no %s metrics", h.Head, s)
			}
		}
	}
}

func TestLabelsFileTrains(t *testing.T) {
	db := featurestest.WriteTemp(t, 150, 4)
	lf := filepath.Join(t.TempDir(), "labels.csv")
	var b strings.Builder
	// Label the synthetic database's flags from a file instead.
	for _, n := range featurestest.Database(150, 4).Networks {
		l := "clean"
		switch {
		case n.Flags&1 != 0:
			l = "anonymiser"
		case n.Flags&8 != 0:
			l = "hostile"
		}
		b.WriteString(n.Prefix.String() + "," + l + "\n")
	}
	if err := os.WriteFile(lf, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, db)
	cfg.Params.Trees, cfg.DBLabels, cfg.LabelsFile = 10, false, lf
	res, err := Train(context.Background(), cfg, zerolog.Nop(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if src := res.Model.Provenance.LabelSources; len(src) != 1 || !strings.Contains(src[0], lf) {
		t.Fatalf("label sources %q", src)
	}
}
