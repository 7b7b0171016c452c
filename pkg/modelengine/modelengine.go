// Package modelengine turns a model artifact into a raven.Engine over the
// location database: it decodes and verifies the artifact (pkg/model),
// checks its feature schema, and pairs it with a feature extractor
// (pkg/features) built once per database and shared by every model the
// server loads afterwards: the schema 1 extractor for a schema 1 model,
// and for a schema 2 model the same extractor followed by the server's
// history (a history.Table: the feed fills a worker's, the store a cluster
// node's; or none: a zero history block).
package modelengine

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/raven"
)

// Loader builds engines from artifacts over one open database.
type Loader struct {
	db   *locdb.DB
	hist features.HistorySource

	once  sync.Once
	ex    *features.Extractor
	err   error
	built time.Duration
}

// New returns a Loader over db, which must stay open while its engines
// are used, and hist, the history schema 2 models read (nil: none, their
// history features are zero). The extractor is built on the first Load
// (seconds on the real database), not here.
func New(db *locdb.DB, hist features.HistorySource) *Loader {
	return &Loader{db: db, hist: hist}
}

// Load decodes artifact, verifies it and returns its engine.
func (l *Loader) Load(artifact []byte) (raven.Engine, error) {
	m, err := model.Decode(bytes.NewReader(artifact))
	if err != nil {
		return nil, err
	}
	if features.NumFeaturesOf(m.FeatureSchema()) == 0 {
		return nil, fmt.Errorf("model %s uses feature schema %d, this build extracts %d and %d", m.ModelVersion(), m.FeatureSchema(), features.SchemaVersion, features.SchemaHistory)
	}
	l.once.Do(func() {
		start := time.Now()
		l.ex, l.err = features.NewExtractor(l.db)
		l.built = time.Since(start)
	})
	if l.err != nil {
		return nil, fmt.Errorf("feature extractor: %w", l.err)
	}
	if m.FeatureSchema() == features.SchemaHistory {
		return raven.NewModel(m, features.NewHistoryExtractor(l.ex, l.hist))
	}
	return raven.NewModel(m, l.ex)
}

// ExtractorBuildTime is how long building the extractor took (0 before
// the first Load).
func (l *Loader) ExtractorBuildTime() time.Duration { return l.built }
