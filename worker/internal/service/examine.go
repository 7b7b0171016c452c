package service

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// job is an accepted batch being examined.
type job struct {
	sess   *session
	batch  *styxv1.Batch
	engine raven.Engine
	model  string
	// verdicts[i] is written by exactly one chunk; the goroutine finishing
	// the last chunk reads them all (ordered by the remaining counter).
	verdicts  []verdict.Verdict
	remaining atomic.Int32 // chunks not yet examined
	busy      atomic.Int64 // nanoseconds
}

// chunk is the addresses [lo, hi) of a job: the unit of work of the pool.
type chunk struct {
	job    *job
	lo, hi int
}

// examineLoop is one pool goroutine.
func (s *Service) examineLoop(ctx context.Context) {
	for {
		select {
		case c := <-s.work:
			s.examine(c)
		case <-ctx.Done():
			return
		}
	}
}

func (s *Service) examine(c chunk) {
	j := c.job
	if j.sess.ctx.Err() != nil {
		return // the session is over: nobody would read the result
	}
	start := time.Now()
	if c.lo == 0 && s.cfg.BatchDelay > 0 {
		t := time.NewTimer(s.cfg.BatchDelay)
		select {
		case <-t.C:
		case <-j.sess.ctx.Done():
			t.Stop()
			return
		}
	}
	inferred := time.Now()
	for i := c.lo; i < c.hi; i++ {
		addr := columns.Addr(j.batch.Addresses, i) // length checked on admission
		v, err := examineOne(j.engine, addr)
		if err != nil {
			v = verdict.Verdict{Error: err.Error()}
		}
		if v.ModelVersion == "" { // the engine's own (see raven.Engine)
			v.ModelVersion = j.model
		}
		v.Inferred = inferred
		j.verdicts[i] = v
	}
	j.busy.Add(int64(time.Since(start)))
	if j.remaining.Add(-1) == 0 {
		s.finish(j)
	}
}

// examineOne runs the engine on one address; a panic becomes that
// address's error verdict instead of taking the worker down.
func examineOne(e raven.Engine, addr netip.Addr) (v verdict.Verdict, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engine panic on %s: %v", addr, r)
		}
	}()
	return e.Examine(addr), nil
}
