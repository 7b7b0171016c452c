package recent

import (
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"runtime"
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
		fwd = append(fwd, n.key)
		prev = i
	}
	if s.tail != prev {
		t.Fatalf("tail %d, want %d", s.tail, prev)
	}
	if len(fwd) != s.Len() {
		t.Fatalf("%d keys linked, Len %d", len(fwd), s.Len())
	}
	checkIndex(t, s)
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

// checkIndex checks the index against the keys linked: each is found at
// its node, every slot in use names a linked node under its key's tag and
// lies at the end of an unbroken run from its home, and at most 3/4 of the
// slots, a power of two, are in use.
func checkIndex[K comparable, V any](t *testing.T, s *Set[K, V]) {
	t.Helper()
	linked := 0
	for i := s.head; i != none; i = s.nodes[i].next {
		if _, j := s.lookup(s.nodes[i].key, s.tag(s.nodes[i].key)); j != i {
			t.Fatalf("key %v of node %d: index finds node %d", s.nodes[i].key, i, j)
		}
		linked++
	}
	size := len(s.slots)
	if size < minSlots || size&(size-1) != 0 {
		t.Fatalf("index of %d slots", size)
	}
	used := 0
	for j, e := range s.slots {
		if e == 0 {
			continue
		}
		used++
		i := int32(uint32(e)) - 1
		if i < 0 || int(i) >= len(s.nodes) || uint32(e>>32) != s.tag(s.nodes[i].key) {
			t.Fatalf("slot %d: %#x names node %d of %d, or under another tag", j, e, i, len(s.nodes))
		}
		for k := int(uint32(e>>32)) & (size - 1); k != j; k = (k + 1) & (size - 1) {
			if s.slots[k] == 0 {
				t.Fatalf("slot %d: empty slot %d between it and its home", j, k)
			}
		}
	}
	if used != linked || used != s.Len() || 4*used > 3*size {
		t.Fatalf("%d slots of %d in use, %d keys linked, Len %d", used, size, linked, s.Len())
	}
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
// put order. Besides the set's own hash, the keys' hashes are made to
// collide: a few homes at the end of the index (probes wrap around), and
// one tag for every key (only the keys tell them apart).
func TestSetAgainstModel(t *testing.T) {
	for _, tc := range []struct {
		name string
		hash func(int) uint64
	}{
		{"maphash", nil},
		{"three homes at the end", func(k int) uint64 { return uint64(k%3) + 13 }},
		{"one tag", func(int) uint64 { return 1<<40 | 15 }},
	} {
		t.Run(tc.name, func(t *testing.T) { runAgainstModel(t, tc.hash) })
	}
}

func runAgainstModel(t *testing.T, hash func(int) uint64) {
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
	if hash != nil {
		s.hash = hash
	}
	var model []ent
	var want Evictions
	// Every value put is let go of once, when it is replaced or dropped:
	// OnDrop's fn is checked against the model before each step's change.
	released := make(map[int]bool)
	s.OnDrop(func(k, v int) {
		if released[v] {
			t.Fatalf("value %d of key %d released twice", v, k)
		}
		if j := slices.IndexFunc(model, func(e ent) bool { return e.v == v }); j < 0 || model[j].k != k {
			t.Fatalf("released value %d of key %d, not held as such; model %+v", v, k, model)
		}
		released[v] = true
	})
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
		before, drops := len(released), 0
		switch rnd(4) {
		case 0:
			got := s.Sweep(now)
			drops = expire(now)
			if got != drops {
				t.Fatalf("op %d: Sweep = %d, want %d", i, got, drops)
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
			drops = expire(now) + 1 // the key's old value, or the oldest key's
			if j := slices.IndexFunc(model, func(e ent) bool { return e.k == k }); j >= 0 {
				model = slices.Delete(model, j, j+1)
			} else if len(model) == maxLen {
				model = model[1:]
				want.ByCount++
			} else {
				drops--
			}
			model = append(model, ent{k, i, now})
		}
		if got := len(released) - before; got != drops {
			t.Fatalf("op %d: %d values released, want %d", i, got, drops)
		}
		checkIndex(t, s)
		if s.Len() != len(model) || s.Evictions() != want {
			t.Fatalf("op %d: len %d, evictions %+v; model len %d, evictions %+v", i, s.Len(), s.Evictions(), len(model), want)
		}
	}
}

// The index grows with the keys held, to the least power of two (at least
// 8) of which they fill at most 3/4, and not with the keys that went
// through the set: churn leaves it as it was. The nodes stop at MaxLen.
func TestIndexSize(t *testing.T) {
	const maxLen = 100
	s, err := New[int, int](Limits{MaxLen: maxLen, MaxAge: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := func(n int) int {
		size := minSlots
		for 4*n > 3*size {
			size *= 2
		}
		return size
	}
	for i := range maxLen {
		s.Put(0, i, i)
		if len(s.slots) != want(i+1) {
			t.Fatalf("%d keys: %d slots, want %d", i+1, len(s.slots), want(i+1))
		}
		// The nodes double from 8, up to MaxLen.
		if c := 8 << bits.Len(uint(i/8)); cap(s.nodes) != min(c, maxLen) {
			t.Fatalf("%d keys: nodes of capacity %d, want %d", i+1, cap(s.nodes), min(c, maxLen))
		}
	}
	if cap(s.nodes) != maxLen {
		t.Fatalf("full set: nodes of capacity %d, want %d", cap(s.nodes), maxLen)
	}
	for i := maxLen; i < 100_000; i++ {
		s.Put(int64(i/10+i/10_000*2000), i, i) // by count, and every 10,000 by age
	}
	checkIndex(t, s)
	if ev := s.Evictions(); len(s.slots) != want(maxLen) || cap(s.nodes) != maxLen || ev.ByAge == 0 || ev.ByCount == 0 {
		t.Fatalf("after churn: %d slots, nodes of capacity %d, evictions %+v", len(s.slots), cap(s.nodes), ev)
	}
	for i := range 99_900 {
		if _, ok := s.Get(int64(99_999/10+9*2000), i); ok {
			t.Fatalf("key %d still held", i)
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

// TestOnDrop checks what OnDrop's fn is told, step by step: each value
// the set lets go of (evicted by age or count, or replaced), and nothing
// for a Get or a Put of a new key into room.
func TestOnDrop(t *testing.T) {
	s, err := New[string, int](Limits{MaxLen: 2, MaxAge: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	s.OnDrop(func(k string, v int) {
		if _, i := s.lookup(k, s.tag(k)); i != none && s.nodes[i].val == v {
			t.Errorf("%s=%d released while still held", k, v)
		}
		got = append(got, fmt.Sprintf("%s=%d", k, v))
	})
	for i, st := range []struct {
		do   func()
		want []string
	}{
		{func() { s.Put(0, "a", 1) }, nil},
		{func() { s.Put(1, "b", 2) }, nil},
		{func() { s.Get(1, "a") }, nil},
		{func() { s.Put(2, "a", 3) }, []string{"a=1"}},                     // replaced
		{func() { s.Put(3, "c", 4) }, []string{"b=2"}},                     // by count
		{func() { s.Sweep(13) }, []string{"a=3"}},                          // by age
		{func() { s.Get(20, "c") }, nil},                                   // expired, but Get drops nothing
		{func() { s.Put(20, "d", 5) }, []string{"c=4"}},                    // by age, on the put
		{func() { s.Put(31, "e", 6) }, []string{"d=5"}},                    // by age, on the put
		{func() { s.Put(31, "f", 7); s.Put(31, "g", 8) }, []string{"e=6"}}, // by count
	} {
		got = nil
		st.do()
		if !slices.Equal(got, st.want) {
			t.Fatalf("step %d: released %v, want %v", i, got, st.want)
		}
	}
}

// BenchmarkBytesPerKey reports the heap a full set of a million keys
// holds per key, after three million went through it (every key put
// once and evicted by count: a window's churn). The keys are those of a
// node's dedup window (an address, no value) and of the scheduler's
// recent verdicts (16 address bytes and a 16-byte record).
func BenchmarkBytesPerKey(b *testing.B) {
	const n = 1_000_000
	type record [2]uint64 // the size of the scheduler's
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	b.Run("netip.Addr,struct{}", func(b *testing.B) {
		var per float64
		for b.Loop() {
			before := heap()
			s, _ := New[netip.Addr, struct{}](Limits{MaxLen: n, MaxAge: time.Hour})
			for i := range 3 * n {
				s.Put(int64(i), netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}), struct{}{})
			}
			per = float64(heap()-before) / float64(s.Len())
			runtime.KeepAlive(s)
		}
		b.ReportMetric(per, "bytes/key")
	})
	b.Run("[16]byte,record", func(b *testing.B) {
		var per float64
		for b.Loop() {
			before := heap()
			s, _ := New[[16]byte, record](Limits{MaxLen: n, MaxAge: time.Hour})
			for i := range 3 * n {
				s.Put(int64(i), [16]byte{12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)}, record{})
			}
			per = float64(heap()-before) / float64(s.Len())
			runtime.KeepAlive(s)
		}
		b.ReportMetric(per, "bytes/key")
	})
}
