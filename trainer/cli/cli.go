// Package cli is the styx-trainer command line: train, eval and inspect
// models; publish, status, promote and rollback roll them out.
package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/styx-inference/styx/pkg/envflag"
	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/trainer"
	"github.com/styx-inference/styx/trainer/internal/progress"
)

const usage = `styx-trainer: builds and evaluates Raven models.

Usage:
  styx-trainer train [flags]                 train on the location database (and a labels file),
                                             report held-out metrics beside the rule, write the model
  styx-trainer eval --model M --labels F     score a labelled list with the model and the rule
  styx-trainer inspect --model M             print a model's version, schema, metrics and provenance
  styx-trainer publish --model M [--canary S] store the model and point /styx/models/current at it
                                             (or run it as a canary on share S of the addresses)
  styx-trainer status                        the model pointer and the canary's comparison
  styx-trainer promote                       make the canary the current model
  styx-trainer rollback                      stop the canary, or restore the previous model

Run 'styx-trainer <command> -h' for the flags. Every flag may also be set as
STYX_<FLAG> (upper case, '-' as '_'); the command line wins.`

// Main runs the command and returns its exit status.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "train":
		return train(ctx, args, stdout, stderr)
	case "eval":
		return eval(ctx, args, stdout, stderr)
	case "inspect":
		return inspect(args, stdout, stderr)
	case "publish":
		return publish(ctx, args, stdout, stderr)
	case "status":
		return status(ctx, args, stdout, stderr)
	case "promote":
		return promote(ctx, args, stdout, stderr)
	case "rollback":
		return rollback(ctx, args, stdout, stderr)
	case "help", "-h", "--help", "-help":
		fmt.Fprintln(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "styx-trainer: unknown command %q\n\n%s\n", cmd, usage)
	return 2
}

func parse(fs *flag.FlagSet, args []string, stderr io.Writer) (int, bool) {
	if err := envflag.Parse(fs, "STYX", args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		fmt.Fprintln(stderr, "styx-trainer:", err)
		return 2, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "styx-trainer: unexpected arguments %q\n", fs.Args())
		return 2, false
	}
	return 0, true
}

func train(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := trainer.DefaultConfig()
	p := &cfg.Params
	fs := flag.NewFlagSet("styx-trainer train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.DBPath, "db", cfg.DBPath, "location database file (features, and labels unless --db-labels=false)")
	fs.StringVar(&cfg.DBKeyPath, "db-key", "", "public key the database is signed with (default the system's)")
	fs.BoolVar(&cfg.SkipVerify, "skip-verify", false, "do not verify the database signature")
	fs.StringVar(&cfg.OutDir, "out-dir", cfg.OutDir, "output directory: "+trainer.ModelFile+" and, while training, "+trainer.CheckpointFile)
	fs.StringVar(&cfg.ModelVersion, "model-version", "", "model version string (default raven-<UTC time>)")
	fs.StringVar(&cfg.LabelsFile, "labels", "", "extra labelled examples: a file of address-or-prefix,label lines (anonymiser, hostile, clean)")
	fs.BoolVar(&cfg.DBLabels, "db-labels", cfg.DBLabels, "label every database network by its flags (anonymiser: anonymous proxy, hostile: drop)")
	fs.IntVar(&cfg.Schema, "schema", cfg.Schema, "feature schema: 2 = the location database plus the history features (from --verdicts and --attacks; 0 without them), 1 = the location database only")
	fs.StringVar(&cfg.VerdictsFile, "verdicts", "", "history: verdicts as styx-node export-verdicts writes them (address,label lines); each example's own verdicts are left out of its features")
	fs.StringVar(&cfg.AttacksFile, "attacks", "", "history: attack reports as styx-node import-attacks reads them (address,time,kind lines or JSON objects)")
	fs.Float64Var(&cfg.HoldoutFraction, "holdout", cfg.HoldoutFraction, "share of whole ASes held out for the reported metrics")
	fs.StringVar(&cfg.HoldoutASFile, "holdout-as", "", "hold out exactly the ASes listed in this file (one ASN a line) instead")
	fs.Float64Var(&cfg.ValidationFraction, "validation", cfg.ValidationFraction, "share of the other ASes kept for validation metrics (for tuning; 0 for none)")
	fs.Float64Var(&cfg.NegativeRate, "neg-rate", cfg.NegativeRate, "share of training negatives kept (weighted 1/rate; evaluation uses all)")
	fs.IntVar(&cfg.Folds, "folds", cfg.Folds, "training examples get neighbourhood statistics without their whole fold (k folds; < 2: leave-one-out only), so a network's own label cannot shift them")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the split, the sampling and the trees")
	fs.IntVar(&p.Trees, "trees", p.Trees, "trees per head")
	fs.IntVar(&p.MaxDepth, "max-depth", p.MaxDepth, "tree depth")
	fs.Float64Var(&p.LearningRate, "learning-rate", p.LearningRate, "shrinkage")
	fs.Float64Var(&p.Lambda, "lambda", p.Lambda, "L2 regularisation of leaf values")
	fs.Float64Var(&p.Gamma, "gamma", p.Gamma, "smallest loss reduction of a split")
	fs.Float64Var(&p.MinChildWeight, "min-child-weight", p.MinChildWeight, "smallest hessian sum in a leaf")
	fs.IntVar(&p.MinLeafRows, "min-leaf", p.MinLeafRows, "fewest examples in a leaf")
	fs.Float64Var(&p.Subsample, "subsample", p.Subsample, "share of rows each tree sees")
	fs.Float64Var(&p.ColSample, "colsample", p.ColSample, "share of features each tree may split on")
	fs.IntVar(&p.MaxBins, "bins", p.MaxBins, "histogram bins per feature (2..256)")
	fs.Float64Var(&cfg.ThresholdAnon, "threshold-anonymiser", cfg.ThresholdAnon, "probability at which the anonymiser head says yes")
	fs.Float64Var(&cfg.ThresholdHostile, "threshold-hostile", cfg.ThresholdHostile, "probability at which the hostile head says yes")
	fs.IntVar(&cfg.CheckpointEvery, "checkpoint-every", cfg.CheckpointEvery, "write the checkpoint every N trees (and on Ctrl-C)")
	fs.BoolVar(&cfg.Resume, "resume", false, "continue from the checkpoint in --out-dir")
	fs.BoolVar(&cfg.Restart, "restart", false, "discard a checkpoint in --out-dir and start over")
	prog := fs.String("progress", string(progress.Auto), "progress display: auto (a bar on a terminal, lines otherwise), bar, lines, off")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = envflag.Usage(fs, "STYX", `styx-trainer train [flags]

Trains the Raven model: one gradient-boosted tree ensemble per head
("anonymiser": networks flagged anonymous proxy; "hostile": networks flagged
drop), on leave-one-out features of the location database (a network's own
flags are never its features) and, with schema 2 (the default), on history
features: the attack history of the address and the verdicts and attack
reports of its /24 (/48) and its AS, from --verdicts and --attacks, with the
example's own verdicts left out. Without those files the history features
are 0 and the model learns nothing from them. Whole ASes are held out; their
metrics are printed beside the rule engine's, judged on the same
leave-one-out data.
Ctrl-C writes a checkpoint; --resume continues it to the same model.`)
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	mode, err := progress.ParseMode(*prog)
	if err != nil {
		fmt.Fprintln(stderr, "styx-trainer:", err)
		return 2
	}
	cfg.Progress = mode
	cfg.Params.Seed = cfg.Seed
	cfg.Command = "styx-trainer train " + strings.Join(args, " ")
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "styx-trainer: config:", err)
		return 2
	}
	log, err := logging.New(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "styx-trainer: log level:", err)
		return 2
	}
	log = logging.For(log, "trainer")
	res, err := trainer.Train(ctx, cfg, log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "styx-trainer:", err)
		if errors.Is(err, trainer.ErrInterrupted) {
			return 130
		}
		return 1
	}
	m := res.Model
	trees, nodes := m.Size()
	fi, _ := os.Stat(res.Path)
	fmt.Fprintf(stdout, "model %s written to %s (%d bytes, %d trees, %d nodes, payload sha256 %s)\n",
		m.Version, res.Path, size(fi), trees, nodes, m.SHA256())
	fmt.Fprintf(stdout, "examples: train %d (%d groups), validation %d (%d groups), held out %d (%d groups); trained in %s",
		res.Examples[0], res.Groups[0], res.Examples[1], res.Groups[1], res.Examples[2], res.Groups[2], res.Duration.Round(100e6))
	if res.ResumedTrees > 0 {
		fmt.Fprintf(stdout, " (resumed after %d trees)", res.ResumedTrees)
	}
	fmt.Fprintln(stdout)
	printMetrics(stdout, m)
	return 0
}

func size(fi os.FileInfo) int64 {
	if fi == nil {
		return 0
	}
	return fi.Size()
}

func printMetrics(w io.Writer, m *model.Model) {
	for _, ev := range m.Metrics {
		fmt.Fprintf(w, "%s, head %s:\n", ev.Set, ev.Head)
		fmt.Fprintln(w, trainer.FormatMetrics("model", ev.Model))
		names := make([]string, 0, len(ev.Baselines))
		for n := range ev.Baselines {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintln(w, trainer.FormatMetrics(n, ev.Baselines[n]))
		}
	}
	fmt.Fprintln(w, "rule-loo: the rule engine without the network's own flags (those are the labels); as-share: share of the AS's other networks with the flag.")
}

func eval(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := trainer.EvalConfig{}
	fs := flag.NewFlagSet("styx-trainer eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.ModelPath, "model", "", "model artifact (required)")
	fs.StringVar(&cfg.LabelsFile, "labels", "", "labelled list: address-or-prefix,label lines; label anonymiser, hostile or clean (required)")
	fs.StringVar(&cfg.DBPath, "db", locdb.DefaultPath, "location database file")
	fs.StringVar(&cfg.DBKeyPath, "db-key", "", "public key the database is signed with (default the system's)")
	fs.BoolVar(&cfg.SkipVerify, "skip-verify", false, "do not verify the database signature")
	fs.BoolVar(&cfg.SkipBad, "skip-bad", false, "report bad lines and go on without them (default: refuse the file)")
	fs.StringVar(&cfg.VerdictsFile, "verdicts", "", "history of a schema 2 model: verdicts (address,label lines, as styx-node export-verdicts writes them)")
	fs.StringVar(&cfg.AttacksFile, "attacks", "", "history of a schema 2 model: attack reports (as styx-node import-attacks reads them)")
	fs.Usage = envflag.Usage(fs, "STYX", `styx-trainer eval --model M --labels FILE [flags]

Scores every labelled address with the model alone (its surroundings), the
engine (the network's own flags, then the model) and the rule engine, and
prints precision, recall, PR-AUC and ROC-AUC per head.`)
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if cfg.ModelPath == "" || cfg.LabelsFile == "" {
		fmt.Fprintln(stderr, "styx-trainer eval: --model and --labels are required")
		return 2
	}
	res, err := trainer.Eval(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "styx-trainer eval:", err)
		return 1
	}
	if res.BadLines != nil {
		fmt.Fprintln(stderr, "styx-trainer eval: skipped", res.BadLines)
	}
	fmt.Fprintf(stdout, "model %s on %s: %d labelled addresses (%d without a network, scored 0)\n",
		res.Model.Version, cfg.LabelsFile, res.Entries, res.NoNetwork)
	for _, h := range res.Heads {
		fmt.Fprintf(stdout, "head %s:\n", h.Head)
		for _, s := range []string{trainer.ScorerModel, trainer.ScorerEngine, trainer.ScorerRule} {
			fmt.Fprintln(stdout, trainer.FormatMetrics(s, h.Scorers[s]))
		}
	}
	fmt.Fprintln(stdout, "model: surroundings only; engine: the network's own flags, then the model (what workers run); rule: the rule engine (flags, hosting names).")
	return 0
}

func inspect(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("styx-trainer inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("model", "", "model artifact (required)")
	showFeatures := fs.Bool("features", false, "also list the features with their descriptions")
	fs.Usage = envflag.Usage(fs, "STYX", `styx-trainer inspect --model M

Verifies a model artifact (payload sha256, feature schema) and prints its
version, schema, heads, metrics and provenance.`)
	if code, ok := parse(fs, args, stderr); !ok {
		return code
	}
	if *path == "" {
		fmt.Fprintln(stderr, "styx-trainer inspect: --model is required")
		return 2
	}
	m, err := model.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "styx-trainer inspect:", err)
		return 1
	}
	b, err := os.ReadFile(*path)
	if err != nil {
		fmt.Fprintln(stderr, "styx-trainer inspect:", err)
		return 1
	}
	fileSum := sha256.Sum256(b)
	trees, nodes := m.Size()
	fmt.Fprintf(stdout, "model version   %s\n", m.Version)
	fmt.Fprintf(stdout, "created         %s\n", m.CreatedAt.Format("2006-01-02 15:04:05 UTC"))
	fmt.Fprintf(stdout, "payload sha256  %s (verified)\n", m.SHA256())
	fmt.Fprintf(stdout, "file sha256     %s (%d bytes)\n", hex.EncodeToString(fileSum[:]), len(b))
	fmt.Fprintf(stdout, "feature schema  %d (%d features, matches this build)\n", m.SchemaVersion, len(m.Features))
	fmt.Fprintf(stdout, "size            %d trees, %d nodes\n", trees, nodes)
	p := m.Params
	fmt.Fprintf(stdout, "params          trees %d, depth %d, learning rate %g, lambda %g, gamma %g, min child weight %g, min leaf %d, subsample %g, colsample %g, bins %d, seed %d\n",
		p.Trees, p.MaxDepth, p.LearningRate, p.Lambda, p.Gamma, p.MinChildWeight, p.MinLeafRows, p.Subsample, p.ColSample, p.MaxBins, p.Seed)
	for _, h := range m.Heads {
		fmt.Fprintf(stdout, "head            %s: %d trees, base %.4f, yes at p >= %.2f\n", h.Name, len(h.Trees), h.Base, h.Threshold)
	}
	pv := m.Provenance
	fmt.Fprintf(stdout, "database        %s (%s, created %s, sha256 %s)\n", pv.DBPath, pv.DBVendor, pv.DBCreatedAt.Format("2006-01-02"), pv.DBSHA256)
	for _, s := range pv.LabelSources {
		fmt.Fprintf(stdout, "labels          %s\n", s)
	}
	fmt.Fprintf(stdout, "split           %s\n", pv.Split)
	fmt.Fprintf(stdout, "sampling        training negatives kept at rate %g (weighted 1/rate); %d training examples\n", pv.NegativeRate, pv.TrainExamples)
	fmt.Fprintf(stdout, "features        training examples: %s; evaluation and live addresses: leave-one-out\n", foldsDesc(pv.Folds))
	if m.SchemaVersion == features.SchemaHistory {
		fmt.Fprintf(stdout, "history         %s\n", pv.History)
	}
	fmt.Fprintf(stdout, "seed            %d\n", pv.Seed)
	fmt.Fprintf(stdout, "trained         in %.1f s on %s\n", pv.TrainSeconds, pv.Host)
	if pv.Command != "" {
		fmt.Fprintf(stdout, "command         %s\n", pv.Command)
	}
	printMetrics(stdout, m)
	if *showFeatures {
		for i, n := range m.Features {
			fmt.Fprintf(stdout, "feature %2d  %-20s %s\n", i, n, features.Description(i))
		}
	}
	return 0
}

func foldsDesc(k int) string {
	if k < 2 {
		return "leave-one-out"
	}
	return fmt.Sprintf("out-of-fold statistics, %d folds", k)
}
