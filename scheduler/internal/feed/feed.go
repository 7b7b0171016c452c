// Package feed is the leader's verdict feed: a bounded ring of the most
// recent verdicts, each with a revision, that any number of followers read
// from a revision of their choice. A follower that falls behind the ring
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
	f.mu.Lock()
	for _, v := range vs {
		seq := f.next
		f.next++
		f.ring[seq%uint64(len(f.ring))] = &styxv1.FeedEvent{Revision: f.term<<32 | seq, Verdict: v}
	}
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
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
	for {
		evs, next, changed, err := f.Read(rev, 512)
		if err != nil {
			return err
		}
		rev = next
		if len(evs) > 0 {
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
