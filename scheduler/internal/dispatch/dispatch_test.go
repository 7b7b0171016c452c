package dispatch

import "testing"

func TestPick(t *testing.T) {
	tests := []struct {
		name string
		cs   []Candidate
		want int
	}{
		{"none", nil, -1},
		{"no credits", []Candidate{{ID: "a", Capacity: 4}, {ID: "b", Capacity: 2}}, -1},
		{"only one has credit", []Candidate{{ID: "a", Capacity: 4}, {ID: "b", Capacity: 2, Credits: 1}}, 1},
		{"larger free share wins", []Candidate{{ID: "a", Capacity: 16, Credits: 4}, {ID: "b", Capacity: 4, Credits: 2}}, 1},
		{"tie goes to first", []Candidate{{ID: "a", Capacity: 4, Credits: 2}, {ID: "b", Capacity: 8, Credits: 4}}, 0},
		{"tie goes to the less served for its size", []Candidate{{ID: "a", Capacity: 4, Credits: 4, Done: 10}, {ID: "b", Capacity: 8, Credits: 8, Done: 12}}, 1},
		{"tie counts batches in flight", []Candidate{{ID: "a", Capacity: 4, Credits: 2, InFlight: 2, Done: 1}, {ID: "b", Capacity: 4, Credits: 2, InFlight: 2}}, 1},
		{"zero capacity treated as one", []Candidate{{ID: "a", Credits: 1}, {ID: "b", Capacity: 8, Credits: 4}}, 0},
		// a (capacity 0 counted as 1) and b are both fully free, so the tie
		// goes to b, the less served; were the zero capacity kept, a's share
		// would compare as infinite and a would win.
		{"zero capacity ties as a share of one", []Candidate{{ID: "a", Credits: 1, Done: 3}, {ID: "b", Capacity: 4, Credits: 4}}, 1},
		{"negative capacity ties as a share of one", []Candidate{{ID: "a", Capacity: -2, Credits: 1, Done: 3}, {ID: "b", Capacity: 4, Credits: 4}}, 1},
		{"negative credits are no credit", []Candidate{{ID: "a", Capacity: 4, Credits: -1}, {ID: "b", Capacity: 4, Credits: 1}}, 1},
		// served = Done + InFlight: a has 1 (in flight), b has 2 (done).
		{"served adds batches in flight to those done", []Candidate{{ID: "a", Capacity: 4, Credits: 2, InFlight: 1}, {ID: "b", Capacity: 4, Credits: 2, Done: 2}}, 0},
		{"negative in flight counts as none", []Candidate{{ID: "a", Capacity: 4, Credits: 2, InFlight: -5, Done: 2}, {ID: "b", Capacity: 4, Credits: 2, Done: 3}}, 0},
		{"served compared per unit of capacity", []Candidate{{ID: "a", Capacity: 2, Credits: 2, Done: 3}, {ID: "b", Capacity: 8, Credits: 8, Done: 10}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Pick(tt.cs); got != tt.want {
				t.Fatalf("Pick = %d, want %d", got, tt.want)
			}
		})
	}
}

// A simulation: two workers, one with 4x the cores (and credits), equal
// speed per core. Over many rounds the big one receives about 4x the work.
func TestPickProportional(t *testing.T) {
	cs := []Candidate{{ID: "small", Capacity: 2, Credits: 2}, {ID: "big", Capacity: 8, Credits: 8}}
	got := make([]int, 2)
	type job struct{ w, left int }
	var running []job
	// An idle fleet alternates between equal workers.
	idle := []Candidate{{ID: "x", Capacity: 4, Credits: 4}, {ID: "y", Capacity: 4, Credits: 4}}
	for k := range 4 {
		i := Pick(idle)
		if i != k%2 {
			t.Fatalf("idle pick %d = %d, want %d", k, i, k%2)
		}
		idle[i].Done++
	}
	for round := 0; round < 10000; round++ {
		for {
			i := Pick(cs)
			if i < 0 {
				break
			}
			cs[i].Credits--
			got[i]++
			running = append(running, job{w: i, left: 3})
		}
		next := running[:0]
		for _, j := range running {
			j.left--
			if j.left == 0 {
				cs[j.w].Credits++
				continue
			}
			next = append(next, j)
		}
		running = next
	}
	ratio := float64(got[1]) / float64(got[0])
	if ratio < 3.8 || ratio > 4.2 {
		t.Fatalf("big/small = %.2f (%v), want about 4", ratio, got)
	}
}

func TestOnFailure(t *testing.T) {
	tests := []struct {
		n        int
		failures uint32
		max      uint32
		want     Retry
	}{
		{1024, 1, 3, Requeue},
		{1024, 3, 3, Split},
		{2, 3, 3, Split},
		{1, 3, 3, GiveUp},
		{1, 2, 3, Requeue},
	}
	for _, tt := range tests {
		if got := OnFailure(tt.n, tt.failures, tt.max); got != tt.want {
			t.Errorf("OnFailure(%d, %d, %d) = %v, want %v", tt.n, tt.failures, tt.max, got, tt.want)
		}
	}
}

func TestHalves(t *testing.T) {
	for _, tt := range []struct{ n, want int }{{2, 1}, {3, 1}, {8, 4}, {1024, 512}, {1025, 512}} {
		if got := Halves(tt.n); got != tt.want {
			t.Errorf("Halves(%d) = %d, want %d", tt.n, got, tt.want)
		}
	}
}
