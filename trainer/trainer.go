package trainer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/trainer/internal/labels"
	"github.com/styx-inference/styx/trainer/internal/progress"
)

// File names inside the output directory.
const (
	ModelFile      = "model.json"
	CheckpointFile = "checkpoint.json"
)

// ErrInterrupted is wrapped when training stops on its context; the
// checkpoint holds the trees grown so far.
var ErrInterrupted = errors.New("training interrupted")

// Config says what to train on and how.
type Config struct {
	DBPath     string
	DBKeyPath  string
	SkipVerify bool

	OutDir       string // holds the artifact and the checkpoint
	ModelVersion string // "" names it raven-<UTC time>

	LabelsFile string // optional "address-or-prefix,label" list
	DBLabels   bool   // label every database network by its flags

	// Schema is the feature schema trained: 2 (the default) adds the
	// history block to schema 1's features.
	Schema int
	// VerdictsFile ("address,label" lines, as styx-node export-verdicts
	// writes them) and AttacksFile (attack report lines, as styx-node
	// import-attacks reads them) fill the history of schema 2's examples.
	// Without either, the history features are 0.
	VerdictsFile string
	AttacksFile  string

	HoldoutFraction    float64 // of the groups (ASes), when HoldoutASFile is ""
	HoldoutASFile      string  // one ASN per line ("AS123" or "123"): exactly these are held out
	ValidationFraction float64 // of the remaining groups
	NegativeRate       float64 // share of training negatives kept (weighted 1/rate)
	Folds              int     // out-of-fold statistics for training examples (features.NewFoldExtractor); < 2: plain leave-one-out
	Seed               uint64

	Params           model.Params
	ThresholdAnon    float64
	ThresholdHostile float64
	CheckpointEvery  int // trees
	Resume           bool
	Restart          bool
	Progress         progress.Mode
	ProgressEvery    time.Duration
	Command          string // recorded in the provenance

	afterTree func(done int) // tests: called after every tree
}

// DefaultConfig is the configuration styx-trainer train starts from.
func DefaultConfig() Config {
	return Config{
		DBPath: locdb.DefaultPath, OutDir: "raven-model", DBLabels: true, Schema: features.SchemaHistory,
		HoldoutFraction: 0.2, ValidationFraction: 0.1, NegativeRate: 0.25, Folds: 5, Seed: 1,
		Params: model.DefaultParams(), ThresholdAnon: 0.5, ThresholdHostile: 0.5,
		CheckpointEvery: 25, Progress: progress.Auto, ProgressEvery: 5 * time.Second,
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	switch {
	case c.DBPath == "":
		return errors.New("a location database is required")
	case c.OutDir == "":
		return errors.New("an output directory is required")
	case !c.DBLabels && c.LabelsFile == "":
		return errors.New("no labels: keep the database's or give a labels file")
	case c.HoldoutASFile == "" && !(c.HoldoutFraction > 0 && c.HoldoutFraction < 1):
		return errors.New("holdout fraction must be in (0, 1)")
	case c.ValidationFraction < 0 || c.HoldoutFraction+c.ValidationFraction >= 1:
		return errors.New("validation fraction must be >= 0 and leave room for training")
	case !(c.NegativeRate > 0 && c.NegativeRate <= 1):
		return errors.New("negative rate must be in (0, 1]")
	case !(c.ThresholdAnon > 0 && c.ThresholdAnon < 1) || !(c.ThresholdHostile > 0 && c.ThresholdHostile < 1):
		return errors.New("thresholds must be in (0, 1)")
	case c.Schema != features.SchemaVersion && c.Schema != features.SchemaHistory:
		return fmt.Errorf("feature schema %d, want %d or %d", c.Schema, features.SchemaVersion, features.SchemaHistory)
	case c.Schema == features.SchemaVersion && (c.VerdictsFile != "" || c.AttacksFile != ""):
		return errors.New("verdicts and attacks files feed the history features of schema 2, not schema 1")
	case c.Folds < 0 || c.Folds > 20:
		return errors.New("folds must be in [0, 20]")
	case c.CheckpointEvery < 1:
		return errors.New("checkpoint interval must be at least 1 tree")
	case c.Resume && c.Restart:
		return errors.New("resume and restart exclude each other")
	}
	c.Params.Seed = c.Seed
	return c.Params.Validate()
}

// Result is what a training run produced.
type Result struct {
	Model        *model.Model
	Path         string
	Examples     [3]int // rows per split
	Groups       [3]int
	Index        features.BuildStats
	ResumedTrees int
	Duration     time.Duration
}

// heads in training order, with their labels.
var heads = []string{model.HeadAnonymiser, model.HeadHostile}

func (s *Set) labelsOf(head string) []bool {
	if head == model.HeadAnonymiser {
		return s.Anon
	}
	return s.Hostile
}

// Train runs a whole training. progressOut receives the progress bar or
// lines; log receives the stages.
func Train(ctx context.Context, cfg Config, log zerolog.Logger, progressOut io.Writer) (*Result, error) {
	cfg.Params.Seed = cfg.Seed
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	start := time.Now()
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	ckPath := filepath.Join(cfg.OutDir, CheckpointFile)
	var ck *checkpoint
	switch _, err := os.Stat(ckPath); {
	case err == nil && cfg.Restart:
		if err := os.Remove(ckPath); err != nil {
			return nil, err
		}
		log.Info().Str("path", ckPath).Msg("restart: checkpoint removed")
	case err == nil && !cfg.Resume:
		return nil, fmt.Errorf("%s exists from an earlier run: pass --resume to continue it or --restart to discard it", ckPath)
	case err == nil:
		if ck, err = readCheckpoint(ckPath); err != nil {
			return nil, err
		}
	case cfg.Resume:
		return nil, fmt.Errorf("--resume: no checkpoint at %s", ckPath)
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
	st := ex.Stats()
	log.Info().Int("networks", st.Networks).Int("ases", st.ASes).Int("buckets", st.Buckets).
		Int("index_mb", st.IndexBytes>>20).Dur("build", st.BuildTime).Msg("feature index built")

	var folds []*features.Extractor
	if cfg.Folds >= 2 {
		t0 := time.Now()
		for k := range cfg.Folds {
			fx, err := features.NewFoldExtractor(db, func(n locdb.Network) bool { return foldOf(cfg.Seed, cfg.Folds, n) == k },
				float32(cfg.Folds)/float32(cfg.Folds-1))
			if err != nil {
				return nil, err
			}
			folds = append(folds, fx)
		}
		log.Info().Int("folds", cfg.Folds).Dur("build", time.Since(t0)).Msg("out-of-fold feature indexes built")
	}
	sp := &splitter{seed: cfg.Seed, holdout: cfg.HoldoutFraction, validation: cfg.ValidationFraction}
	splitDesc := fmt.Sprintf("whole ASes (ASN 0: per IPv4 /16 or IPv6 /32) by seeded hash: %.0f%% held out, %.0f%% validation", 100*cfg.HoldoutFraction, 100*cfg.ValidationFraction)
	if cfg.HoldoutASFile != "" {
		if sp.holdoutAS, err = readASList(cfg.HoldoutASFile); err != nil {
			return nil, err
		}
		splitDesc = fmt.Sprintf("the %d ASes of %s held out; %.0f%% of the other groups for validation", len(sp.holdoutAS), cfg.HoldoutASFile, 100*cfg.ValidationFraction)
	}
	var file []labels.Entry
	sources := []string{}
	if cfg.DBLabels {
		sources = append(sources, "locdb-flags (anonymiser: anonymous proxy; hostile: drop)")
	}
	if cfg.LabelsFile != "" {
		sum, err := readHashed(cfg.LabelsFile, func(r io.Reader) (err error) {
			file, err = labels.Parse(r, cfg.LabelsFile)
			return err
		})
		if err != nil {
			return nil, err
		}
		sources = append(sources, fmt.Sprintf("file %s (sha256 %s, %d lines)", cfg.LabelsFile, sum, len(file)))
	}
	var hist *trainHistory
	historyDesc := ""
	if cfg.Schema == features.SchemaHistory {
		t0 := time.Now()
		if hist, err = loadHistory(db, cfg.VerdictsFile, cfg.AttacksFile, time.Now()); err != nil {
			return nil, err
		}
		historyDesc = NoHistory
		if hist != nil {
			historyDesc = hist.desc
			z := hist.t.Sizes()
			log.Info().Int("addresses", z.Addrs).Int("buckets", z.Buckets).Int("ases", z.ASes).Dur("took", time.Since(t0)).Msg("history folded")
		} else {
			log.Info().Msg("no history files: the history features are 0")
		}
	}
	t0 := time.Now()
	exs, err := buildExamples(ctx, db, ex, folds, cfg, file, sp, hist)
	folds = nil // let the indexes go before training
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w while extracting examples, before any tree (nothing to resume)", ErrInterrupted)
		}
		return nil, fmt.Errorf("build examples: %w", err)
	}
	res := &Result{Index: st}
	for i := range exs.Sets {
		res.Examples[i], res.Groups[i] = exs.Sets[i].Rows(), len(exs.Sets[i].Groups)
	}
	train := &exs.Sets[SplitTrain]
	log.Info().Int("train", res.Examples[0]).Int("validation", res.Examples[1]).Int("holdout", res.Examples[2]).
		Int("negatives_kept", exs.Sampled).Int("negatives_seen", exs.Negatives).Dur("took", time.Since(t0)).
		Msg("examples extracted")

	binned, err := model.Bin(&train.Data, cfg.Params.MaxBins)
	if err != nil {
		return nil, err
	}
	fp := fingerprint(cfg, train)
	if ck != nil {
		if err := ck.matches(fp, cfg.Params); err != nil {
			return nil, fmt.Errorf("%s: %w (use --restart to discard it)", ckPath, err)
		}
	} else {
		ck = &checkpoint{Version: checkpointVersion, Fingerprint: fp, Params: cfg.Params}
	}
	done := 0
	for _, h := range ck.Heads {
		done += len(h.Trees)
	}
	res.ResumedTrees = done
	if done > 0 {
		log.Info().Int("trees", done).Str("path", ckPath).Msg("resuming from checkpoint")
	}

	total := cfg.Params.Trees * len(heads)
	bar := progress.New(progressOut, cfg.Progress, "training", total, cfg.ProgressEvery)
	trainStart := time.Now()
	out := make([]model.Head, 0, len(heads))
	for hi, name := range heads {
		y := make([]float32, train.Rows())
		for i, l := range train.labelsOf(name) {
			if l {
				y[i] = 1
			}
		}
		bs, err := model.NewBooster(cfg.Params, &train.Data, binned, y, hi)
		if err != nil {
			return nil, fmt.Errorf("head %s: %w", name, err)
		}
		if hi < len(ck.Heads) {
			if err := bs.Replay(ck.Heads[hi].Trees); err != nil {
				return nil, err
			}
		}
		for len(bs.Trees()) < cfg.Params.Trees {
			if err := bs.Grow(ctx); err != nil {
				ck.set(hi, name, bs)
				bar.Done()
				if werr := ck.write(ckPath); werr != nil {
					return nil, fmt.Errorf("%w; writing the checkpoint failed too: %v", err, werr)
				}
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%w after %d of %d trees; checkpoint %s: run again with --resume to continue or --restart to start over", ErrInterrupted, ck.trees(), total, ckPath)
				}
				return nil, err
			}
			k := len(bs.Trees())
			if cfg.afterTree != nil {
				cfg.afterTree(hi*cfg.Params.Trees + k)
			}
			bar.Update(hi*cfg.Params.Trees+k, res.ResumedTrees, "trees, head "+name)
			if k%cfg.CheckpointEvery == 0 {
				ck.set(hi, name, bs)
				if err := ck.write(ckPath); err != nil {
					return nil, fmt.Errorf("write checkpoint: %w", err)
				}
			}
		}
		ck.set(hi, name, bs)
		thr := cfg.ThresholdAnon
		if name == model.HeadHostile {
			thr = cfg.ThresholdHostile
		}
		out = append(out, model.Head{Name: name, Base: bs.Base(), Threshold: thr, Trees: bs.Trees()})
	}
	bar.Done()
	log.Info().Dur("took", time.Since(trainStart)).Msg("trees grown")

	version := cfg.ModelVersion
	if version == "" {
		version = "raven-" + time.Now().UTC().Format("20060102T150405Z")
	}
	m := &model.Model{
		Version: version, SchemaVersion: cfg.Schema, Features: features.NamesOf(cfg.Schema),
		CreatedAt: time.Now().UTC().Truncate(time.Second), Params: cfg.Params, Heads: out,
	}
	if err := m.Compile(); err != nil {
		return nil, err
	}
	for _, s := range []Split{SplitHoldout, SplitValidation} {
		if exs.Sets[s].Rows() == 0 {
			continue
		}
		m.Metrics = append(m.Metrics, EvaluateSet(m, &exs.Sets[s], s.String())...)
	}
	host, _ := os.Hostname()
	dbSum, err := fileSHA256(cfg.DBPath)
	if err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	m.Provenance = model.Provenance{
		DBPath: cfg.DBPath, DBVendor: db.Vendor(), DBDescription: db.Description(), DBCreatedAt: db.CreatedAt(),
		DBSHA256: dbSum, LabelSources: sources, Seed: cfg.Seed, Split: splitDesc, NegativeRate: cfg.NegativeRate,
		Folds: cfg.Folds, History: historyDesc,
		TrainExamples: train.Rows(), Command: cfg.Command, Host: host,
		TrainSeconds: math.Round(res.Duration.Seconds()*10) / 10,
	}
	path := filepath.Join(cfg.OutDir, ModelFile)
	if err := m.Save(path); err != nil {
		return nil, fmt.Errorf("save model: %w", err)
	}
	if err := os.Remove(ckPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	res.Model, res.Path = m, path
	return res, nil
}

// fingerprint identifies the training data and settings a checkpoint
// belongs to.
func fingerprint(cfg Config, train *Set) string {
	h := sha256.New()
	p, _ := json.Marshal(cfg.Params)
	h.Write(p)
	fmt.Fprintf(h, "%d|%g|%g|%g|%s|%v|%s|%d|%s|%s\n", cfg.Schema, cfg.HoldoutFraction, cfg.ValidationFraction,
		cfg.NegativeRate, cfg.LabelsFile, cfg.DBLabels, cfg.HoldoutASFile, cfg.Folds, cfg.VerdictsFile, cfg.AttacksFile)
	var b [4]byte
	for _, v := range train.Data.X {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		h.Write(b[:])
	}
	for i := range train.Anon {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(train.Data.Weight[i]))
		b[0] ^= boolByte(train.Anon[i]) | boolByte(train.Hostile[i])<<1
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileSHA256(path string) (string, error) {
	return readHashed(path, func(io.Reader) error { return nil })
}

// readHashed hands the file at path to read and returns the sha256 of the
// whole file, reading it once (so the sum is of the bytes read).
func readHashed(path string, read func(io.Reader) error) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if err := read(io.TeeReader(f, h)); err != nil {
		return "", err
	}
	if _, err := io.Copy(h, f); err != nil { // what read left
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}
