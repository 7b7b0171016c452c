// Package rollout keeps a server's engine on the model /styx/models/current
// names: it fetches the artifact, verifies its checksum, loads it, and swaps
// the engine between batches. With a canary in the pointer it runs the
// canary on its share of the addresses and reports the comparison under
// /styx/models/canary/<worker-id> on the worker's lease.
package rollout

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/modelstore"
	"github.com/styx-inference/styx/pkg/raven"
)

// Loader turns verified artifact bytes into an engine.
type Loader func(artifact []byte) (raven.Engine, error)

// Config configures a Follower.
type Config struct {
	Client   *clientv3.Client
	WorkerID string
	Load     Loader
	// Set installs the engine; batches accepted afterwards use it.
	Set func(raven.Engine)
	// Changed is called after Set (e.g. to rewrite the registration with
	// the new model version). May be nil.
	Changed func()
	// Lease returns the worker's lease for the canary report (0: not now);
	// nil: no reports (a cluster node).
	Lease func() clientv3.LeaseID
	// Locator attributes canary differences to ASes. May be nil.
	Locator raven.Locator
	// ReportEvery is the canary report interval; default 5 s.
	ReportEvery time.Duration
}

// Follower follows the model pointer.
type Follower struct {
	cfg Config
	log zerolog.Logger

	mu     sync.Mutex
	loaded map[string]raven.Engine // by version: current, canary, previous
	canary *raven.Canary
	active string // description of what runs, for logs and tests
}

// New returns a Follower; Run follows until its context ends.
func New(cfg Config, log zerolog.Logger) *Follower {
	if cfg.ReportEvery <= 0 {
		cfg.ReportEvery = 5 * time.Second
	}
	return &Follower{cfg: cfg, log: logging.For(log, "rollout"), loaded: map[string]raven.Engine{}}
}

// Active describes the engine in use: "<version>" or
// "<version>+canary:<version>@<share>", "" before any model.
func (f *Follower) Active() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active
}

// Run follows the pointer and reports canary comparisons until ctx ends.
func (f *Follower) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if f.cfg.Lease != nil { // without a lease (a cluster node) there is nothing to report under
		wg.Go(func() { f.report(ctx) })
	}
	modelstore.Watch(ctx, f.cfg.Client, func(p keyspace.ModelPointer) { f.apply(ctx, p) })
	wg.Wait()
}

func (f *Follower) engine(ctx context.Context, ref keyspace.ModelRef) (raven.Engine, error) {
	f.mu.Lock()
	e, ok := f.loaded[ref.Version]
	f.mu.Unlock()
	if ok {
		return e, nil
	}
	b, err := modelstore.Fetch(ctx, f.cfg.Client, ref)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	e, err = f.cfg.Load(b)
	if err != nil {
		return nil, err
	}
	f.log.Info().Str("model", ref.Version).Int64("bytes", ref.Size).Dur("load", time.Since(start)).Msg("model loaded, checksum verified")
	return e, nil
}

// apply installs what p names. On any error the running engine stays.
func (f *Follower) apply(ctx context.Context, p keyspace.ModelPointer) {
	cur, err := f.engine(ctx, p.ModelRef)
	if err != nil {
		f.log.Error().Err(err).Str("model", p.Version).Msg("model not installed; keeping the running engine")
		return
	}
	keep := map[string]raven.Engine{p.Version: cur}
	var eng raven.Engine = cur
	var can *raven.Canary
	active := p.Version
	if p.Canary != nil {
		ce, err := f.engine(ctx, *p.Canary)
		if err != nil {
			f.log.Error().Err(err).Str("canary", p.Canary.Version).Msg("canary not installed; running the current model alone")
		} else {
			keep[p.Canary.Version] = ce
			can = raven.NewCanary(cur, ce, p.CanaryShare, f.cfg.Locator)
			eng = can
			active += "+canary:" + p.Canary.Version
		}
	}
	f.cfg.Set(eng)
	f.mu.Lock()
	f.loaded, f.canary, f.active = keep, can, active
	f.mu.Unlock()
	if f.cfg.Changed != nil {
		f.cfg.Changed()
	}
	f.log.Info().Str("active", active).Float64("canary_share", p.CanaryShare).Msg("engine swapped")
	if can == nil && f.cfg.Lease != nil { // a cluster node writes no report, so clears none
		f.clearReport(ctx)
	}
}

// report writes the canary comparison every ReportEvery while a canary runs.
func (f *Follower) report(ctx context.Context) {
	t := time.NewTicker(f.cfg.ReportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		can := f.canary
		f.mu.Unlock()
		if can == nil || f.cfg.Lease() == 0 {
			continue
		}
		f.writeReport(ctx, can.Stats())
	}
}

// Report writes the current canary comparison now (tests, shutdown).
func (f *Follower) Report(ctx context.Context) {
	f.mu.Lock()
	can := f.canary
	f.mu.Unlock()
	if can != nil {
		f.writeReport(ctx, can.Stats())
	}
}

func (f *Follower) writeReport(ctx context.Context, s raven.CanaryStats) {
	v, err := keyspace.Encode(keyspace.CanaryReport{
		WorkerID: f.cfg.WorkerID, Current: s.Current, Canary: s.Canary,
		Examined: s.Examined, Differed: s.Differed, ByType: s.ByType, ByASN: s.ByASN,
	})
	if err != nil {
		return
	}
	opts := []clientv3.OpOption{}
	if f.cfg.Lease != nil && f.cfg.Lease() != 0 {
		opts = append(opts, clientv3.WithLease(f.cfg.Lease()))
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := f.cfg.Client.Put(wctx, keyspace.CanaryKey(f.cfg.WorkerID), v, opts...); err != nil && !strings.Contains(err.Error(), "context canceled") {
		f.log.Warn().Err(err).Msg("canary report")
	}
}

func (f *Follower) clearReport(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _ = f.cfg.Client.Delete(wctx, keyspace.CanaryKey(f.cfg.WorkerID))
}
