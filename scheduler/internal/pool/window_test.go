package pool

import (
	"fmt"
	"testing"
)

// TestRecentEvictions checks which verdicts the recent window drops, by
// which limit (age first, then count), how each is counted, and that a
// sighting of an address whose verdict was dropped is examined again.
func TestRecentEvictions(t *testing.T) {
	const window = 600 * sec
	// event: at t0+at, settle address i with a verdict, or (i < 0) sweep.
	type event struct {
		at int64
		i  int
	}
	sweepAt := func(at int64) event { return event{at, -1} }
	tests := []struct {
		name       string
		maxRecent  int
		events     []event
		age, count uint64
		kept       []int // answered from the window at the last event's time
		gone       []int // examined again
	}{
		{"within both limits", 3, []event{{0, 1}, {sec, 2}, {window, 3}}, 0, 0, []int{1, 2, 3}, nil},
		{"count: the oldest go", 3, []event{{0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}}, 0, 2, []int{3, 4, 5}, []int{1, 2}},
		{"count: exactly max recent held", 2, []event{{0, 1}, {0, 2}}, 0, 0, []int{1, 2}, nil},
		{"age: a sweep one nano past the window", 3, []event{{0, 1}, {sec, 2}, sweepAt(window + 1)}, 1, 0, []int{2}, []int{1}},
		{"age: a sweep at exactly the window drops nothing", 3, []event{{0, 1}, sweepAt(window)}, 0, 0, []int{1}, nil},
		{"age: everything after the window", 3, []event{{0, 1}, {sec, 2}, {2 * sec, 3}, sweepAt(window + 2*sec + 1)}, 3, 0, nil, []int{1, 2, 3}},
		{"age before count: the expired make room", 2, []event{{0, 1}, {sec, 2}, {window + 1, 3}}, 1, 0, []int{2, 3}, []int{1}},
		{"age, then count", 2, []event{{0, 1}, {sec, 2}, {window + 1, 3}, {window + 1, 4}}, 1, 1, []int{3, 4}, []int{1, 2}},
		{"age on the put, then count on the next", 1, []event{{0, 1}, {window + 1, 2}, {window + 1, 3}}, 1, 1, []int{3}, []int{1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg()
			c.MaxRecent, c.DedupWindow = tt.maxRecent, window
			p := mustNew(t, c)
			now := t0
			for _, ev := range tt.events {
				now = t0 + ev.at
				if ev.i < 0 {
					p.Sweep(now)
				} else {
					settle(t, p, now, addr(ev.i), fmt.Sprint(ev.i))
				}
			}
			st := p.Stats()
			if st.RecentEvictedAge != tt.age || st.RecentEvictedCount != tt.count {
				t.Fatalf("evicted by age %d, by count %d; want %d, %d", st.RecentEvictedAge, st.RecentEvictedCount, tt.age, tt.count)
			}
			if st.Recent != len(tt.kept) {
				t.Fatalf("recent %d, want %d", st.Recent, len(tt.kept))
			}
			for _, i := range tt.kept {
				d, done, _ := p.Offer(now, Waiter{"x", uint64(i)}, addr(i), now)
				if !done || d.Kind != KindVerdict || d.Verdict != fmt.Sprint(i) {
					t.Errorf("address %d: %+v, %v; want its verdict from the window", i, d, done)
				}
			}
			unique := st.Unique
			for _, i := range tt.gone {
				if d, done, _ := p.Offer(now, Waiter{"x", uint64(i)}, addr(i), now); done {
					t.Errorf("address %d answered at once (%+v); want it examined again", i, d)
				}
			}
			if got := p.Stats(); got.Unique != unique+uint64(len(tt.gone)) || got.Pending != len(tt.gone) {
				t.Fatalf("unique %d, pending %d after offering the evicted: want %d, %d", got.Unique, got.Pending, unique+uint64(len(tt.gone)), len(tt.gone))
			}
		})
	}
}

// An address examined again after its verdict was evicted is remembered
// with its new verdict.
func TestRecentEvictedExaminedAgain(t *testing.T) {
	c := cfg()
	c.MaxRecent = 1
	p := mustNew(t, c)
	settle(t, p, t0, addr(1), "old")
	settle(t, p, t0, addr(2), "other") // evicts 1
	settle(t, p, t0, addr(1), "new")   // evicts 2
	d, done, _ := p.Offer(t0, Waiter{"x", 1}, addr(1), t0)
	if !done || d.Verdict != "new" {
		t.Fatalf("%+v, %v; want the new verdict", d, done)
	}
	if st := p.Stats(); st.RecentEvictedCount != 2 || st.Examined != 3 {
		t.Fatalf("stats %+v", st)
	}
}
