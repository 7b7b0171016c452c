// Package feed is the leader's feed: a bounded ring of the most recent
// verdicts and attack reports, each event with a revision, that any number
// of followers read from a revision of their choice. A follower that falls behind the ring
// gets ErrGap and must catch up another way (a snapshot), then follow on.
//
// Revisions are (term << 32) | sequence: increasing within a term, and a
// newer term always sorts after an older one. A revision from another term
// is a gap too: sequences do not carry over between leaders.
package feed

import (
	"context"
	"errors"
	"sync"

	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// ErrGap means the requested revision is no longer (or never was) in the ring.
var ErrGap = errors.New("feed: revision not in the ring; copy a snapshot and follow from its revision")

// Feed is safe for concurrent use.
type Feed struct {
	term uint64

	mu      sync.Mutex
	ring    []*styxv1.FeedEvent
	next    uint64 // sequence of the next event (first is 1)
	changed chan struct{}
}

// New returns an empty feed for a term, keeping up to size events.
func New(term int64, size int) *Feed {
	if size < 1 {
		size = 1
	}
	return &Feed{term: uint64(term), ring: make([]*styxv1.FeedEvent, size), next: 1, changed: make(chan struct{})}
}

// Revision returns the revision of the newest event (or the term's base when empty).
func (f *Feed) Revision() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.term<<32 | (f.next - 1)
}

// Append adds verdicts and wakes followers.
func (f *Feed) Append(vs ...*styxv1.Verdict) {
	if len(vs) == 0 {
		return
	}
	// One allocation for the call's events: the ring drops them in order,
	// so the slab lives no longer than its newest event.
	evs := make([]styxv1.FeedEvent, len(vs))
	f.mu.Lock()
	for i, v := range vs {
		evs[i].Verdict = v
		f.putLocked(&evs[i])
	}
	f.wakeLocked()
	f.mu.Unlock()
}

// AppendAttacks adds attack reports and wakes followers.
func (f *Feed) AppendAttacks(rs ...*styxv1.AttackReport) {
	if len(rs) == 0 {
		return
	}
	f.mu.Lock()
	for _, r := range rs {
		f.putLocked(&styxv1.FeedEvent{Attack: r})
	}
	f.wakeLocked()
	f.mu.Unlock()
}

func (f *Feed) putLocked(ev *styxv1.FeedEvent) {
	seq := f.next
	f.next++
	ev.Revision = f.term<<32 | seq
	f.ring[seq%uint64(len(f.ring))] = ev
}

func (f *Feed) wakeLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// Read returns the events after rev (at most max) and a channel that is
// closed when more arrive. rev 0 means "from now".
func (f *Feed) Read(rev uint64, max int) ([]*styxv1.FeedEvent, uint64, <-chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rev == 0 {
		rev = f.term<<32 | (f.next - 1)
	}
	if rev>>32 != f.term {
		return nil, rev, nil, ErrGap
	}
	seq := rev & 0xffffffff
	last := f.next - 1
	if seq > last {
		return nil, rev, nil, ErrGap // from the future: not ours
	}
	oldest := uint64(1)
	if last >= uint64(len(f.ring)) {
		oldest = last - uint64(len(f.ring)) + 1
	}
	if seq+1 < oldest {
		return nil, rev, nil, ErrGap
	}
	var out []*styxv1.FeedEvent
	for s := seq + 1; s <= last && len(out) < max; s++ {
		out = append(out, f.ring[s%uint64(len(f.ring))])
	}
	if len(out) > 0 {
		rev = out[len(out)-1].Revision
	}
	return out, rev, f.changed, nil
}

// Follow calls send for every event after rev until ctx ends or send fails.
func (f *Feed) Follow(ctx context.Context, rev uint64, send func([]*styxv1.FeedEvent) error) error {
	return f.FollowFiltered(ctx, rev, nil, send)
}

// FollowFiltered is Follow for the events keep accepts (all when keep is
// nil). Once an eighth of the ring has been skipped since the last event
// sent, a progress event (only the revision) is sent, so that the
// follower's revision keeps up with the ring and a resume does not fall out
// of it.
func (f *Feed) FollowFiltered(ctx context.Context, rev uint64, keep func(*styxv1.FeedEvent) bool, send func([]*styxv1.FeedEvent) error) error {
	var out []*styxv1.FeedEvent
	progressEvery := max(1, len(f.ring)/8) // len(f.ring) never changes
	skipped := 0
	for {
		evs, next, changed, err := f.Read(rev, 512)
		if err != nil {
			return err
		}
		rev = next
		if len(evs) > 0 {
			if keep != nil {
				out = out[:0]
				for _, ev := range evs {
					if keep(ev) {
						out, skipped = append(out, ev), 0
					} else {
						skipped++
					}
				}
				if skipped >= progressEvery {
					out, skipped = append(out, &styxv1.FeedEvent{Revision: next}), 0
				}
				if len(out) == 0 {
					continue
				}
				evs = out
			}
			if err := send(evs); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}
