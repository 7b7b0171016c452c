package pool

import (
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/verdict"
)

// mustNewVerdicts returns a pool of NewVerdicts and its window's table.
func mustNewVerdicts(t *testing.T, c Config) (*Pool[*verdict.Verdict], *verdictTable) {
	t.Helper()
	p, tb, err := newVerdicts(c)
	if err != nil {
		t.Fatal(err)
	}
	return p, tb
}

// settleVerdict is settle for a pool of verdicts.
func settleVerdict(t *testing.T, p *Pool[*verdict.Verdict], now int64, a int, v *verdict.Verdict) {
	t.Helper()
	p.Offer(now, Waiter{"settle", 1}, addr(a), now)
	es, _ := p.Take(now, 1)
	if len(es) != 1 {
		t.Fatalf("settle %d: took %d", a, len(es))
	}
	p.Complete(now, es[0], v, true)
}

// Verdicts as a worker's result brings them (the inference time as the
// decoder makes it), differing from each other in one field at a time,
// and strings that would run together if their lengths were not kept.
var roundTrip = []verdict.Verdict{
	{},
	{Proxy: true},
	{Evidence: []string{}},
	{Evidence: []string{""}},
	{Evidence: []string{"", ""}},
	{Risk: 1},
	{Risk: math.MaxUint32},
	{Port: 1080},
	{Port: math.MaxUint32},
	{Inferred: verdict.UnixNano(1)},
	{Inferred: verdict.UnixNano(-1)},
	{Inferred: verdict.UnixNano(1_700_000_000_123_456_789)},
	{Type: "ab", ModelVersion: "c"},
	{Type: "a", ModelVersion: "bc"},
	{ModelVersion: "a", Error: "b"},
	{Error: "ab"},
	{Type: "a", Evidence: []string{"b"}},
	{Evidence: []string{"ab"}},
	{Evidence: []string{"a", "b"}},
	{Evidence: []string{"b", "a"}},
	{Error: "examination failed on 3 workers: poison address"},
	{Proxy: true, Type: "Anonymizer", Risk: 93, Port: 8080, ModelVersion: "raven-2026.03-s2",
		Evidence: []string{"locdb:anonymous-proxy", "raven:anonymiser=93%", "raven:hostile=2%", "nbr:near-drop"},
		Inferred: verdict.UnixNano(1_700_000_000_000_000_001)},
	{Type: "Hosting", Risk: 33, ModelVersion: "raven-2026.03-s2", Evidence: []string{"locdb:hosting-as", "raven:anonymiser=0%", "raven:hostile=1%"},
		Inferred: verdict.UnixNano(1_700_000_000_000_000_002)},
}

// A verdict answered from the window equals the one completed, for every
// field, and shares no memory with it.
func TestVerdictRoundTrip(t *testing.T) {
	c := cfg()
	c.MaxRecent = len(roundTrip)
	p, tb := mustNewVerdicts(t, c)
	for i := range roundTrip {
		v := roundTrip[i] // a copy: the pool must not depend on the caller's
		settleVerdict(t, p, t0, i, &v)
	}
	// Five differ from the zero verdict only in port or inference time,
	// which are not part of a shape.
	if n := len(tb.index); n != len(roundTrip)-5 {
		t.Errorf("%d shapes for %d verdicts, want %d", n, len(roundTrip), len(roundTrip)-5)
	}
	for i := range roundTrip {
		d, done, _ := p.Offer(t0+sec, Waiter{"x", uint64(i)}, addr(i), t0+sec)
		if !done || d.Kind != KindVerdict || d.Verdict == nil {
			t.Fatalf("verdict %d: %+v, %v", i, d, done)
		}
		if !reflect.DeepEqual(*d.Verdict, roundTrip[i]) {
			t.Errorf("verdict %d: got %#v, want %#v", i, *d.Verdict, roundTrip[i])
		}
		if ev := d.Verdict.Evidence; len(ev) > 0 && &ev[0] == &roundTrip[i].Evidence[0] {
			t.Errorf("verdict %d: evidence shares the completed verdict's list", i)
		}
	}
}

// TestVerdictTableShapes checks that verdicts of one shape share it, that
// a shape is held while a record names it and forgotten after, and that
// its slot is reused.
func TestVerdictTableShapes(t *testing.T) {
	tb := &verdictTable{index: make(map[string]uint32)}
	a := &verdict.Verdict{Type: "Hosting", Evidence: []string{"x"}, Port: 1, Inferred: verdict.UnixNano(5)}
	a2 := &verdict.Verdict{Type: "Hosting", Evidence: []string{"x"}, Port: 2, Inferred: verdict.UnixNano(6)}
	b := &verdict.Verdict{Type: "Hostile"}
	ra, ra2, rb := tb.pack(a), tb.pack(a2), tb.pack(b)
	if ra.shape != ra2.shape || ra.shape == rb.shape {
		t.Fatalf("shapes %d, %d, %d: want the first two shared", ra.shape, ra2.shape, rb.shape)
	}
	if len(tb.shapes) != 2 || tb.shapes[ra.shape].refs != 2 || tb.shapes[rb.shape].refs != 1 {
		t.Fatalf("shapes %+v", tb.shapes)
	}
	tb.release(ra)
	if got := tb.unpack(ra2); !reflect.DeepEqual(got, a2) {
		t.Fatalf("after releasing a sharer: %+v, want %+v", got, a2)
	}
	tb.release(ra2)
	if len(tb.index) != 1 || tb.shapes[ra.shape].v.Type != "" || len(tb.free) != 1 {
		t.Fatalf("a shape no record names is kept: index %v, free %v", tb.index, tb.free)
	}
	c := &verdict.Verdict{Error: "poison"}
	if rc := tb.pack(c); rc.shape != ra.shape || len(tb.shapes) != 2 || len(tb.free) != 0 {
		t.Fatalf("new shape in slot %d of %d (free %v), want the freed slot %d", rc.shape, len(tb.shapes), tb.free, ra.shape)
	} else if got := tb.unpack(rc); !reflect.DeepEqual(got, c) {
		t.Fatalf("reused slot: %+v, want %+v", got, c)
	}
	if got := tb.unpack(rb); !reflect.DeepEqual(got, b) {
		t.Fatalf("%+v, want %+v", got, b)
	}
}

// The table holds only the shapes of the verdicts in the window, however
// many went through it and whichever limit dropped them.
func TestVerdictTableBounded(t *testing.T) {
	c := cfg()
	c.MaxRecent, c.DedupWindow = 4, 100*sec
	p, tb := mustNewVerdicts(t, c)
	now := t0
	for i := range 1000 {
		if i%50 == 0 {
			now += 200 * sec // everything ages out
		}
		settleVerdict(t, p, now, i, &verdict.Verdict{Type: "t", Risk: uint32(i)})
		if st := p.Stats(); len(tb.index) != st.Recent || len(tb.shapes) > c.MaxRecent+1 {
			t.Fatalf("after %d verdicts: %d shapes in %d slots for %d held", i+1, len(tb.index), len(tb.shapes), st.Recent)
		}
	}
	p.Sweep(now + 101*sec)
	st := p.Stats()
	if st.Recent != 0 || len(tb.index) != 0 || st.RecentEvictedAge == 0 || st.RecentEvictedCount == 0 {
		t.Fatalf("stats %+v, %d shapes", st, len(tb.index))
	}
	for i, s := range tb.shapes {
		if s.refs != 0 || s.key != "" || s.v.Type != "" {
			t.Fatalf("slot %d keeps %+v", i, s)
		}
	}
}

// The ledger's verdicts come back from the window as they went in, with
// the inference time in nanoseconds: the same instant, as UnixNano makes
// it.
func TestVerdictInferredTime(t *testing.T) {
	p, _ := mustNewVerdicts(t, cfg())
	at := time.Date(2026, 3, 1, 12, 0, 0, 7, time.UTC)
	settleVerdict(t, p, t0, 1, &verdict.Verdict{Inferred: at})
	d, done, _ := p.Offer(t0, Waiter{"x", 1}, addr(1), t0)
	if !done || !d.Verdict.Inferred.Equal(at) || d.Verdict.Inferred != verdict.UnixNano(at.UnixNano()) {
		t.Fatalf("%+v, %v; want inferred %v", d, done, at)
	}
}
