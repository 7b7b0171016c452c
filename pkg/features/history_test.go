package features_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/history"
)

func TestSchemas(t *testing.T) {
	if err := features.Compatible(features.SchemaVersion, features.Names()); err != nil {
		t.Fatal(err)
	}
	n2 := features.NamesOf(features.SchemaHistory)
	if err := features.Compatible(features.SchemaHistory, n2); err != nil {
		t.Fatal(err)
	}
	if len(n2) != features.CountHistory || !slices.Equal(n2[:features.Count], features.Names()) {
		t.Fatalf("schema 2 does not extend schema 1: %q", n2)
	}
	for i, n := range n2 {
		if n == "" || features.Description(i) == "" {
			t.Fatalf("feature %d lacks a name or a description", i)
		}
	}
	for _, c := range []struct {
		v     int
		names []string
	}{{features.SchemaHistory, features.Names()}, {features.SchemaVersion, n2}, {3, n2}} {
		if err := features.Compatible(c.v, c.names); err == nil {
			t.Fatalf("schema %d with %d names accepted", c.v, len(c.names))
		}
	}
}

type fixedHistory history.Stats

func (f fixedHistory) Lookup(netip.Addr, uint32) history.Stats { return history.Stats(f) }

func TestHistoryExtractor(t *testing.T) {
	db := featurestest.Open(t, 40, 3)
	ex, err := features.NewExtractor(db)
	if err != nil {
		t.Fatal(err)
	}
	var a netip.Addr
	for n := range db.Networks() {
		a = n.Prefix.Addr()
		break
	}
	x1 := make([]float32, features.Count)
	ex.Extract(a, x1)
	x := make([]float32, features.CountHistory)

	// No history: schema 1's features, then zeros.
	hx := features.NewHistoryExtractor(ex, nil)
	if _, ok := hx.Extract(a, x); !ok || !slices.Equal(x[:features.Count], x1) || slices.ContainsFunc(x[features.Count:], func(v float32) bool { return v != 0 }) {
		t.Fatalf("no history: %v", x)
	}
	day := int64(24 * 3600 * 1e9)
	hx = features.NewHistoryExtractor(ex, fixedHistory{
		Attacks: 3, Kinds: 2, LastAttack: 10 * day, Clock: 13 * day,
		Bucket: history.Counts{Verdicts: 8, Proxies: 5, Attacks: 4}, AS: history.Counts{Verdicts: 18, Proxies: 1, Attacks: 7},
	})
	hx.Extract(a, x)
	want := []float32{3, 2, 0.25, 8, 0.5, 4, 18, 0.05, 7}
	if !slices.Equal(x[features.Count:], want) {
		t.Fatalf("history block %v, want %v", x[features.Count:], want)
	}
	var ev []string
	f := hx.Facts(x)
	for i := 0; hx.Fact(i) != ""; i++ {
		if f&(1<<i) != 0 {
			ev = append(ev, hx.Fact(i))
		}
	}
	for _, e := range []string{features.EvHistAttacked, features.EvHistBucketProxies, features.EvHistBucketAttacks} {
		if !slices.Contains(ev, e) {
			t.Fatalf("facts %q lack %s", ev, e)
		}
	}
	// No network: every feature missing.
	if _, ok := hx.Extract(netip.MustParseAddr("192.0.2.1"), x); ok || x[features.HistASAttacks] != features.Missing {
		t.Fatalf("no network: %v", x)
	}
	if n := testing.AllocsPerRun(100, func() { hx.Extract(a, x) }); n != 0 {
		t.Fatalf("Extract allocates %v times", n)
	}
}
