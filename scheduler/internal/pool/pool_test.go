package pool

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

const sec = int64(time.Second)

func cfg() Config {
	return Config{MaxPending: 100, MaxAge: 3600 * sec, DedupWindow: 600 * sec, MaxRecent: 1000, MaxWaiters: 4, Policy: Policy{Mode: ShedNewest}}
}

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func mustNew(t *testing.T, c Config) *Pool {
	t.Helper()
	p, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigValidate(t *testing.T) {
	bad := []func(*Config){
		func(c *Config) { c.MaxPending = 0 },
		func(c *Config) { c.MaxAge = 0 },
		func(c *Config) { c.MaxWaiters = 0 },
		func(c *Config) { c.Policy = Policy{Mode: "drop-all"} },
		func(c *Config) { c.Policy = Policy{Mode: ShedSample, SampleN: 1} },
	}
	for i, f := range bad {
		c := cfg()
		f(&c)
		if _, err := New(c); err == nil {
			t.Errorf("case %d: want error", i)
		}
	}
}

func TestDedupAcrossNodesAndResend(t *testing.T) {
	p := mustNew(t, cfg())
	now := 1000 * sec
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
	if got := len(es[0].Waiters); got != 2 {
		t.Fatalf("waiters = %d, want 2 (the re-send joins once)", got)
	}
	ds := p.Complete(now, es[0], "v", true)
	if len(ds) != 2 || ds[0].Kind != KindVerdict {
		t.Fatalf("complete: %+v", ds)
	}
	// A duplicate result changes nothing.
	if ds := p.Complete(now, es[0], "v", true); ds != nil {
		t.Fatalf("duplicate complete delivered %v", ds)
	}
	// Within the dedup window the verdict answers at once.
	d, done, _ := p.Offer(now+sec, Waiter{"n3", 1}, a, now+sec)
	if !done || d.Kind != KindVerdict || d.Verdict != "v" {
		t.Fatalf("recent: %+v %v", d, done)
	}
	st := p.Stats()
	if st.Received != 4 || st.Unique != 1 || st.Examined != 1 || st.Deduplicated != 3 {
		t.Fatalf("stats %+v", st)
	}
	// After the window it is examined again.
	p.Sweep(now + 601*sec)
	if _, done, _ := p.Offer(now+602*sec, Waiter{"n3", 2}, a, now+602*sec); done {
		t.Fatal("verdict reused after the dedup window")
	}
}

func TestShedNewestAndOldest(t *testing.T) {
	for _, mode := range []string{ShedNewest, ShedOldest} {
		t.Run(mode, func(t *testing.T) {
			c := cfg()
			c.MaxPending, c.Policy = 3, Policy{Mode: mode}
			p := mustNew(t, c)
			for i := 0; i < 3; i++ {
				p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0)
			}
			d, done, evicted := p.Offer(0, Waiter{"n", 3}, addr(3), 0)
			switch mode {
			case ShedNewest:
				if !done || d.Kind != KindShed || d.Waiter.ID != 3 {
					t.Fatalf("newest: %+v %v", d, done)
				}
			case ShedOldest:
				if done || len(evicted) != 1 || evicted[0].Waiter.ID != 0 || evicted[0].Kind != KindShed {
					t.Fatalf("oldest: %+v %v %+v", d, done, evicted)
				}
			}
			if p.Pending() != 3 {
				t.Fatalf("pending %d, want bounded at 3", p.Pending())
			}
		})
	}
}

func TestShedSampleAdmitsOneInN(t *testing.T) {
	c := cfg()
	c.MaxPending, c.Policy = 1_000_000, Policy{Mode: ShedSample, SampleN: 5}
	p := mustNew(t, c)
	for i := 0; i < c.MaxPending/2; i++ { // fill to the high-water mark
		p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0)
	}
	admitted, shed := 0, 0
	for i := c.MaxPending / 2; i < c.MaxPending/2+100_000; i++ {
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
}

func TestExpiry(t *testing.T) {
	p := mustNew(t, cfg())
	// Too old on arrival.
	if d, done, _ := p.Offer(4000*sec, Waiter{"n", 1}, addr(1), 100*sec); !done || d.Kind != KindExpired {
		t.Fatalf("old on arrival: %+v", d)
	}
	p.Offer(10*sec, Waiter{"n", 2}, addr(2), 10*sec)
	p.Offer(20*sec, Waiter{"n", 3}, addr(3), 20*sec)
	ds := p.Sweep(3615 * sec)
	if len(ds) != 1 || ds[0].Waiter.ID != 2 || ds[0].Kind != KindExpired {
		t.Fatalf("sweep: %+v", ds)
	}
	es, dead := p.Take(3625*sec, 10)
	if len(es) != 0 || len(dead) != 1 || dead[0].Waiter.ID != 3 {
		t.Fatalf("take after max age: %d %+v", len(es), dead)
	}
	if st := p.Stats(); st.Expired != 3 || st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRequeueGoesFirstAndExpiresInFlight(t *testing.T) {
	p := mustNew(t, cfg())
	for i := 0; i < 5; i++ {
		p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0)
	}
	es, _ := p.Take(0, 2)
	if ds := p.Requeue(sec, es); len(ds) != 0 {
		t.Fatal(ds)
	}
	again, _ := p.Take(sec, 5)
	var got []string
	for _, e := range again {
		got = append(got, e.Addr.String())
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{addr(0).String(), addr(1).String(), addr(2).String(), addr(3).String(), addr(4).String()}) {
		t.Fatalf("order after requeue: %v", got)
	}
	ds, ok := p.ExpireInFlight(3601*sec, again[0])
	if !ok || len(ds) != 1 || ds[0].Kind != KindExpired {
		t.Fatalf("expire in flight: %v %+v", ok, ds)
	}
	if p.Live(again[0]) {
		t.Fatal("expired entry still live")
	}
}

func TestMaxWaiters(t *testing.T) {
	p := mustNew(t, cfg())
	for i := 0; i < 4; i++ {
		p.Offer(0, Waiter{fmt.Sprint("n", i), 1}, addr(1), 0)
	}
	if d, done, _ := p.Offer(0, Waiter{"n9", 1}, addr(1), 0); !done || d.Kind != KindShed {
		t.Fatalf("fifth waiter: %+v", d)
	}
}

func TestRecentBounded(t *testing.T) {
	c := cfg()
	c.MaxRecent = 10
	p := mustNew(t, c)
	for i := 0; i < 50; i++ {
		p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0)
		es, _ := p.Take(0, 1)
		p.Complete(0, es[0], i, true)
	}
	if st := p.Stats(); st.Recent != 10 {
		t.Fatalf("recent = %d, want 10", st.Recent)
	}
}

func BenchmarkOfferTakeComplete(b *testing.B) {
	c := cfg()
	c.MaxPending = 1 << 20
	c.MaxRecent = 1 << 16
	p, _ := New(c)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Offer(0, Waiter{"n", uint64(i)}, addr(i), 0)
		if i%1024 == 1023 {
			es, _ := p.Take(0, 1024)
			for _, e := range es {
				p.Complete(0, e, nil, true)
			}
		}
	}
}
