package pool

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"
)

const sec = int64(time.Second)

// t0 is a realistic clock (unix nanos): far larger than any window, so a
// sum where a difference is meant can never pass for it.
const t0 = 1_700_000_000 * sec

func cfg() Config {
	return Config{MaxPending: 100, MaxAge: 3600 * sec, DedupWindow: 600 * sec, MaxRecent: 1000, MaxWaiters: 4, Policy: Policy{Mode: ShedNewest}}
}

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func mustNew(t *testing.T, c Config) *Pool[string] {
	t.Helper()
	p, err := New[string](c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fill offers addresses from..to-1 (waiter "n"/i), each seen at now, and
// fails if one is not left waiting.
func fill(t *testing.T, p *Pool[string], now int64, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if d, done, ev := p.Offer(now, Waiter{"n", uint64(i)}, addr(i), now); done || ev != nil {
			t.Fatalf("offer %d: %+v %v %+v", i, d, done, ev)
		}
	}
}

// settle puts a into the pool, takes it and completes it with verdict at
// now, so that the verdict is remembered. The pool must hold nothing else.
func settle(t *testing.T, p *Pool[string], now int64, a netip.Addr, verdict string) {
	t.Helper()
	p.Offer(now, Waiter{"settle", 1}, a, now)
	es, _ := p.Take(now, 1)
	if len(es) != 1 || es[0].Addr != a {
		t.Fatalf("settle %v: took %+v", a, es)
	}
	p.Complete(now, es[0], verdict, true)
}

func addrs(es []*Entry) []netip.Addr {
	var out []netip.Addr
	for _, e := range es {
		out = append(out, e.Addr)
	}
	return out
}

func span(from, to int) []netip.Addr {
	var out []netip.Addr
	for i := from; i < to; i++ {
		out = append(out, addr(i))
	}
	return out
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		pol  Policy
		want string // "" for valid
	}{
		{Policy{Mode: ShedNewest}, ""},
		{Policy{Mode: ShedOldest}, ""},
		{Policy{Mode: ShedSample, SampleN: 2}, ""},
		{Policy{Mode: ShedSample, SampleN: 100}, ""},
		{Policy{Mode: ShedSample, SampleN: 1}, "shed policy sample: sample_n 1 < 2"},
		{Policy{Mode: ShedSample}, "shed policy sample: sample_n 0 < 2"},
		{Policy{Mode: ShedSample, SampleN: -3}, "shed policy sample: sample_n -3 < 2"},
		{Policy{}, `shed policy: unknown mode "" (want sample, newest or oldest)`},
		{Policy{Mode: "drop-all", SampleN: 5}, `shed policy: unknown mode "drop-all" (want sample, newest or oldest)`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.pol.Mode, tt.pol.SampleN), func(t *testing.T) {
			err := tt.pol.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPolicyString(t *testing.T) {
	for _, tt := range []struct {
		pol  Policy
		want string
	}{
		{Policy{Mode: ShedSample, SampleN: 5}, "sample 1/5"},
		{Policy{Mode: ShedNewest, SampleN: 5}, "newest"},
		{Policy{Mode: ShedOldest}, "oldest"},
	} {
		if got := tt.pol.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.pol, got, tt.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"max pending 1", func(c *Config) { c.MaxPending = 1 }, ""},
		{"max pending 0", func(c *Config) { c.MaxPending = 0 }, "pool: max pending < 1"},
		{"max age 1ns", func(c *Config) { c.MaxAge = 1 }, ""},
		{"max age 0", func(c *Config) { c.MaxAge = 0 }, "pool: max age <= 0"},
		{"max age negative", func(c *Config) { c.MaxAge = -sec }, "pool: max age <= 0"},
		{"dedup window 0 (off)", func(c *Config) { c.DedupWindow = 0 }, ""},
		{"dedup window negative", func(c *Config) { c.DedupWindow = -1 }, "pool: dedup window < 0"},
		{"max recent 0 (off)", func(c *Config) { c.MaxRecent = 0 }, ""},
		{"max recent negative", func(c *Config) { c.MaxRecent = -1 }, "pool: max recent < 0"},
		{"max waiters 1", func(c *Config) { c.MaxWaiters = 1 }, ""},
		{"max waiters 0", func(c *Config) { c.MaxWaiters = 0 }, "pool: max waiters < 1"},
		{"unknown policy", func(c *Config) { c.Policy = Policy{Mode: "drop-all"} }, `shed policy: unknown mode "drop-all" (want sample, newest or oldest)`},
		{"sample of 1", func(c *Config) { c.Policy = Policy{Mode: ShedSample, SampleN: 1} }, "shed policy sample: sample_n 1 < 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg()
			tt.edit(&c)
			p, err := New[string](c)
			if tt.want == "" {
				if err != nil || p == nil {
					t.Fatalf("New = %v, %v", p, err)
				}
				return
			}
			if err == nil || err.Error() != tt.want || p != nil {
				t.Fatalf("New = %v, %v; want error %q", p, err, tt.want)
			}
		})
	}
}

func TestSetPolicy(t *testing.T) {
	p := mustNew(t, cfg())
	if err := p.SetPolicy(Policy{Mode: ShedSample, SampleN: 3}); err != nil {
		t.Fatal(err)
	}
	if got := p.Policy(); got != (Policy{Mode: ShedSample, SampleN: 3}) {
		t.Fatalf("policy %+v after a valid change", got)
	}
	if err := p.SetPolicy(Policy{Mode: ShedSample, SampleN: 1}); err == nil {
		t.Fatal("invalid policy accepted")
	}
	if got := p.Policy(); got != (Policy{Mode: ShedSample, SampleN: 3}) {
		t.Fatalf("policy %+v after a refused change, want it kept", got)
	}
}

func TestOverloadedAtHalfFull(t *testing.T) {
	for _, tt := range []struct{ maxPending, mark int }{{10, 5}, {11, 5}, {2, 1}, {1, 0}} {
		c := cfg()
		c.MaxPending = tt.maxPending
		p := mustNew(t, c)
		if tt.mark > 0 {
			fill(t, p, t0, 0, tt.mark-1)
			if p.Overloaded() {
				t.Errorf("max %d: overloaded at %d pending, below the mark", tt.maxPending, tt.mark-1)
			}
			fill(t, p, t0, tt.mark-1, tt.mark)
		}
		if !p.Overloaded() {
			t.Errorf("max %d: not overloaded at %d pending, the high-water mark", tt.maxPending, tt.mark)
		}
	}
}

func TestOfferArrivalAge(t *testing.T) {
	const maxAge = 3600 * sec
	tests := []struct {
		name     string
		seen     int64
		expired  bool
		wantSeen int64 // the entry's Seen when it waits
	}{
		{"seen now", t0, false, t0},
		{"exactly max age old", t0 - maxAge, false, t0 - maxAge},
		{"one nano past max age", t0 - maxAge - 1, true, 0},
		{"unknown sighting time (0) counts from now", 0, false, t0},
		{"negative sighting time counts from now", -5 * sec, false, t0},
		{"sighting from the future counts from now", t0 + sec, false, t0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustNew(t, cfg())
			w := Waiter{"n1", 9}
			d, done, ev := p.Offer(t0, w, addr(1), tt.seen)
			if ev != nil {
				t.Fatalf("evicted %+v", ev)
			}
			st := p.Stats()
			if tt.expired {
				want := Delivery[string]{Waiter: w, Addr: addr(1), Kind: KindExpired, Reason: "older than max age on arrival"}
				if !done || d != want {
					t.Fatalf("got %+v %v, want %+v", d, done, want)
				}
				if st.Expired != 1 || st.Pending != 0 || st.Unique != 0 || st.Received != 1 {
					t.Fatalf("stats %+v", st)
				}
				return
			}
			if done || d != (Delivery[string]{}) {
				t.Fatalf("answered at once: %+v", d)
			}
			if seen, ok := p.OldestSeen(); !ok || seen != tt.wantSeen {
				t.Fatalf("seen %d %v, want %d", seen, ok, tt.wantSeen)
			}
			if st.Expired != 0 || st.Pending != 1 || st.Unique != 1 || st.Received != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestDedupAcrossNodesAndResend(t *testing.T) {
	p := mustNew(t, cfg())
	now := t0
	a := addr(1)
	for _, w := range []Waiter{{"n1", 1}, {"n2", 7}, {"n1", 1}} { // n1 re-sends id 1
		if _, done, _ := p.Offer(now, w, a, now); done {
			t.Fatal("unexpected immediate outcome")
		}
	}
	es, dead := p.Take(now, 10)
	if len(es) != 1 || len(dead) != 0 {
		t.Fatalf("take: %d entries %d dead", len(es), len(dead))
	}
	if got := es[0].Waiters; !slices.Equal(got, []Waiter{{"n1", 1}, {"n2", 7}}) {
		t.Fatalf("waiters = %v, want n1/1 and n2/7 (the re-send joins once)", got)
	}
	ds := p.Complete(now, es[0], "v", true)
	want := []Delivery[string]{
		{Waiter: Waiter{"n1", 1}, Addr: a, Kind: KindVerdict, Verdict: "v"},
		{Waiter: Waiter{"n2", 7}, Addr: a, Kind: KindVerdict, Verdict: "v"},
	}
	if !slices.Equal(ds, want) {
		t.Fatalf("complete: %+v", ds)
	}
	// A duplicate result changes nothing.
	if ds := p.Complete(now, es[0], "w", true); ds != nil {
		t.Fatalf("duplicate complete delivered %v", ds)
	}
	// Within the dedup window the verdict answers at once.
	d, done, _ := p.Offer(now+sec, Waiter{"n3", 1}, a, now+sec)
	if !done || d != (Delivery[string]{Waiter: Waiter{"n3", 1}, Addr: a, Kind: KindVerdict, Verdict: "v"}) {
		t.Fatalf("recent: %+v %v", d, done)
	}
	st := p.Stats()
	if st.Received != 4 || st.Unique != 1 || st.Examined != 1 || st.Deduplicated != 3 || st.Recent != 1 || st.InFlight != 0 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
	// After the window it is examined again.
	p.Sweep(now + 601*sec)
	if _, done, _ := p.Offer(now+602*sec, Waiter{"n3", 2}, a, now+602*sec); done {
		t.Fatal("verdict reused after the dedup window")
	}
}

func TestDedupWindowBoundary(t *testing.T) {
	const window = 600 * sec
	tests := []struct {
		name     string
		edit     func(*Config)
		after    int64 // offer this long after the verdict
		recent   int   // verdicts remembered
		answered bool
	}{
		{"same instant", func(*Config) {}, 0, 1, true},
		{"exactly the window", func(*Config) {}, window, 1, true},
		{"one nano past the window", func(*Config) {}, window + 1, 1, false},
		{"window off", func(c *Config) { c.DedupWindow = 0 }, 0, 0, false},
		{"recent verdicts off", func(c *Config) { c.MaxRecent = 0 }, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg()
			tt.edit(&c)
			p := mustNew(t, c)
			settle(t, p, t0, addr(1), "v")
			if got := p.Stats().Recent; got != tt.recent {
				t.Fatalf("%d verdicts remembered, want %d", got, tt.recent)
			}
			now := t0 + tt.after
			d, done, _ := p.Offer(now, Waiter{"n2", 3}, addr(1), now)
			if done != tt.answered {
				t.Fatalf("answered at once = %v, want %v (%+v)", done, tt.answered, d)
			}
			dedup, pending := uint64(0), 1
			if tt.answered {
				dedup, pending = 1, 0
				if d != (Delivery[string]{Waiter: Waiter{"n2", 3}, Addr: addr(1), Kind: KindVerdict, Verdict: "v"}) {
					t.Fatalf("delivery %+v", d)
				}
			}
			if st := p.Stats(); st.Deduplicated != dedup || st.Pending != pending {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestJoinKeepsEarliestSeen(t *testing.T) {
	p := mustNew(t, cfg())
	a := addr(1)
	p.Offer(t0, Waiter{"n1", 1}, a, t0-100*sec)
	p.Offer(t0, Waiter{"n2", 1}, a, t0-50*sec) // later sighting: Seen kept
	if seen, _ := p.OldestSeen(); seen != t0-100*sec {
		t.Fatalf("seen %d after a later sighting joined", seen-t0)
	}
	p.Offer(t0, Waiter{"n3", 1}, a, t0-200*sec) // earlier sighting: Seen moves back
	if seen, _ := p.OldestSeen(); seen != t0-200*sec {
		t.Fatalf("seen %d after an earlier sighting joined", seen-t0)
	}
	// Max age counts from the earliest sighting.
	if es, dead := p.Take(t0-200*sec+3600*sec+1, 1); len(es) != 0 || len(dead) != 3 {
		t.Fatalf("take past the earliest sighting's max age: %d %+v", len(es), dead)
	}
}

func TestMaxWaiters(t *testing.T) {
	c := cfg()
	c.MaxWaiters = 2
	p := mustNew(t, c)
	a := addr(1)
	for _, w := range []Waiter{{"n1", 1}, {"n2", 1}} {
		if _, done, _ := p.Offer(t0, w, a, t0); done {
			t.Fatalf("waiter %v refused below max waiters", w)
		}
	}
	d, done, _ := p.Offer(t0, Waiter{"n3", 1}, a, t0)
	want := Delivery[string]{Waiter: Waiter{"n3", 1}, Addr: a, Kind: KindShed, Reason: "too many sightings of this address waiting"}
	if !done || d != want {
		t.Fatalf("third waiter: %+v %v", d, done)
	}
	// A re-send of a waiter already attached is not shed, even when full.
	if _, done, _ := p.Offer(t0, Waiter{"n2", 1}, a, t0); done {
		t.Fatal("re-send of an attached waiter shed")
	}
	if st := p.Stats(); st.Shed != 1 || st.Deduplicated != 2 || st.Unique != 1 || st.Received != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestShedAtMaxPending(t *testing.T) {
	tests := []struct {
		mode   string
		reason string
	}{
		{ShedNewest, "pool full: newest shed"},
		{ShedOldest, "pool full: oldest shed"},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			c := cfg()
			c.MaxPending, c.Policy = 3, Policy{Mode: tt.mode}
			p := mustNew(t, c)
			p.Offer(t0, Waiter{"m", 0}, addr(0), t0) // addr(0) has two waiters
			fill(t, p, t0, 0, 3)                     // the last one fills the pool exactly
			d, done, evicted := p.Offer(t0, Waiter{"n", 3}, addr(3), t0)
			st := p.Stats()
			switch tt.mode {
			case ShedNewest:
				want := Delivery[string]{Waiter: Waiter{"n", 3}, Addr: addr(3), Kind: KindShed, Reason: tt.reason}
				if !done || d != want || evicted != nil {
					t.Fatalf("newest: %+v %v %+v", d, done, evicted)
				}
				if st.Shed != 1 || st.Unique != 3 {
					t.Fatalf("stats %+v", st)
				}
				if es, _ := p.Take(t0, 10); !slices.Equal(addrs(es), span(0, 3)) {
					t.Fatalf("pool holds %v", addrs(es))
				}
			case ShedOldest:
				want := []Delivery[string]{
					{Waiter: Waiter{"m", 0}, Addr: addr(0), Kind: KindShed, Reason: tt.reason},
					{Waiter: Waiter{"n", 0}, Addr: addr(0), Kind: KindShed, Reason: tt.reason},
				}
				if done || d != (Delivery[string]{}) || !slices.Equal(evicted, want) {
					t.Fatalf("oldest: %+v %v %+v", d, done, evicted)
				}
				if st.Shed != 2 || st.Unique != 4 {
					t.Fatalf("stats %+v", st)
				}
				if es, _ := p.Take(t0, 10); !slices.Equal(addrs(es), span(1, 4)) {
					t.Fatalf("pool holds %v", addrs(es))
				}
			}
			if st.Pending != 3 {
				t.Fatalf("pending %d, want bounded at 3", st.Pending)
			}
		})
	}
}

func TestShedOldestWhenAllInFlight(t *testing.T) {
	c := cfg()
	c.MaxPending, c.Policy = 2, Policy{Mode: ShedOldest}
	p := mustNew(t, c)
	fill(t, p, t0, 0, 2)
	p.Take(t0, 2)
	fill(t, p, t0, 2, 4) // in-flight addresses do not count as pending
	if d, done, ev := p.Offer(t0, Waiter{"n", 4}, addr(4), t0); done || len(ev) != 1 || ev[0].Addr != addr(2) {
		t.Fatalf("offer at max: %+v %v %+v", d, done, ev)
	}
	if st := p.Stats(); st.Pending != 2 || st.InFlight != 2 || st.Shed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestShedSampleWhenFull(t *testing.T) {
	// At MaxPending the sample policy refuses every new address, whatever
	// its hash; below it, past the high-water mark, it samples.
	c := cfg()
	c.MaxPending, c.Policy = 4, Policy{Mode: ShedSample, SampleN: 2}
	p := mustNew(t, c)
	sampled, i := 0, 0
	for ; p.Pending() < c.MaxPending && i < 1000; i++ {
		d, done, _ := p.Offer(t0, Waiter{"n", uint64(i)}, addr(i), t0)
		if done {
			if d.Kind != KindShed || d.Reason != "overloaded: sampling 1 in 2" || p.Pending() < c.MaxPending/2 {
				t.Fatalf("offer %d at %d pending: %+v", i, p.Pending(), d)
			}
			sampled++
		}
	}
	if p.Pending() != c.MaxPending {
		t.Fatalf("pool never filled: %d pending", p.Pending())
	}
	for j := 0; j < 50; j++ {
		d, done, _ := p.Offer(t0, Waiter{"n", uint64(i + j)}, addr(i+j), t0)
		want := Delivery[string]{Waiter: Waiter{"n", uint64(i + j)}, Addr: addr(i + j), Kind: KindShed, Reason: "pool full"}
		if !done || d != want {
			t.Fatalf("offer to a full pool: %+v %v", d, done)
		}
	}
	if st := p.Stats(); st.Shed != uint64(sampled+50) || st.Pending != 4 || st.Unique != 4 {
		t.Fatalf("stats %+v (sampled %d)", st, sampled)
	}
}

func TestShedSampleAdmitsAllBelowHighWater(t *testing.T) {
	// Below half full every new address is admitted, whatever its hash:
	// fill fails on any sighting answered at once.
	for range 20 { // a fresh hash seed each time
		c := cfg()
		c.MaxPending, c.Policy = 10, Policy{Mode: ShedSample, SampleN: 1000}
		p := mustNew(t, c)
		fill(t, p, t0, 0, 5)
	}
}

func TestShedSampleAdmitsOneInN(t *testing.T) {
	c := cfg()
	c.MaxPending, c.Policy = 40_000, Policy{Mode: ShedSample, SampleN: 5}
	p := mustNew(t, c)
	fill(t, p, 0, 0, c.MaxPending/2) // fill to the high-water mark
	admitted, shed := 0, 0
	for i := c.MaxPending / 2; i < c.MaxPending/2+20_000; i++ {
		if _, done, _ := p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0); done {
			shed++
		} else {
			admitted++
		}
	}
	r := float64(admitted) / float64(admitted+shed)
	if r < 0.18 || r > 0.22 {
		t.Fatalf("admitted share %.3f, want about 1/5", r)
	}
	if st := p.Stats(); st.Shed != uint64(shed) {
		t.Fatalf("shed counter %d, want %d", st.Shed, shed)
	}
}

func TestTake(t *testing.T) {
	const maxAge = 3600 * sec
	p := mustNew(t, cfg())
	fill(t, p, t0, 0, 5)
	if es, dead := p.Take(t0, 0); es != nil || dead != nil {
		t.Fatalf("take 0: %v %v", es, dead)
	}
	es, dead := p.Take(t0, 2)
	if !slices.Equal(addrs(es), span(0, 2)) || dead != nil {
		t.Fatalf("take 2: %v %v", addrs(es), dead)
	}
	if st := p.Stats(); st.Pending != 3 || st.InFlight != 2 {
		t.Fatalf("stats %+v", st)
	}
	if !p.Live(es[0]) {
		t.Fatal("an entry in flight is not live")
	}
	// Exactly max age old: still taken.
	es, dead = p.Take(t0+maxAge, 1)
	if !slices.Equal(addrs(es), span(2, 3)) || dead != nil {
		t.Fatalf("take at max age: %v %v", addrs(es), dead)
	}
	// One nano past: expired, and Take goes on past it up to max.
	es, dead = p.Take(t0+maxAge+1, 10)
	want := []Delivery[string]{
		{Waiter: Waiter{"n", 3}, Addr: addr(3), Kind: KindExpired, Reason: "waited longer than max age"},
		{Waiter: Waiter{"n", 4}, Addr: addr(4), Kind: KindExpired, Reason: "waited longer than max age"},
	}
	if es != nil || !slices.Equal(dead, want) {
		t.Fatalf("take past max age: %v %+v", addrs(es), dead)
	}
	if st := p.Stats(); st.Pending != 0 || st.InFlight != 3 || st.Expired != 2 {
		t.Fatalf("stats %+v", st)
	}
	if es, dead := p.Take(t0, 10); es != nil || dead != nil {
		t.Fatalf("take from an empty pool: %v %v", es, dead)
	}
}

func TestExpiry(t *testing.T) {
	p := mustNew(t, cfg())
	// Too old on arrival.
	if d, done, _ := p.Offer(t0+4000*sec, Waiter{"n", 1}, addr(1), t0+100*sec); !done || d.Kind != KindExpired {
		t.Fatalf("old on arrival: %+v", d)
	}
	p.Offer(t0+10*sec, Waiter{"n", 2}, addr(2), t0+10*sec)
	p.Offer(t0+20*sec, Waiter{"n", 3}, addr(3), t0+20*sec)
	ds := p.Sweep(t0 + 3615*sec)
	if len(ds) != 1 || ds[0].Waiter.ID != 2 || ds[0].Kind != KindExpired {
		t.Fatalf("sweep: %+v", ds)
	}
	es, dead := p.Take(t0+3625*sec, 10)
	if len(es) != 0 || len(dead) != 1 || dead[0].Waiter.ID != 3 {
		t.Fatalf("take after max age: %d %+v", len(es), dead)
	}
	if st := p.Stats(); st.Expired != 3 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSweepPendingBoundary(t *testing.T) {
	const maxAge = 3600 * sec
	p := mustNew(t, cfg())
	p.Offer(t0, Waiter{"n", 1}, addr(1), t0)
	p.Offer(t0+sec, Waiter{"n", 2}, addr(2), t0+sec)
	if ds := p.Sweep(t0 + maxAge); ds != nil {
		t.Fatalf("sweep at exactly max age: %+v", ds)
	}
	ds := p.Sweep(t0 + maxAge + 1)
	want := []Delivery[string]{{Waiter: Waiter{"n", 1}, Addr: addr(1), Kind: KindExpired, Reason: "waited longer than max age"}}
	if !slices.Equal(ds, want) {
		t.Fatalf("sweep one nano past max age: %+v", ds)
	}
	if at, ok := p.OldestEnqueued(); !ok || at != t0+sec {
		t.Fatalf("oldest enqueued %d %v after the sweep", at, ok)
	}
	if ds := p.Sweep(t0 + 2*maxAge); len(ds) != 1 || p.Pending() != 0 {
		t.Fatalf("sweep of all: %+v, %d pending", ds, p.Pending())
	}
	if ds := p.Sweep(t0 + 3*maxAge); ds != nil {
		t.Fatalf("sweep of an empty pool: %+v", ds)
	}
}

func TestSweepRecentBoundary(t *testing.T) {
	const window = 600 * sec
	p := mustNew(t, cfg())
	settle(t, p, t0, addr(1), "a")
	settle(t, p, t0+sec, addr(2), "b")
	p.Sweep(t0 + window)
	if st := p.Stats(); st.Recent != 2 {
		t.Fatalf("recent %d after a sweep at exactly the window", st.Recent)
	}
	p.Sweep(t0 + window + 1)
	if st := p.Stats(); st.Recent != 1 {
		t.Fatalf("recent %d after a sweep one nano past the first verdict's window", st.Recent)
	}
	if _, done, _ := p.Offer(t0+window+1, Waiter{"x", 1}, addr(2), t0+window+1); !done {
		t.Fatal("the verdict still in its window was forgotten")
	}
	p.Sweep(t0 + 10*window)
	if st := p.Stats(); st.Recent != 0 {
		t.Fatalf("recent %d after everything aged out", st.Recent)
	}
}

func TestSweepKeepsRecentOrder(t *testing.T) {
	// After a partial sweep the oldest remaining verdict is still the first
	// one dropped when the window is full.
	const window = 600 * sec
	c := cfg()
	c.MaxRecent = 2
	p := mustNew(t, c)
	settle(t, p, t0, addr(1), "a")
	settle(t, p, t0+100*sec, addr(2), "b")
	now := t0 + window + 50*sec // a aged out, b not
	p.Sweep(now)
	settle(t, p, now, addr(3), "c")
	settle(t, p, now, addr(4), "d") // drops b, the oldest
	if _, done, _ := p.Offer(now, Waiter{"x", 1}, addr(3), now); !done {
		t.Fatal("c was dropped instead of b")
	}
	if _, done, _ := p.Offer(now, Waiter{"x", 2}, addr(2), now); done {
		t.Fatal("b survived though it was the oldest")
	}
}

func TestRequeueGoesFirstAndExpiresInFlight(t *testing.T) {
	p := mustNew(t, cfg())
	fill(t, p, t0, 0, 5)
	es, _ := p.Take(t0, 2)
	if ds := p.Requeue(t0+sec, es); len(ds) != 0 {
		t.Fatal(ds)
	}
	if st := p.Stats(); st.Pending != 5 || st.InFlight != 0 {
		t.Fatalf("stats after requeue %+v", st)
	}
	again, _ := p.Take(t0+sec, 5)
	if !slices.Equal(addrs(again), span(0, 5)) {
		t.Fatalf("order after requeue: %v", addrs(again))
	}
	if ds, ok := p.ExpireInFlight(t0+3600*sec, again[0]); ok || ds != nil {
		t.Fatalf("expire in flight at exactly max age: %v %+v", ok, ds)
	}
	ds, ok := p.ExpireInFlight(t0+3600*sec+1, again[0])
	want := []Delivery[string]{{Waiter: Waiter{"n", 0}, Addr: addr(0), Kind: KindExpired, Reason: "waited longer than max age"}}
	if !ok || !slices.Equal(ds, want) {
		t.Fatalf("expire in flight: %v %+v", ok, ds)
	}
	if p.Live(again[0]) {
		t.Fatal("expired entry still live")
	}
	if st := p.Stats(); st.InFlight != 4 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
	// Resolved, or never taken: nothing to expire.
	if ds, ok := p.ExpireInFlight(t0+10000*sec, again[0]); ok || ds != nil {
		t.Fatalf("expire a resolved entry: %v %+v", ok, ds)
	}
	p.Offer(t0, Waiter{"n", 9}, addr(9), t0)
	pending := p.entries[keyOf(addr(9))]
	if ds, ok := p.ExpireInFlight(t0+10000*sec, pending); ok || ds != nil {
		t.Fatalf("expire a pending entry: %v %+v", ok, ds)
	}
}

func TestRequeueExpiry(t *testing.T) {
	const maxAge = 3600 * sec
	p := mustNew(t, cfg())
	p.Offer(t0, Waiter{"n", 0}, addr(0), t0)
	p.Offer(t0+sec, Waiter{"n", 1}, addr(1), t0+sec)
	es, _ := p.Take(t0+sec, 2)
	ds := p.Requeue(t0+sec+maxAge, es) // addr(0) one second past, addr(1) exactly at max age
	want := []Delivery[string]{{Waiter: Waiter{"n", 0}, Addr: addr(0), Kind: KindExpired, Reason: "waited longer than max age"}}
	if !slices.Equal(ds, want) {
		t.Fatalf("requeue: %+v", ds)
	}
	if st := p.Stats(); st.Pending != 1 || st.InFlight != 0 || st.Expired != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A requeue of entries no longer in flight changes nothing.
	if ds := p.Requeue(t0, es); ds != nil {
		t.Fatalf("second requeue: %+v", ds)
	}
	if st := p.Stats(); st.Pending != 1 || st.InFlight != 0 {
		t.Fatalf("stats after a second requeue %+v", st)
	}
}

func TestRequeueLayout(t *testing.T) {
	t.Run("into the consumed head, in place", func(t *testing.T) {
		p := mustNew(t, cfg())
		fill(t, p, t0, 0, 5)
		backing := p.queue
		es, _ := p.Take(t0, 2)
		p.Requeue(t0, es)
		if p.head != 0 || len(p.queue) != 5 || &p.queue[0] != &backing[0] {
			t.Fatalf("head %d len %d, same array %v", p.head, len(p.queue), &p.queue[0] == &backing[0])
		}
	})
	t.Run("after the queue emptied", func(t *testing.T) {
		p := mustNew(t, cfg())
		fill(t, p, t0, 0, 3)
		es, _ := p.Take(t0, 3)
		p.Requeue(t0, es)
		if got, _ := p.Take(t0, 10); !slices.Equal(addrs(got), span(0, 3)) {
			t.Fatalf("order %v", addrs(got))
		}
	})
	t.Run("more than the head room, before what waits", func(t *testing.T) {
		p := mustNew(t, cfg())
		fill(t, p, t0, 0, 2)
		es, _ := p.Take(t0, 2) // the queue empties: head back to 0
		fill(t, p, t0, 2, 5)
		p.Take(t0, 1) // head 1 < 2 requeued
		p.Requeue(t0, es)
		if p.head != 0 || len(p.queue) != 4 || cap(p.queue) != 4 {
			t.Fatalf("head %d len %d cap %d, want a queue of exactly 4", p.head, len(p.queue), cap(p.queue))
		}
		if got, _ := p.Take(t0, 10); !slices.Equal(addrs(got), []netip.Addr{addr(0), addr(1), addr(3), addr(4)}) {
			t.Fatalf("order %v", addrs(got))
		}
	})
	t.Run("one before two waiting", func(t *testing.T) {
		p := mustNew(t, cfg())
		fill(t, p, t0, 0, 1)
		es, _ := p.Take(t0, 1)
		fill(t, p, t0, 1, 3)
		p.Requeue(t0, es)
		if got, _ := p.Take(t0, 10); !slices.Equal(addrs(got), span(0, 3)) {
			t.Fatalf("order %v", addrs(got))
		}
	})
}

func TestCompleteAndFail(t *testing.T) {
	p := mustNew(t, cfg())
	fill(t, p, t0, 0, 4)
	es, _ := p.Take(t0, 3)
	if ds := p.Complete(t0, es[0], "ok", true); len(ds) != 1 || ds[0].Verdict != "ok" {
		t.Fatalf("complete: %+v", ds)
	}
	if ds := p.Complete(t0, es[1], "cached", false); len(ds) != 1 || ds[0].Verdict != "cached" {
		t.Fatalf("complete unexamined: %+v", ds)
	}
	ds := p.Fail(t0, es[2], "poison")
	if !slices.Equal(ds, []Delivery[string]{{Waiter: Waiter{"n", 2}, Addr: addr(2), Kind: KindVerdict, Verdict: "poison"}}) {
		t.Fatalf("fail: %+v", ds)
	}
	if st := p.Stats(); st.Examined != 1 || st.InFlight != 0 || st.Pending != 1 || st.Recent != 3 {
		t.Fatalf("stats %+v", st)
	}
	// A pending entry (never taken) is not completed.
	pending := p.entries[keyOf(addr(3))]
	if ds := p.Complete(t0, pending, "x", true); ds != nil || !p.Live(pending) {
		t.Fatalf("complete of a pending entry: %+v", ds)
	}
	// AppendComplete appends to what it is given.
	es, _ = p.Take(t0, 1)
	dst := []Delivery[string]{{Reason: "first"}}
	dst = p.AppendComplete(dst, t0, es[0], "v", true)
	if len(dst) != 2 || dst[0].Reason != "first" || dst[1].Addr != addr(3) {
		t.Fatalf("append complete: %+v", dst)
	}
	if got := p.AppendComplete(dst, t0, es[0], "v", true); len(got) != 2 {
		t.Fatalf("duplicate append complete: %+v", got)
	}
	if st := p.Stats(); st.Examined != 2 || st.InFlight != 0 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOldest(t *testing.T) {
	p := mustNew(t, cfg())
	if at, ok := p.OldestEnqueued(); ok || at != 0 {
		t.Fatalf("oldest enqueued of an empty pool: %d %v", at, ok)
	}
	if at, ok := p.OldestSeen(); ok || at != 0 {
		t.Fatalf("oldest seen of an empty pool: %d %v", at, ok)
	}
	p.Offer(t0+5*sec, Waiter{"n", 1}, addr(1), t0+2*sec)
	p.Offer(t0+6*sec, Waiter{"n", 2}, addr(2), t0+1*sec)
	if at, ok := p.OldestEnqueued(); !ok || at != t0+5*sec {
		t.Fatalf("oldest enqueued %d %v", at-t0, ok)
	}
	if at, ok := p.OldestSeen(); !ok || at != t0+2*sec { // the head's, not the minimum
		t.Fatalf("oldest seen %d %v", at-t0, ok)
	}
	p.Take(t0+6*sec, 1)
	if at, ok := p.OldestEnqueued(); !ok || at != t0+6*sec {
		t.Fatalf("oldest enqueued after a take %d %v", at-t0, ok)
	}
}

func TestQueueCompaction(t *testing.T) {
	// The consumed head of the queue is released once it is past 4096
	// entries and past half the queue; until then it is kept.
	tests := []struct {
		name  string
		n     int   // addresses queued
		steps []int // after taking this many in total ...
		heads []int // ... head is this (0: compacted)
	}{
		{"half the queue bounds", 10_000, []int{4097, 5000, 5001}, []int{4097, 5000, 0}},
		{"4096 bounds", 8000, []int{3, 4001, 4096, 4097}, []int{3, 4001, 4096, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg()
			c.MaxPending = tt.n
			p := mustNew(t, c)
			fill(t, p, t0, 0, tt.n)
			taken := 0
			for i, step := range tt.steps {
				p.Take(t0, step-taken)
				taken = step
				if p.head != tt.heads[i] || len(p.queue)-p.head != tt.n-taken {
					t.Fatalf("after %d taken: head %d len %d, want head %d", taken, p.head, len(p.queue), tt.heads[i])
				}
			}
			if slices.ContainsFunc(p.queue[len(p.queue):cap(p.queue)], func(e *Entry) bool { return e != nil }) {
				t.Fatal("compaction kept references past the live queue")
			}
			if es, _ := p.Take(t0, 1); len(es) != 1 || es[0].Addr != addr(taken) {
				t.Fatalf("next after compaction: %v, want %v", addrs(es), addr(taken))
			}
		})
	}
}

// The window holds the newest MaxRecent verdicts (pkg/recent tests its
// own bookkeeping).
func TestRecentHoldsNewest(t *testing.T) {
	c := cfg()
	c.MaxRecent = 100
	p := mustNew(t, c)
	for n := range 5000 {
		p.remember(t0, addr(n), "v")
	}
	if st := p.Stats(); st.Recent != 100 {
		t.Fatalf("recent = %d", st.Recent)
	}
	if _, ok := p.lookupRecent(t0, addr(4899)); ok {
		t.Fatal("a dropped verdict is still remembered")
	}
	if v, ok := p.lookupRecent(t0, addr(4900)); !ok || v != "v" {
		t.Fatal("the oldest kept verdict is gone")
	}
}

// With the dedup window or the recent window off, nothing is remembered.
func TestRecentOff(t *testing.T) {
	for _, mod := range []func(*Config){func(c *Config) { c.MaxRecent = 0 }, func(c *Config) { c.DedupWindow = 0 }} {
		c := cfg()
		mod(&c)
		p := mustNew(t, c)
		settle(t, p, t0, addr(1), "a")
		if _, done, _ := p.Offer(t0, Waiter{"x", 1}, addr(1), t0); done {
			t.Fatal("answered from a window that is off")
		}
		p.Sweep(t0)
		if st := p.Stats(); st.Recent != 0 {
			t.Fatalf("recent = %d", st.Recent)
		}
	}
}

func TestRecentBounded(t *testing.T) {
	c := cfg()
	c.MaxRecent = 10
	p := mustNew(t, c)
	for i := 0; i < 50; i++ {
		settle(t, p, t0, addr(i), fmt.Sprint(i))
	}
	p.remember(t0, addr(49), "again") // a repeat takes no second slot
	if st := p.Stats(); st.Recent != 10 {
		t.Fatalf("recent = %d, want 10", st.Recent)
	}
	for i := 38; i < 50; i++ {
		d, done, _ := p.Offer(t0, Waiter{"x", uint64(i)}, addr(i), t0)
		if done != (i >= 40) {
			t.Fatalf("addr %d answered = %v, want the 10 newest answered", i, done)
		}
		want := fmt.Sprint(i)
		if i == 49 {
			want = "again"
		}
		if done && d.Verdict != want {
			t.Fatalf("addr %d: verdict %q, want %q", i, d.Verdict, want)
		}
	}
}

func BenchmarkOfferTakeComplete(b *testing.B) {
	c := cfg()
	c.MaxPending = 1 << 20
	c.MaxRecent = 1 << 16
	p, _ := New[string](c)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0)
		if i%1024 == 1023 {
			es, _ := p.Take(0, 1024)
			for _, e := range es {
				p.Complete(0, e, "v", true)
			}
		}
	}
}
