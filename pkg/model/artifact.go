package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/styx-inference/styx/pkg/features"
)

// Format names the artifact's file format; FormatVersion is its version.
const (
	Format        = "styx-raven-model"
	FormatVersion = 1
)

// The heads the trainer builds.
const (
	HeadAnonymiser = "anonymiser" // positives: networks flagged anonymous proxy
	HeadHostile    = "hostile"    // positives: networks flagged drop
)

// ErrChecksum is wrapped when an artifact's payload does not match its
// sha256.
var ErrChecksum = errors.New("model artifact checksum mismatch")

// Head is one binary question: P(positive | x) = sigmoid(Base + sum of
// the trees' values).
type Head struct {
	Name      string  `json:"name"`
	Base      float64 `json:"base"`
	Threshold float64 `json:"threshold"` // probability at and above which the head says yes
	Trees     []Tree  `json:"trees"`
}

// Provenance says where a model came from.
type Provenance struct {
	DBPath        string    `json:"db_path"`
	DBVendor      string    `json:"db_vendor"`
	DBDescription string    `json:"db_description,omitempty"`
	DBCreatedAt   time.Time `json:"db_created_at"`
	DBSHA256      string    `json:"db_sha256,omitempty"`
	LabelSources  []string  `json:"label_sources"`
	Seed          uint64    `json:"seed"`
	Split         string    `json:"split"` // how the held-out set was chosen
	NegativeRate  float64   `json:"negative_rate"`
	Folds         int       `json:"folds"` // out-of-fold neighbourhood statistics for training examples; < 2: leave-one-out
	// History says what filled the history block of a schema 2 model's
	// training examples (the verdicts and attacks files), or that nothing
	// did and its features were all 0.
	History       string  `json:"history,omitempty"`
	TrainExamples int     `json:"train_examples"`
	Command       string  `json:"command,omitempty"`
	Host          string  `json:"host,omitempty"`
	TrainSeconds  float64 `json:"train_seconds"`
}

// Evaluation is one head's held-out metrics beside the baselines'.
type Evaluation struct {
	Head      string             `json:"head"`
	Set       string             `json:"set"` // "holdout", "validation", or a label file
	Model     Metrics            `json:"model"`
	Baselines map[string]Metrics `json:"baselines,omitempty"`
}

// Model is a trained Raven model: the artifact's payload.
type Model struct {
	Version       string       `json:"model_version"`
	SchemaVersion int          `json:"schema_version"`
	Features      []string     `json:"features"`
	CreatedAt     time.Time    `json:"created_at"`
	Params        Params       `json:"params"`
	Heads         []Head       `json:"heads"`
	Metrics       []Evaluation `json:"metrics,omitempty"`
	Provenance    Provenance   `json:"provenance"`

	scorer *scorer // built by Compile
	sha    string  // of the payload, set by Save and Load
}

// envelope is the file: the payload's exact bytes and their sha256.
type envelope struct {
	Format        string          `json:"format"`
	FormatVersion int             `json:"format_version"`
	ModelVersion  string          `json:"model_version"`
	SHA256        string          `json:"sha256"`
	Payload       json.RawMessage `json:"payload"`
}

// Compile checks the model (schema, trees) and prepares it for scoring.
// Load calls it; a Model built in memory must call it before scoring.
func (m *Model) Compile() error {
	if m.Version == "" {
		return errors.New("model: no model version")
	}
	if err := features.Compatible(m.SchemaVersion, m.Features); err != nil {
		return fmt.Errorf("model %s: %w", m.Version, err)
	}
	if len(m.Heads) == 0 {
		return fmt.Errorf("model %s: no heads", m.Version)
	}
	seen := map[string]bool{}
	for i, h := range m.Heads {
		if h.Name == "" || seen[h.Name] {
			return fmt.Errorf("model %s: head %d: empty or repeated name %q", m.Version, i, h.Name)
		}
		seen[h.Name] = true
		if math.IsNaN(h.Base) || math.IsInf(h.Base, 0) || !(h.Threshold >= 0 && h.Threshold <= 1) {
			return fmt.Errorf("model %s: head %s: base %v or threshold %v out of range", m.Version, h.Name, h.Base, h.Threshold)
		}
		for k := range h.Trees {
			if err := h.Trees[k].validate(len(m.Features)); err != nil {
				return fmt.Errorf("model %s: head %s: tree %d: %w", m.Version, h.Name, k, err)
			}
		}
	}
	m.scorer = newScorer(m.Heads, len(m.Features))
	return nil
}

// ModelVersion names the model.
func (m *Model) ModelVersion() string { return m.Version }

// NumFeatures is the length of the vectors the model scores.
func (m *Model) NumFeatures() int { return len(m.Features) }

// FeatureSchema is the feature schema version the model was trained on.
func (m *Model) FeatureSchema() int { return m.SchemaVersion }

// SHA256 is the hex sha256 of the payload, once saved or loaded.
func (m *Model) SHA256() string { return m.sha }

// Head returns the index of the named head, or -1.
func (m *Model) Head(name string) int {
	for i, h := range m.Heads {
		if h.Name == name {
			return i
		}
	}
	return -1
}

// Threshold is head's decision threshold (a probability).
func (m *Model) Threshold(head int) float64 { return m.Heads[head].Threshold }

// Raw returns head's raw score (log-odds) for x. It does not allocate.
func (m *Model) Raw(head int, x []float32) float64 {
	_ = x[len(m.Features)-1]
	return m.scorer.raw(head, x)
}

// Probability returns head's probability for x. It does not allocate.
func (m *Model) Probability(head int, x []float32) float64 {
	return sigmoid(m.Raw(head, x))
}

// Probabilities returns the probabilities of heads a and b for x, which
// cost little more than one: x is compared with the thresholds once. It
// does not allocate.
func (m *Model) Probabilities(a, b int, x []float32) (pa, pb float64) {
	_ = x[len(m.Features)-1]
	ra, rb := m.scorer.raw2(a, b, x)
	return sigmoid(ra), sigmoid(rb)
}

// Size is the number of trees and nodes over all heads.
func (m *Model) Size() (trees, nodes int) {
	for _, h := range m.Heads {
		trees += len(h.Trees)
		for _, t := range h.Trees {
			nodes += t.Len()
		}
	}
	return trees, nodes
}

// Encode writes the artifact to w and records the payload's sha256.
func (m *Model) Encode(w io.Writer) error {
	payload, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	sum := sha256.Sum256(payload)
	m.sha = hex.EncodeToString(sum[:])
	b, err := json.Marshal(envelope{
		Format: Format, FormatVersion: FormatVersion, ModelVersion: m.Version,
		SHA256: m.sha, Payload: payload,
	})
	if err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	return nil
}

// Save writes the artifact to path atomically (a temporary file renamed
// over it).
func (m *Model) Save(path string) error {
	return WriteFileAtomic(path, m.Encode)
}

// WriteFileAtomic writes path through a temporary file in the same
// directory, synced and renamed over it.
func WriteFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Decode reads an artifact, verifies its checksum, format and feature
// schema, and compiles it.
func Decode(r io.Reader) (*Model, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read model: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(b, &env); err != nil {
		return nil, fmt.Errorf("decode model envelope: %w", err)
	}
	if env.Format != Format {
		return nil, fmt.Errorf("not a model artifact (format %q, want %q)", env.Format, Format)
	}
	if env.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("model artifact format version %d, this build reads %d", env.FormatVersion, FormatVersion)
	}
	sum := sha256.Sum256(env.Payload)
	if got := hex.EncodeToString(sum[:]); got != env.SHA256 {
		return nil, fmt.Errorf("payload sha256 %s, envelope says %s: %w", got, env.SHA256, ErrChecksum)
	}
	m := &Model{}
	dec := json.NewDecoder(bytes.NewReader(env.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(m); err != nil {
		return nil, fmt.Errorf("decode model payload: %w", err)
	}
	if m.Version != env.ModelVersion {
		return nil, fmt.Errorf("payload names model %q, envelope %q", m.Version, env.ModelVersion)
	}
	m.sha = env.SHA256
	if err := m.Compile(); err != nil {
		return nil, err
	}
	return m, nil
}

// Load reads and verifies the artifact at path (see Decode).
func Load(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	defer f.Close()
	m, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return m, nil
}
