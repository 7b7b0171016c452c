package uplink

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/styx-inference/styx/pkg/columns"
	"github.com/styx-inference/styx/pkg/logging"
)

// Outbox persists the pending table (store.Store's sighting outbox), so
// that the sightings a node accepted survive a restart.
type Outbox interface {
	// SaveSightings adds and removes sightings in one transaction.
	SaveSightings(add []columns.Sighting, remove []uint64) error
	// PendingSightings returns what the outbox holds.
	PendingSightings() ([]columns.Sighting, error)
}

// OutboxStats are the outbox's counters since start (zero without
// Config.Outbox).
type OutboxStats struct {
	// Restored counts the sightings loaded from the outbox at start.
	Restored uint64
	// Unsaved is how many accepted sightings wait for the next group
	// commit (neither persisted nor sent yet).
	Unsaved int
	// Commits counts group commits; Errors those that failed (their
	// sightings were sent all the same, unpersisted).
	Commits, Errors uint64
}

// OutboxStats returns the outbox's counters.
func (u *Uplink) OutboxStats() OutboxStats {
	u.mu.Lock()
	unsaved := len(u.unsaved)
	u.mu.Unlock()
	return OutboxStats{
		Restored: u.restored.Load(),
		Unsaved:  unsaved,
		Commits:  u.commits.Load(),
		Errors:   u.commitErrors.Load(),
	}
}

// restore loads the outbox into the pending table: each sighting waits
// for the first Welcome (restartQueue), counted as re-sent, and its
// address enters the dedup window at the time it was seen. A table over
// MaxPending (a smaller --max-pending than before) refuses new sightings
// until it has drained below.
func (u *Uplink) restore() error {
	sgs, err := u.cfg.Outbox.PendingSightings()
	if err != nil {
		return err
	}
	if len(sgs) == 0 {
		return nil
	}
	u.mu.Lock()
	for _, sg := range sgs {
		u.pending[sg.ID] = pendingEntry{addr: sg.Addr, seen: sg.Seen, sends: 1}
	}
	if u.dedup != nil {
		bySeen := slices.Clone(sgs)
		slices.SortFunc(bySeen, func(a, b columns.Sighting) int { return cmp.Compare(a.Seen, b.Seen) })
		for _, sg := range bySeen {
			u.dedup.Put(sg.Seen, sg.Addr, struct{}{})
		}
	}
	n := len(u.pending)
	u.mu.Unlock()
	u.npending.Add(int64(len(sgs)))
	u.restored.Add(uint64(len(sgs)))
	ev := u.log.Info()
	if n > u.cfg.MaxPending {
		ev = u.log.Warn().Int("max_pending", u.cfg.MaxPending)
	}
	ev.Int(logging.Count, len(sgs)).Msg("pending sightings restored from the outbox")
	return nil
}

// runCommits runs group commits until ctx ends: every BatchInterval, and
// at once when a full batch waits (Offer's kick).
func (u *Uplink) runCommits(ctx context.Context) {
	tick := time.NewTicker(u.cfg.BatchInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-u.commitKick:
		}
		u.commit()
	}
}

// commit is one group commit: the sightings accepted since the last one
// are written to the outbox, and the ones resolved since are deleted, in
// one transaction. Only then are the new sightings queued to be sent (and
// the sender woken), so that the leader never holds a sighting the node
// could lose. A failed commit does not hold sightings back: they are sent
// unpersisted, and the deletions are tried again with the next commit.
func (u *Uplink) commit() {
	if u.cfg.Outbox == nil {
		return
	}
	u.commitMu.Lock()
	defer u.commitMu.Unlock()
	u.mu.Lock()
	ids, removed := u.unsaved, u.resolvedIDs
	u.unsaved, u.resolvedIDs = u.spareIDs[:0], u.spareRemoved[:0]
	add := make([]columns.Sighting, 0, len(ids))
	for _, id := range ids {
		if e, ok := u.pending[id]; ok {
			add = append(add, columns.Sighting{ID: id, Addr: e.addr, Seen: e.seen})
		}
	}
	u.mu.Unlock()
	if len(add) == 0 && len(removed) == 0 {
		u.mu.Lock()
		u.spareIDs, u.spareRemoved = ids, removed
		u.mu.Unlock()
		return
	}

	start := time.Now()
	err := u.cfg.Outbox.SaveSightings(add, removed)
	u.commitSeconds.Observe(time.Since(start).Seconds())
	u.commits.Add(1)
	if err != nil {
		u.commitErrors.Add(1)
	}

	u.mu.Lock()
	for _, sg := range add {
		e, ok := u.pending[sg.ID]
		if !ok {
			continue
		}
		e.unsaved = false
		u.pending[sg.ID] = e
		u.queue = append(u.queue, sg.ID)
	}
	if err != nil && len(u.resolvedIDs)+len(removed) <= u.cfg.MaxPending {
		// Bounded: past it, a restart re-sends a few resolved sightings,
		// whose outcomes are then counted as duplicates.
		u.resolvedIDs = append(u.resolvedIDs, removed...)
	}
	u.spareIDs, u.spareRemoved = ids[:0], removed[:0]
	failing := u.commitFailing
	u.commitFailing = err != nil
	u.mu.Unlock()

	switch {
	case err != nil && !failing:
		u.log.Error().Err(err).Int(logging.Count, len(add)).Msg("sighting outbox commit failed; sightings are sent unpersisted until it works again")
	case err == nil && failing:
		u.log.Info().Msg("sighting outbox commits work again")
	}
	if len(add) > 0 {
		select {
		case u.committed <- struct{}{}:
		default:
		}
	}
}

// outboxCollectors are the outbox's metrics.
func (u *Uplink) outboxCollectors() []prometheus.Collector {
	counter := func(name, help string, f func(OutboxStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "styx_node", Name: name, Help: help},
			func() float64 { return float64(f(u.OutboxStats())) })
	}
	return []prometheus.Collector{
		counter("sightings_restored_total", "Pending sightings loaded from the sighting outbox at start (and sent again).", func(s OutboxStats) uint64 { return s.Restored }),
		counter("sighting_outbox_commits_total", "Group commits of the sighting outbox.", func(s OutboxStats) uint64 { return s.Commits }),
		counter("sighting_outbox_errors_total", "Group commits of the sighting outbox that failed (their sightings were sent unpersisted).", func(s OutboxStats) uint64 { return s.Errors }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "styx_node", Name: "sightings_unsaved",
			Help: "Accepted sightings waiting for the next group commit of the sighting outbox (neither persisted nor sent yet).",
		}, func() float64 { return float64(u.OutboxStats().Unsaved) }),
		u.commitSeconds,
	}
}

// newCommitSeconds is the histogram of group commit durations: with the
// batch interval, they bound what a kill -9 loses.
func newCommitSeconds() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "styx_node", Name: "sighting_outbox_commit_seconds",
		Help:    "Duration of the sighting outbox's group commits.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
	})
}
