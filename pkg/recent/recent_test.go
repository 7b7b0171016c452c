package recent

import (
	"math"
	"slices"
	"testing"
	"time"
)

func TestLimitsValidate(t *testing.T) {
	over := int64(math.MaxInt32) + 1 // not a constant: it must compile where int is 32 bits
	for _, tc := range []struct {
		l  Limits
		ok bool
	}{
		{Limits{MaxLen: 1}, true},
		{Limits{MaxLen: 0}, false},
		{Limits{MaxLen: -1}, false},
		{Limits{MaxLen: math.MaxInt32}, true},
		{Limits{MaxLen: int(over)}, false},
		{Limits{MaxLen: 1, MaxAge: 1}, true},
		{Limits{MaxLen: 1, MaxAge: 0}, true},
		{Limits{MaxLen: 1, MaxAge: -1}, false},
	} {
		err := tc.l.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%+v.Validate() = %v, want ok %v", tc.l, err, tc.ok)
		}
		s, err := New[string, int](tc.l)
		if (err == nil) != tc.ok || (s != nil) != tc.ok {
			t.Errorf("New(%+v) = %v, %v, want ok %v", tc.l, s, err, tc.ok)
		}
		if s != nil && s.Limits() != tc.l {
			t.Errorf("Limits() = %+v, want %+v", s.Limits(), tc.l)
		}
	}
}

// step is one call on a Set and what it must answer; after every step the
// set must hold keys, oldest first, and have counted ev.
type step struct {
	op   string // "put", "get", "sweep"
	now  int64
	key  string
	val  int
	want int  // get: the value; sweep: the count dropped
	ok   bool // get: found
	keys []string
	ev   Evictions
}

func put(now int64, k string, v int, keys []string, ev Evictions) step {
	return step{op: "put", now: now, key: k, val: v, keys: keys, ev: ev}
}

func get(now int64, k string, want int, ok bool, keys []string, ev Evictions) step {
	return step{op: "get", now: now, key: k, want: want, ok: ok, keys: keys, ev: ev}
}

func sweep(now int64, dropped int, keys []string, ev Evictions) step {
	return step{op: "sweep", now: now, want: dropped, keys: keys, ev: ev}
}

func keys(k ...string) []string { return k }

func TestSet(t *testing.T) {
	var none Evictions
	for _, tc := range []struct {
		name  string
		lim   Limits
		steps []step
	}{
		{"exactly MaxLen held, one more evicts the oldest", Limits{MaxLen: 3}, []step{
			put(0, "a", 1, keys("a"), none),
			put(0, "b", 2, keys("a", "b"), none),
			put(0, "c", 3, keys("a", "b", "c"), none),
			get(0, "a", 1, true, keys("a", "b", "c"), none),
			put(0, "d", 4, keys("b", "c", "d"), Evictions{ByCount: 1}),
			get(0, "a", 0, false, keys("b", "c", "d"), Evictions{ByCount: 1}),
			put(0, "e", 5, keys("c", "d", "e"), Evictions{ByCount: 2}),
		}},
		{"MaxLen 1", Limits{MaxLen: 1}, []step{
			put(0, "a", 1, keys("a"), none),
			put(0, "a", 2, keys("a"), none),
			get(0, "a", 2, true, keys("a"), none),
			put(0, "b", 3, keys("b"), Evictions{ByCount: 1}),
		}},
		{"put again takes the value and moves to the newest", Limits{MaxLen: 3}, []step{
			put(0, "a", 1, keys("a"), none),
			put(0, "b", 2, keys("a", "b"), none),
			put(0, "c", 3, keys("a", "b", "c"), none),
			put(0, "b", 20, keys("a", "c", "b"), none), // from the middle
			put(0, "a", 10, keys("c", "b", "a"), none), // from the oldest end
			put(0, "a", 11, keys("c", "b", "a"), none), // already the newest
			get(0, "a", 11, true, keys("c", "b", "a"), none),
			get(0, "b", 20, true, keys("c", "b", "a"), none),
			put(0, "d", 4, keys("b", "a", "d"), Evictions{ByCount: 1}),
			put(0, "e", 5, keys("a", "d", "e"), Evictions{ByCount: 2}),
		}},
		{"exactly MaxAge held, a nanosecond more gone", Limits{MaxLen: 10, MaxAge: 10}, []step{
			put(100, "a", 1, keys("a"), none),
			get(110, "a", 1, true, keys("a"), none),
			get(111, "a", 0, false, keys("a"), none), // Get drops nothing
			sweep(110, 0, keys("a"), none),
			sweep(111, 1, keys(), Evictions{ByAge: 1}),
			sweep(200, 0, keys(), Evictions{ByAge: 1}),
		}},
		{"sweep stops at the first key young enough", Limits{MaxLen: 10, MaxAge: 10}, []step{
			put(0, "a", 1, keys("a"), none),
			put(5, "b", 2, keys("a", "b"), none),
			put(9, "c", 3, keys("a", "b", "c"), none),
			sweep(15, 1, keys("b", "c"), Evictions{ByAge: 1}), // b is exactly MaxAge old
			sweep(16, 1, keys("c"), Evictions{ByAge: 2}),
			get(16, "c", 3, true, keys("c"), Evictions{ByAge: 2}),
		}},
		{"put drops the expired before counting", Limits{MaxLen: 2, MaxAge: 10}, []step{
			put(0, "a", 1, keys("a"), none),
			put(5, "b", 2, keys("a", "b"), none),
			put(11, "c", 3, keys("b", "c"), Evictions{ByAge: 1}),
			put(15, "b", 4, keys("c", "b"), Evictions{ByAge: 1}),
			put(26, "d", 5, keys("d"), Evictions{ByAge: 3}), // c at 11 and b at 15 both expired
		}},
		{"put at exactly MaxAge counts the oldest out", Limits{MaxLen: 2, MaxAge: 10}, []step{
			put(0, "a", 1, keys("a"), none),
			put(5, "b", 2, keys("a", "b"), none),
			put(10, "c", 3, keys("b", "c"), Evictions{ByCount: 1}),
		}},
		{"put again makes the key young again", Limits{MaxLen: 10, MaxAge: 10}, []step{
			put(0, "a", 1, keys("a"), none),
			put(1, "b", 2, keys("a", "b"), none),
			put(8, "a", 3, keys("b", "a"), none),
			get(15, "a", 3, true, keys("b", "a"), none),
			sweep(15, 1, keys("a"), Evictions{ByAge: 1}),
			sweep(18, 0, keys("a"), Evictions{ByAge: 1}),
			sweep(19, 1, keys(), Evictions{ByAge: 2}),
		}},
		{"put again of an expired key not yet dropped", Limits{MaxLen: 10, MaxAge: 10}, []step{
			put(0, "a", 1, keys("a"), none),
			put(5, "b", 2, keys("a", "b"), none),
			get(16, "b", 0, false, keys("a", "b"), none),
			// The sweep at 16 drops both; b comes back as new.
			put(16, "b", 3, keys("b"), Evictions{ByAge: 2}),
			get(26, "b", 3, true, keys("b"), Evictions{ByAge: 2}),
		}},
		{"no MaxAge: keys never expire", Limits{MaxLen: 2}, []step{
			put(0, "a", 1, keys("a"), none),
			get(math.MaxInt64, "a", 1, true, keys("a"), none),
			sweep(math.MaxInt64, 0, keys("a"), none),
			put(math.MaxInt64, "b", 2, keys("a", "b"), none),
		}},
		{"a clock that steps back expires nothing", Limits{MaxLen: 2, MaxAge: 10}, []step{
			put(100, "a", 1, keys("a"), none),
			get(50, "a", 1, true, keys("a"), none),
			sweep(50, 0, keys("a"), none),
		}},
		{"missing key: zero value", Limits{MaxLen: 2, MaxAge: 10}, []step{
			get(0, "a", 0, false, keys(), none),
			sweep(0, 0, keys(), none),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New[string, int](tc.lim)
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range tc.steps {
				switch st.op {
				case "put":
					s.Put(st.now, st.key, st.val)
				case "get":
					v, ok := s.Get(st.now, st.key)
					if v != st.want || ok != st.ok {
						t.Fatalf("step %d: Get(%d, %q) = %d, %v, want %d, %v", i, st.now, st.key, v, ok, st.want, st.ok)
					}
				case "sweep":
					if n := s.Sweep(st.now); n != st.want {
						t.Fatalf("step %d: Sweep(%d) = %d, want %d", i, st.now, n, st.want)
					}
				}
				if got := order(t, s); !slices.Equal(got, st.keys) {
					t.Fatalf("step %d (%s %q at %d): keys %v, want %v", i, st.op, st.key, st.now, got, st.keys)
				}
				if s.Len() != len(st.keys) {
					t.Fatalf("step %d: Len() = %d, want %d", i, s.Len(), len(st.keys))
				}
				if s.Evictions() != st.ev {
					t.Fatalf("step %d: Evictions() = %+v, want %+v", i, s.Evictions(), st.ev)
				}
			}
		})
	}
}

// order returns the keys oldest first, after checking that the links agree
// both ways, with the index and with the free list.
func order[V any](t *testing.T, s *Set[string, V]) []string {
	t.Helper()
	var fwd []string
	prev := int32(none)
	for i := s.head; i != none; i = s.nodes[i].next {
		n := s.nodes[i]
		if n.prev != prev {
			t.Fatalf("node %d (%q): prev %d, want %d", i, n.key, n.prev, prev)
		}
		if j, ok := s.idx[n.key]; !ok || j != i {
			t.Fatalf("index of %q: %d, %v, want %d", n.key, j, ok, i)
		}
		fwd = append(fwd, n.key)
		prev = i
	}
	if s.tail != prev {
		t.Fatalf("tail %d, want %d", s.tail, prev)
	}
	if len(fwd) != len(s.idx) {
		t.Fatalf("%d keys linked, %d indexed", len(fwd), len(s.idx))
	}
	free := 0
	for i := s.free; i != none; i = s.nodes[i].next {
		if s.nodes[i].key != "" {
			t.Fatalf("free node %d still holds %q", i, s.nodes[i].key)
		}
		free++
	}
	if free+len(fwd) != len(s.nodes) {
		t.Fatalf("%d free + %d held != %d nodes", free, len(fwd), len(s.nodes))
	}
	return fwd
}

// Memory is bounded by MaxLen: dropped nodes are reused, and nothing
// dropped is kept reachable.
func TestNodesReused(t *testing.T) {
	s, err := New[int, *int](Limits{MaxLen: 4, MaxAge: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		v := i
		s.Put(int64(i), i%7, &v)
		if i%50 == 0 {
			s.Sweep(int64(i) + 100) // everything expires
		}
		if len(s.nodes) > 4 {
			t.Fatalf("after %d puts: %d nodes for at most 4 keys", i+1, len(s.nodes))
		}
	}
	for i := s.free; i != none; i = s.nodes[i].next {
		if s.nodes[i].val != nil {
			t.Fatalf("free node %d keeps its value", i)
		}
	}
	ev := s.Evictions()
	if ev.ByAge == 0 || ev.ByCount == 0 {
		t.Fatalf("evictions %+v: both limits should have dropped keys", ev)
	}
}

// A long run against a plain model: a slice of (key, value, time) kept in
// put order.
func TestSetAgainstModel(t *testing.T) {
	type ent struct {
		k  int
		v  int
		at int64
	}
	const maxLen, maxAge = 8, 50
	s, err := New[int, int](Limits{MaxLen: maxLen, MaxAge: maxAge})
	if err != nil {
		t.Fatal(err)
	}
	var model []ent
	var want Evictions
	expire := func(now int64) int {
		n := 0
		for len(model) > 0 && now-model[0].at > maxAge {
			model = model[1:]
			n++
		}
		want.ByAge += uint64(n)
		return n
	}
	now := int64(0)
	x := uint32(1)
	rnd := func(n uint32) uint32 { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return x % n }
	for i := range 20_000 {
		now += int64(rnd(12))
		k := int(rnd(16))
		switch rnd(4) {
		case 0:
			got := s.Sweep(now)
			if w := expire(now); got != w {
				t.Fatalf("op %d: Sweep = %d, want %d", i, got, w)
			}
		case 1:
			v, ok := s.Get(now, k)
			j := slices.IndexFunc(model, func(e ent) bool { return e.k == k })
			wok := j >= 0 && now-model[j].at <= maxAge
			if ok != wok || ok && v != model[j].v {
				t.Fatalf("op %d: Get(%d) = %d, %v; model %+v", i, k, v, ok, model)
			}
		default:
			s.Put(now, k, i)
			expire(now)
			if j := slices.IndexFunc(model, func(e ent) bool { return e.k == k }); j >= 0 {
				model = slices.Delete(model, j, j+1)
			} else if len(model) == maxLen {
				model = model[1:]
				want.ByCount++
			}
			model = append(model, ent{k, i, now})
		}
		if s.Len() != len(model) || s.Evictions() != want {
			t.Fatalf("op %d: len %d, evictions %+v; model len %d, evictions %+v", i, s.Len(), s.Evictions(), len(model), want)
		}
	}
}

func BenchmarkPutGet(b *testing.B) {
	s, err := New[int, struct{}](Limits{MaxLen: 1 << 16, MaxAge: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	for i := range b.N {
		now := int64(i) * int64(time.Microsecond)
		k := i & (1<<18 - 1)
		if _, ok := s.Get(now, k); !ok {
			s.Put(now, k, struct{}{})
		}
	}
}
