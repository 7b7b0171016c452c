package evidence

import (
	"testing"
	"time"
)

func TestCommanderConfigValidate(t *testing.T) {
	for _, cfg := range []CommanderConfig{
		{Min: 0, Max: 1},
		{Min: 2, Max: 1},
		{Min: 1, Max: 1, Interval: -1},
		{Min: 1, Max: 1, Cooldown: -1},
		{Min: 1, Max: 1, IdleFor: -1},
	} {
		if _, err := NewCommander(cfg); err == nil {
			t.Errorf("NewCommander(%+v) accepted", cfg)
		}
	}
}

// step is one observation: advance the clock by after, observe sample,
// expect the limit.
type step struct {
	after   time.Duration
	sample  Sample
	limit   int
	changed bool
}

func TestCommander(t *testing.T) {
	cfg := CommanderConfig{Min: 2, Max: 16, Interval: time.Second, Cooldown: 2 * time.Second, IdleFor: 3 * time.Second}
	tests := []struct {
		name  string
		cfg   CommanderConfig
		steps []step
	}{{
		name: "starts at min and stays without backlog",
		cfg:  cfg,
		steps: []step{
			{time.Second, Sample{}, 2, false},
			{time.Second, Sample{InFlight: 2}, 2, false},
			{10 * time.Second, Sample{}, 2, false},
		},
	}, {
		name: "short backlog adds slots, long backlog doubles, capped at max",
		cfg:  cfg,
		steps: []step{
			{time.Second, Sample{Backlog: 1, InFlight: 2}, 3, true},
			{2 * time.Second, Sample{Backlog: 100, InFlight: 3}, 6, true},
			{2 * time.Second, Sample{Backlog: 100, InFlight: 6}, 12, true},
			{2 * time.Second, Sample{Backlog: 100, InFlight: 12}, 16, true},
			{2 * time.Second, Sample{Backlog: 100, InFlight: 16}, 16, false},
		},
	}, {
		name: "cooldown spaces the raises",
		cfg:  cfg,
		steps: []step{
			{time.Second, Sample{Backlog: 5, InFlight: 2}, 4, true},
			{time.Second, Sample{Backlog: 5, InFlight: 4}, 4, false},
			{time.Second, Sample{Backlog: 5, InFlight: 4}, 8, true},
		},
	}, {
		name: "spare slots lower the limit after IdleFor, step by step, down to min",
		cfg:  CommanderConfig{Min: 2, Max: 16, Interval: time.Second, Cooldown: time.Second, IdleFor: 3 * time.Second},
		steps: []step{
			{time.Second, Sample{Backlog: 50, InFlight: 2}, 4, true},
			{time.Second, Sample{Backlog: 50, InFlight: 4}, 8, true},
			{time.Second, Sample{Backlog: 50, InFlight: 8}, 16, true},
			{time.Second, Sample{InFlight: 16}, 16, false}, // busy, no backlog: right size
			{time.Second, Sample{InFlight: 0}, 16, false},  // spare from now
			{time.Second, Sample{InFlight: 0}, 16, false},
			{time.Second, Sample{InFlight: 0}, 16, false},
			{time.Second, Sample{InFlight: 0}, 8, true}, // 3 s spare: 16 - 16/2
			{time.Second, Sample{InFlight: 0}, 8, false},
			{2 * time.Second, Sample{InFlight: 0}, 4, true},
			{3 * time.Second, Sample{InFlight: 0}, 2, true},
			{3 * time.Second, Sample{InFlight: 0}, 2, false}, // min
		},
	}, {
		name: "lowering keeps what is in use plus headroom",
		cfg:  CommanderConfig{Min: 1, Max: 16, Interval: time.Second, Cooldown: time.Second, IdleFor: time.Second},
		steps: []step{
			{time.Second, Sample{Backlog: 50, InFlight: 1}, 2, true},
			{time.Second, Sample{Backlog: 50, InFlight: 2}, 4, true},
			{time.Second, Sample{Backlog: 50, InFlight: 4}, 8, true},
			{time.Second, Sample{InFlight: 6}, 8, false}, // 2 of 8 free: spare from now
			{time.Second, Sample{InFlight: 6}, 7, true},  // lower by half the free slots
			{time.Second, Sample{InFlight: 6}, 7, false}, // 1 of 7 free: not a quarter, right size
			{5 * time.Second, Sample{InFlight: 6}, 7, false},
		},
	}, {
		name: "a backlog interrupts a spare period",
		cfg:  CommanderConfig{Min: 1, Max: 8, Interval: time.Second, Cooldown: time.Second, IdleFor: 3 * time.Second},
		steps: []step{
			{time.Second, Sample{Backlog: 10, InFlight: 1}, 2, true},
			{time.Second, Sample{Backlog: 10, InFlight: 2}, 4, true},
			{time.Second, Sample{InFlight: 0}, 4, false}, // spare from now
			{2 * time.Second, Sample{InFlight: 0}, 4, false},
			{time.Second, Sample{Backlog: 1, InFlight: 4}, 5, true}, // backlog: spare period ends
			{time.Second, Sample{InFlight: 0}, 5, false},            // spare again from now
			{2 * time.Second, Sample{InFlight: 0}, 5, false},
			{time.Second, Sample{InFlight: 0}, 3, true},
		},
	}, {
		name: "min equals max never moves",
		cfg:  CommanderConfig{Min: 3, Max: 3},
		steps: []step{
			{time.Second, Sample{Backlog: 100, InFlight: 3}, 3, false},
			{time.Hour, Sample{}, 3, false},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewCommander(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.Limit() != tc.cfg.Min {
				t.Fatalf("initial limit %d, want min %d", c.Limit(), tc.cfg.Min)
			}
			now := time.Unix(1_000_000, 0)
			for i, s := range tc.steps {
				now = now.Add(s.after)
				limit, changed := c.Observe(now, s.sample)
				if limit != s.limit || changed != s.changed {
					t.Fatalf("step %d (%+v): limit %d changed %v, want %d %v", i, s.sample, limit, changed, s.limit, s.changed)
				}
				if c.Limit() != limit {
					t.Fatalf("step %d: Limit() %d, Observe returned %d", i, c.Limit(), limit)
				}
			}
		})
	}
}
