// Package modelengine turns a model artifact into a raven.Engine over the
// location database: it decodes and verifies the artifact (pkg/model),
// checks its feature schema, and pairs it with a feature extractor
// (pkg/features) built once per database and shared by every model the
// server loads afterwards.
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
	db *locdb.DB

	once  sync.Once
	ex    *features.Extractor
	err   error
	built time.Duration
}

// New returns a Loader over db, which must stay open while its engines
// are used. The extractor is built on the first Load (seconds on the real
// database), not here.
func New(db *locdb.DB) *Loader { return &Loader{db: db} }

// Load decodes artifact, verifies it and returns its engine.
func (l *Loader) Load(artifact []byte) (raven.Engine, error) {
	m, err := model.Decode(bytes.NewReader(artifact))
	if err != nil {
		return nil, err
	}
	if m.FeatureSchema() != features.SchemaVersion {
		return nil, fmt.Errorf("model %s uses feature schema %d, this build extracts %d", m.ModelVersion(), m.FeatureSchema(), features.SchemaVersion)
	}
	l.once.Do(func() {
		start := time.Now()
		l.ex, l.err = features.NewExtractor(l.db)
		l.built = time.Since(start)
	})
	if l.err != nil {
		return nil, fmt.Errorf("feature extractor: %w", l.err)
	}
	return raven.NewModel(m, l.ex)
}

// ExtractorBuildTime is how long building the extractor took (0 before
// the first Load).
func (l *Loader) ExtractorBuildTime() time.Duration { return l.built }
