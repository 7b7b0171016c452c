package evidence

import (
	"fmt"
	"time"
)

// Commander defaults.
const (
	// DefaultInterval is how often a Runner samples its backlog.
	DefaultInterval = time.Second
	// defaultIdleIntervals is IdleFor's default, in Intervals.
	defaultIdleIntervals = 5
)

// CommanderConfig configures a Commander.
type CommanderConfig struct {
	// Min and Max bound the concurrency limit; the limit starts at Min.
	Min, Max int
	// Interval is how often the Runner samples the backlog for the
	// Commander; 0 means DefaultInterval.
	Interval time.Duration
	// Cooldown is the least time between two changes of the limit; 0
	// means Interval.
	Cooldown time.Duration
	// IdleFor is how long slots must stay spare (no backlog, at least a
	// quarter of the slots free) before the limit is lowered, and again
	// between two lowerings; 0 means five Intervals.
	IdleFor time.Duration
}

// Validate reports a configuration error.
func (c CommanderConfig) Validate() error {
	switch {
	case c.Min < 1:
		return fmt.Errorf("evidence: min concurrency %d, want >= 1", c.Min)
	case c.Max < c.Min:
		return fmt.Errorf("evidence: max concurrency %d, want >= min %d", c.Max, c.Min)
	case c.Interval < 0 || c.Cooldown < 0 || c.IdleFor < 0:
		return fmt.Errorf("evidence: negative interval %s, cooldown %s or idle time %s", c.Interval, c.Cooldown, c.IdleFor)
	}
	return nil
}

func (c CommanderConfig) withDefaults() CommanderConfig {
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Cooldown == 0 {
		c.Cooldown = c.Interval
	}
	if c.IdleFor == 0 {
		c.IdleFor = defaultIdleIntervals * c.Interval
	}
	return c
}

// Sample is what the Commander observes.
type Sample struct {
	// Backlog is the number of callers waiting for a slot.
	Backlog int
	// InFlight is the number of calls running.
	InFlight int
}

// Commander decides the concurrency limit from the backlog. It is pure
// logic: time is passed in. It is not safe for concurrent use.
//
// The rule:
//
//   - callers are waiting: raise the limit by the backlog, at most
//     doubling it, capped at Max (a short queue adds a slot or two, a long
//     one doubles);
//   - no backlog and at least a quarter of the slots free, for IdleFor:
//     lower the limit by half of the free slots (at least one), down to
//     Min;
//   - two changes are at least Cooldown apart, so a change shows its
//     effect before the next.
type Commander struct {
	cfg        CommanderConfig
	limit      int
	changed    time.Time // last change; zero before the first
	spareSince time.Time // start of the current spare period; zero if none
}

// NewCommander returns a Commander whose limit is cfg.Min.
func NewCommander(cfg CommanderConfig) (*Commander, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Commander{cfg: cfg, limit: cfg.Min}, nil
}

// Limit returns the current limit.
func (c *Commander) Limit() int { return c.limit }

// Observe takes a sample at now and returns the limit, and whether it
// changed.
func (c *Commander) Observe(now time.Time, s Sample) (int, bool) {
	old := c.limit
	free := c.limit - s.InFlight
	switch {
	case s.Backlog > 0:
		c.spareSince = time.Time{}
		if c.limit < c.cfg.Max && c.cooled(now) {
			c.limit = min(c.cfg.Max, c.limit+max(1, min(s.Backlog, c.limit)))
		}
	case free > 0 && 4*free >= c.limit:
		if c.spareSince.IsZero() {
			c.spareSince = now
		}
		if c.limit > c.cfg.Min && now.Sub(c.spareSince) >= c.cfg.IdleFor && c.cooled(now) {
			c.limit = max(c.cfg.Min, c.limit-max(1, free/2))
			c.spareSince = now
		}
	default:
		c.spareSince = time.Time{}
	}
	if c.limit == old {
		return c.limit, false
	}
	c.changed = now
	return c.limit, true
}

func (c *Commander) cooled(now time.Time) bool {
	return c.changed.IsZero() || now.Sub(c.changed) >= c.cfg.Cooldown
}
