package raven_test

import (
	"bytes"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/features"
	"github.com/styx-inference/styx/pkg/features/featurestest"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/model"
	"github.com/styx-inference/styx/pkg/modelengine"
	"github.com/styx-inference/styx/pkg/raven"
)

// synthHistory folds, for every network of db, verdicts on a few
// addresses after its first one (proxy when the network is flagged) and
// an attack report on the second address of every drop network.
func synthHistory(tb testing.TB, db *locdb.DB) *history.Table {
	tb.Helper()
	h := history.New(history.Config{Locate: locdb.ASNOf(db.Lookup)})
	at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for n := range db.Networks() {
		a := n.Prefix.Addr()
		flagged := n.Flags.AnonymousProxy() || n.Flags.Drop()
		for range 3 {
			a = a.Next()
			if !n.Prefix.Contains(a) {
				break
			}
			h.AddVerdict(a, flagged, at.UnixNano())
		}
		if n.Flags.Drop() {
			h.AddAttack(attacks.Report{Addr: n.Prefix.Addr().Next(), Time: at, Kind: attacks.KindProbe, Reporter: "n1"})
		}
	}
	return h
}

func encode(tb testing.TB, m *model.Model) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := m.Encode(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// schemaEngines loads a schema 1 and a schema 2 artifact through one
// modelengine.Loader, as a worker does.
func schemaEngines(tb testing.TB) (e1, e2 *raven.Model, db *locdb.DB, h *history.Table) {
	tb.Helper()
	db = featurestest.Open(tb, 200, 11)
	h = synthHistory(tb, db)
	l := modelengine.New(db, h)
	for i, schema := range []int{features.SchemaVersion, features.SchemaHistory} {
		e, err := l.Load(encode(tb, trainTinySchema(tb, db, schema, h)))
		if err != nil {
			tb.Fatalf("schema %d: %v", schema, err)
		}
		if i == 0 {
			e1 = e.(*raven.Model)
		} else {
			e2 = e.(*raven.Model)
		}
	}
	return e1, e2, db, h
}

// The loader runs schema 1 and schema 2 artifacts side by side; the
// schema 2 engine reads the history and names it in its evidence, without
// allocating.
func TestModelEngineSchema2(t *testing.T) {
	e1, e2, db, _ := schemaEngines(t)
	if e1.ModelVersion() != "raven-test-1" || e2.ModelVersion() != "raven-test-2" {
		t.Fatalf("versions %s, %s", e1.ModelVersion(), e2.ModelVersion())
	}
	attacked := 0
	for n := range db.Networks() {
		a := n.Prefix.Addr().Next()
		if !n.Prefix.Contains(a) {
			continue
		}
		v := e2.Examine(a)
		has := slices.Contains(v.Evidence, features.EvHistAttacked)
		if has != n.Flags.Drop() {
			t.Fatalf("%s (drop %v): evidence %q", a, n.Flags.Drop(), v.Evidence)
		}
		if has {
			attacked++
		}
		if slices.ContainsFunc(e1.Examine(a).Evidence, func(s string) bool { return s == features.EvHistAttacked }) {
			t.Fatalf("%s: the schema 1 engine names the history", a)
		}
	}
	if attacked == 0 {
		t.Fatal("no attacked address in the fixture")
	}
	a := netip.MustParseAddr("11.0.3.9")
	if n := testing.AllocsPerRun(200, func() { e2.Examine(a) }); n != 0 {
		t.Fatalf("schema 2 Examine allocates %v times", n)
	}
	// A schema the build does not speak is refused.
	m := trainTinySchema(t, db, features.SchemaVersion, nil)
	m.SchemaVersion = 3
	if _, err := modelengine.New(db, nil).Load(encode(t, m)); err == nil {
		t.Fatal("schema 3 loaded")
	}
}

// BenchmarkModelEngineSchemas reports Examine for a schema 1 and a schema
// 2 model in the same run, on the fixture database with a history of
// three verdicts per network: the cost of the history block.
func BenchmarkModelEngineSchemas(b *testing.B) {
	e1, e2, db, _ := schemaEngines(b)
	var addrs []netip.Addr
	for n := range db.Networks() {
		addrs = append(addrs, n.Prefix.Addr(), n.Prefix.Addr().Next())
	}
	for _, bc := range []struct {
		name string
		e    *raven.Model
	}{{"Schema1", e1}, {"Schema2", e2}} {
		b.Run("Examine"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			cpu := cpuTime()
			for b.Loop() {
				bc.e.Examine(addrs[i%len(addrs)])
				i++
			}
			if cpu := cpuTime() - cpu; cpu > 0 {
				b.ReportMetric(float64(b.N)/cpu.Seconds(), "verdicts/cpu-s")
			}
		})
	}
}

// realEngine2 is the engine over the schema 2 artifact STYX_RAVEN_MODEL2
// names, on db with the schema 1 extractor ex and a full history table
// (realHistory); nil without the variable.
func realEngine2(tb testing.TB, db *locdb.DB, ex *features.Extractor) *raven.Model {
	tb.Helper()
	path := os.Getenv("STYX_RAVEN_MODEL2")
	if path == "" {
		return nil
	}
	m, err := model.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	e, err := raven.NewModel(m, features.NewHistoryExtractor(ex, realHistory(db)))
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// realHistory is a history table at its default bound (1,000,000
// addresses): a verdict on the first two addresses of every network of
// db (a proxy when it is flagged), and an attack report on the first
// address of every 7th, folded in database order, so the oldest are
// evicted.
func realHistory(db *locdb.DB) *history.Table {
	h := history.New(history.Config{Locate: locdb.ASNOf(db.Lookup)})
	at := time.Date(2022, 10, 1, 0, 0, 0, 0, time.UTC)
	k := 0
	for n := range db.Networks() {
		flagged := n.Flags.AnonymousProxy() || n.Flags.Drop()
		a := n.Prefix.Addr()
		h.AddVerdict(a, flagged, at.UnixNano())
		h.AddVerdict(a.Next(), flagged, at.UnixNano())
		if k++; k%7 == 0 {
			h.AddAttack(attacks.Report{Addr: a, Time: at, Kind: attacks.KindLogin, Reporter: "bench"})
		}
	}
	return h
}
