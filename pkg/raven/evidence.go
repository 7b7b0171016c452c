package raven

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/evidence"
	"github.com/styx-inference/styx/pkg/verdict"
)

// ProbeRisk is the risk of a verdict whose type an evidence plugin
// confirmed (an open proxy that completed a handshake), unless
// EvidenceConfig.Risk says otherwise.
const ProbeRisk = 100

// ErrEvidenceStopped is matched by the error an EvidenceReport carries
// when the stage was stopped before or during the examination.
var ErrEvidenceStopped = errors.New("raven: evidence stage stopped")

// EvidenceConfig configures an EvidenceStage.
type EvidenceConfig struct {
	// Plugin examines the addresses; required. Pass an *evidence.Runner,
	// so that its limits of concurrency, rate and time apply (give it a
	// MaxWait, so that a busy plugin is skipped rather than waited for).
	Plugin evidence.Plugin
	// Timeout bounds the plugin's examination of one address, its waits
	// for a rate token and a slot included; required.
	Timeout time.Duration
	// Risk is the risk of a verdict the plugin confirmed (a finding with a
	// Type), if the inner verdict's is lower; 0 means ProbeRisk.
	Risk uint32
	// Observe, when not nil, is called after every examination by the
	// plugin (metrics). It must be safe for concurrent use and quick.
	Observe func(EvidenceReport)
}

// Validate reports a configuration error.
func (c EvidenceConfig) Validate() error {
	switch {
	case c.Plugin == nil:
		return errors.New("raven: evidence stage without a plugin")
	case c.Timeout <= 0:
		return fmt.Errorf("raven: evidence timeout %s, want > 0", c.Timeout)
	case c.Risk > 100:
		return fmt.Errorf("raven: evidence risk %d, want 0..100", c.Risk)
	}
	return nil
}

// EvidenceReport is what one examination by the plugin came to.
type EvidenceReport struct {
	// Found is what the plugin found; valid during the Observe call only.
	Found []evidence.Evidence
	// Err is the plugin's (or its Runner's) error: nil, or one matching
	// evidence.ErrBusy (skipped), evidence.ErrCallTimeout,
	// ErrEvidenceStopped, a guard's refusal, ... Found may be non-empty
	// even so (a call that ran out of time keeps what it found).
	Err error
}

// EvidenceStage runs an evidence plugin after an engine: the step of
// Raven's pipeline between the statistics and the verdict. One stage is
// shared by every engine it wraps (Wrap), so the plugin's limits hold
// across live model swaps. It is safe for concurrent use.
type EvidenceStage struct {
	cfg    EvidenceConfig
	ctx    context.Context // ended by Stop
	cancel context.CancelCauseFunc
}

// NewEvidenceStage returns a stage; Stop releases it.
func NewEvidenceStage(cfg EvidenceConfig) (*EvidenceStage, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Risk == 0 {
		cfg.Risk = ProbeRisk
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	return &EvidenceStage{cfg: cfg, ctx: ctx, cancel: cancel}, nil
}

// Stop ends the examinations in progress (their engines answer at once
// with the inner verdict) and turns the stage off for good: from then on
// its engines answer with the inner verdict alone. It may be called more
// than once.
func (s *EvidenceStage) Stop() { s.cancel(ErrEvidenceStopped) }

// Wrap returns an engine that answers with inner's verdict, completed by
// the stage's plugin. Wrap every engine installed (a model swapped in
// live, a canary): the wrappers share the stage.
func (s *EvidenceStage) Wrap(inner Engine) *EvidenceEngine {
	return &EvidenceEngine{inner: inner, stage: s}
}

// EvidenceEngine is an Engine decorated with an evidence stage. For an
// address the inner engine does not already call a proxy, it runs the
// plugin (within Timeout) and, when the plugin confirms a type (an open
// proxy: "HTTP", "SOCKS4" or "SOCKS5"), answers proxy, that type, its
// port and a risk of at least Risk. Every finding's String
// ("proxyprobe:SOCKS5:1080") is appended to the inner verdict's evidence.
// Without findings, or when the plugin is busy, fails or the stage is
// stopped, the inner verdict is the answer, unchanged.
type EvidenceEngine struct {
	inner Engine
	stage *EvidenceStage
}

var (
	_ Engine              = (*EvidenceEngine)(nil)
	_ attacks.HistoryUser = (*EvidenceEngine)(nil)
)

// Inner returns the wrapped engine.
func (e *EvidenceEngine) Inner() Engine { return e.inner }

// ModelVersion implements Engine: the inner engine's.
func (e *EvidenceEngine) ModelVersion() string { return e.inner.ModelVersion() }

// UseAttackHistory passes the attack history on to the inner engine, if it
// wants it.
func (e *EvidenceEngine) UseAttackHistory(h attacks.History) {
	if u, ok := e.inner.(attacks.HistoryUser); ok {
		u.UseAttackHistory(h)
	}
}

// Examine implements Engine.
func (e *EvidenceEngine) Examine(addr netip.Addr) verdict.Verdict {
	v := e.inner.Examine(addr)
	if v.Proxy {
		return v // known already: the probe's time goes to the others
	}
	return e.stage.complete(addr, v)
}

// complete runs the plugin on addr and completes v with its findings.
func (s *EvidenceStage) complete(addr netip.Addr, v verdict.Verdict) verdict.Verdict {
	var (
		found []evidence.Evidence
		err   error
	)
	if s.ctx.Err() != nil {
		err = ErrEvidenceStopped
	} else {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.Timeout)
		found, err = s.cfg.Plugin.Examine(ctx, addr, nil)
		cancel()
		if err != nil && s.ctx.Err() != nil && !errors.Is(err, ErrEvidenceStopped) {
			err = fmt.Errorf("%w: %w", ErrEvidenceStopped, err)
		}
	}
	if s.cfg.Observe != nil {
		s.cfg.Observe(EvidenceReport{Found: found, Err: err})
	}
	if len(found) == 0 {
		return v
	}
	// A new slice: the inner engine's may be shared (the rule's are).
	evs := make([]string, 0, len(v.Evidence)+len(found))
	evs = append(evs, v.Evidence...)
	for _, f := range found {
		evs = append(evs, f.String())
	}
	v.Evidence = evs
	if t, ok := evidence.Typed(found); ok {
		v.Proxy = true
		v.Type = t.Type
		v.Port = uint32(t.Port)
		v.Risk = max(v.Risk, s.cfg.Risk)
	}
	return v
}
