package evidence

import (
	"context"
	"sync"
)

// gate is a counting semaphore whose limit can change while it is in use.
// Waiters are served in arrival order. Lowering the limit never interrupts
// a holder: the slots above the new limit drain as their holders release
// them. The number of waiters is bounded by the Runner (MaxWaiting).
type gate struct {
	mu      sync.Mutex // a leaf
	limit   int
	inUse   int
	waiters []chan struct{} // FIFO; a waiter's channel is closed when it is given a slot
}

func newGate(limit int) *gate { return &gate{limit: limit} }

// acquire takes a slot, waiting until one is free or ctx ends.
func (g *gate) acquire(ctx context.Context) error {
	g.mu.Lock()
	if g.inUse < g.limit && len(g.waiters) == 0 {
		g.inUse++
		g.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		g.mu.Unlock()
		return err
	}
	ch := make(chan struct{})
	g.waiters = append(g.waiters, ch)
	g.mu.Unlock()

	select {
	case <-ch:
		return nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	for i, w := range g.waiters {
		if w == ch {
			g.waiters = append(g.waiters[:i], g.waiters[i+1:]...)
			g.mu.Unlock()
			return ctx.Err()
		}
	}
	// Given a slot while giving up: hand it on.
	g.inUse--
	g.grantLocked()
	g.mu.Unlock()
	return ctx.Err()
}

// tryAcquire takes a slot if one is free and nobody waits, without
// waiting.
func (g *gate) tryAcquire() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inUse < g.limit && len(g.waiters) == 0 {
		g.inUse++
		return true
	}
	return false
}

// release gives a slot back.
func (g *gate) release() {
	g.mu.Lock()
	g.inUse--
	g.grantLocked()
	g.mu.Unlock()
}

// setLimit changes the limit, waking waiters if it rose.
func (g *gate) setLimit(n int) {
	g.mu.Lock()
	g.limit = n
	g.grantLocked()
	g.mu.Unlock()
}

func (g *gate) grantLocked() {
	for g.inUse < g.limit && len(g.waiters) > 0 {
		close(g.waiters[0])
		g.waiters[0] = nil
		g.waiters = g.waiters[1:]
		g.inUse++
	}
}

type gateStats struct{ limit, inUse, waiting int }

func (g *gate) stats() gateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gateStats{g.limit, g.inUse, len(g.waiters)}
}
