// Package logging builds the zerolog loggers every STYX process uses and
// names the log fields, so that the same thing is always logged under the
// same key.
package logging

import (
	"io"
	"os"
	"time"

	"github.com/rs/zerolog"
)

// Stable field names.
const (
	Component = "component"
	WorkerID  = "worker_id"
	NodeID    = "node_id"
	BatchID   = "batch_id"
	Term      = "term"
	Attempt   = "attempt"
	Addr      = "addr"
	Leader    = "leader"
	Lease     = "lease"
	Count     = "count"
	Reason    = "reason"
	Model     = "model_version"
	// Fleet operations (drain, status).
	SchedulerID = "scheduler_id"
	Host        = "host"
	InFlight    = "in_flight"
	MetricsAddr = "metrics_addr"
)

func init() {
	zerolog.TimeFieldFormat = time.RFC3339Nano
}

// New returns a JSON logger writing to w at the given level ("debug",
// "info", "warn", "error"). An unknown level is an error.
func New(w io.Writer, level string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Nop(), err
	}
	if w == nil {
		w = os.Stderr
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// For returns the sub-logger of a component.
func For(log zerolog.Logger, component string) zerolog.Logger {
	return log.With().Str(Component, component).Logger()
}
