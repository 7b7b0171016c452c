package evidence

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/styx-inference/styx/pkg/logging"
)

var (
	// ErrBusy is matched (errors.Is) by the error of a call the Runner
	// did not start: MaxWaiting callers already waited, or (with MaxWait)
	// the call could not have started soon enough.
	ErrBusy = errors.New("evidence: busy")
	// ErrCallTimeout is the cause of a call that ran out of CallTimeout.
	ErrCallTimeout = errors.New("evidence: call timed out")

	errTooManyWaiting = fmt.Errorf("%w: too many examinations waiting", ErrBusy)
	errTokenLate      = fmt.Errorf("%w: no rate token due within the max wait", ErrBusy)
	errNoSlot         = fmt.Errorf("%w: no free slot within the max wait", ErrBusy)
)

// Log field names of this package.
const (
	fieldPlugin = "plugin"
	fieldLimit  = "limit"
)

// Config configures a Runner.
type Config struct {
	// Plugin is the plugin the Runner calls; required.
	Plugin Plugin
	// Concurrency bounds the calls in flight and steers the limit
	// (Min, Max, Interval, Cooldown, IdleFor).
	Concurrency CommanderConfig
	// Rate is the number of calls started per second; 0 means no rate
	// limit.
	Rate float64
	// Burst is the token bucket's size; 0 means 1.
	Burst int
	// CallTimeout bounds each call; required.
	CallTimeout time.Duration
	// MaxWaiting bounds the callers waiting for a token or a slot; 0
	// means 4 × Concurrency.Max.
	MaxWaiting int
	// MaxWait, when > 0, bounds each wait of a caller: a call whose rate
	// token would be due later than MaxWait is refused at once (the token
	// is not taken), and a caller that waited MaxWait for a slot gives up;
	// both get ErrBusy. Callers that must not be held up for long (the
	// worker's examining goroutines) skip the examination instead. 0 means
	// waiting as long as the caller's context allows.
	MaxWait time.Duration
	// Clock drives the rate limiter and the Commander; nil means the real
	// clock. The per-call deadline is always real time (a context
	// deadline).
	Clock clock.WithTicker
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	if err := c.Concurrency.Validate(); err != nil {
		return err
	}
	switch {
	case c.Plugin == nil:
		return errors.New("evidence: nil plugin")
	case c.Rate < 0:
		return fmt.Errorf("evidence: rate %g, want >= 0", c.Rate)
	case c.Burst < 0:
		return fmt.Errorf("evidence: burst %d, want >= 0", c.Burst)
	case c.CallTimeout <= 0:
		return fmt.Errorf("evidence: call timeout %s, want > 0", c.CallTimeout)
	case c.MaxWaiting < 0:
		return fmt.Errorf("evidence: max waiting %d, want >= 0", c.MaxWaiting)
	case c.MaxWait < 0:
		return fmt.Errorf("evidence: max wait %s, want >= 0", c.MaxWait)
	}
	return nil
}

// Stats are a Runner's figures.
type Stats struct {
	// Limit is the current concurrency limit.
	Limit int
	// InFlight is the number of calls running.
	InFlight int
	// Backlog is the number of callers waiting for a slot.
	Backlog int
	// Waiting is the number of callers waiting for a token or a slot.
	Waiting int
	// Calls counts completed calls, Errors those that returned an error
	// (Timeouts included), Timeouts those that ran out of CallTimeout, and
	// Busy the callers refused with ErrBusy (MaxWaiting or MaxWait).
	Calls, Errors, Timeouts, Busy uint64
}

// Runner calls one plugin within limits of concurrency, rate and time. It
// implements Plugin itself, so runners compose with code that takes a
// plugin. Examine is safe for concurrent use; Run steers the concurrency.
type Runner struct {
	cfg     Config
	log     zerolog.Logger
	clock   clock.WithTicker
	limiter *rate.Limiter // nil: no rate limit
	gate    *gate

	cmd     *Commander // used by Run only
	running atomic.Bool

	waiting                        atomic.Int64
	calls, errs, timeouts, refused atomic.Uint64
}

// NewRunner returns a Runner whose concurrency limit is
// cfg.Concurrency.Min until Run raises it.
func NewRunner(cfg Config, log zerolog.Logger) (*Runner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Concurrency = cfg.Concurrency.withDefaults()
	if cfg.Burst == 0 {
		cfg.Burst = 1
	}
	if cfg.MaxWaiting == 0 {
		cfg.MaxWaiting = 4 * cfg.Concurrency.Max
	}
	cmd, err := NewCommander(cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	r := &Runner{
		cfg:   cfg,
		log:   logging.For(log, "evidence").With().Str(fieldPlugin, cfg.Plugin.Name()).Logger(),
		clock: cfg.Clock,
		gate:  newGate(cmd.Limit()),
		cmd:   cmd,
	}
	if r.clock == nil {
		r.clock = clock.RealClock{}
	}
	if cfg.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Burst)
	}
	return r, nil
}

// Name implements Plugin: the wrapped plugin's name.
func (r *Runner) Name() string { return r.cfg.Plugin.Name() }

// Examine implements Plugin. It waits for a rate token, then for a slot,
// then calls the plugin with a deadline of CallTimeout. It returns an
// error matching ErrBusy at once if MaxWaiting callers already wait, or if
// a wait would exceed MaxWait, and ctx's error if ctx ends while waiting.
// A call that runs out of time returns an error matching ErrCallTimeout,
// with whatever the plugin found before.
func (r *Runner) Examine(ctx context.Context, addr netip.Addr, dst []Evidence) ([]Evidence, error) {
	if !r.admit() {
		r.refused.Add(1)
		return dst, errTooManyWaiting
	}
	err := r.waitToken(ctx)
	if err == nil {
		err = r.acquire(ctx)
	}
	r.waiting.Add(-1)
	if err != nil {
		if errors.Is(err, ErrBusy) {
			r.refused.Add(1)
		}
		return dst, err
	}
	defer r.gate.release()

	cctx, cancel := context.WithTimeoutCause(ctx, r.cfg.CallTimeout, ErrCallTimeout)
	defer cancel()
	out, err := r.cfg.Plugin.Examine(cctx, addr, dst)
	r.calls.Add(1)
	if err != nil {
		r.errs.Add(1)
		if ctx.Err() == nil && errors.Is(context.Cause(cctx), ErrCallTimeout) {
			r.timeouts.Add(1)
			return out, fmt.Errorf("%s: %w after %s: %w", r.Name(), ErrCallTimeout, r.cfg.CallTimeout, err)
		}
		return out, fmt.Errorf("%s: %w", r.Name(), err)
	}
	return out, nil
}

// acquire takes a slot, waiting at most MaxWait (when set) for one.
func (r *Runner) acquire(ctx context.Context) error {
	if r.cfg.MaxWait <= 0 {
		return r.gate.acquire(ctx)
	}
	if r.gate.tryAcquire() {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.MaxWait)
	defer cancel()
	err := r.gate.acquire(wctx)
	if err != nil && ctx.Err() == nil {
		return errNoSlot
	}
	return err
}

// admit counts one more waiting caller, unless MaxWaiting already wait.
func (r *Runner) admit() bool {
	for {
		n := r.waiting.Load()
		if n >= int64(r.cfg.MaxWaiting) {
			return false
		}
		if r.waiting.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// waitToken takes a token from the bucket, waiting on the Runner's clock
// until it is due.
func (r *Runner) waitToken(ctx context.Context) error {
	if r.limiter == nil {
		return nil
	}
	now := r.clock.Now()
	res := r.limiter.ReserveN(now, 1)
	if !res.OK() {
		return errors.New("evidence: rate limiter refused a single token")
	}
	d := res.DelayFrom(now)
	if d <= 0 {
		return nil
	}
	if r.cfg.MaxWait > 0 && d > r.cfg.MaxWait {
		res.CancelAt(now)
		return errTokenLate
	}
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		res.CancelAt(r.clock.Now())
		return ctx.Err()
	}
}

// Run steers the concurrency limit with the Commander, sampling every
// Interval, until ctx ends. Call it once.
func (r *Runner) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("evidence: Run called twice")
	}
	t := r.clock.NewTicker(r.cfg.Concurrency.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C():
			r.steer(now)
		}
	}
}

func (r *Runner) steer(now time.Time) {
	st := r.gate.stats()
	limit, changed := r.cmd.Observe(now, Sample{Backlog: st.waiting, InFlight: st.inUse})
	if !changed {
		return
	}
	r.gate.setLimit(limit)
	r.log.Debug().Int(fieldLimit, limit).Int(logging.Count, st.waiting).Msg("concurrency limit changed")
}

// Stats returns the Runner's figures.
func (r *Runner) Stats() Stats {
	st := r.gate.stats()
	return Stats{
		Limit:    st.limit,
		InFlight: st.inUse,
		Backlog:  st.waiting,
		Waiting:  int(r.waiting.Load()),
		Calls:    r.calls.Load(),
		Errors:   r.errs.Load(),
		Timeouts: r.timeouts.Load(),
		Busy:     r.refused.Load(),
	}
}
