package api

import (
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/addrsample"
	"github.com/styx-inference/styx/pkg/locdb/locdbtest"
	"github.com/styx-inference/styx/pkg/raven"
)

// BenchmarkQuery measures the query handler alone, without HTTP or a
// network: GET /v2/{ip}?vpn=1&asn=1 over 10,000 addresses of the real
// location database, answered by the rule engine (no stored verdicts), so
// that what the handler itself costs shows in a profile
// (-cpuprofile). BenchmarkNodeQuery in ./integration/ measures the whole
// node, with a model, under wrk.
func BenchmarkQuery(b *testing.B) {
	db := locdbtest.OpenInstalled(b)
	rng := rand.New(rand.NewPCG(1, 2))
	var targets []string
	for _, p := range addrsample.Networks(db, 10_000, rng) {
		targets = append(targets, "/v2/"+addrsample.In(p, rng).String()+"?vpn=1&asn=1")
	}
	st, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "node.db")}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	a, err := New(Config{
		NodeID: "bench", Store: st, Locator: db, Engine: raven.NewSwap(raven.NewRule(db)),
		Sighted: func(netip.Addr, time.Time) {}, MaxAddresses: 1, MaxBody: 1024,
	}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	reqs := make([]*http.Request, len(targets))
	for i, t := range targets {
		reqs[i] = httptest.NewRequest("GET", t, nil)
	}
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		clear(w.h)
		a.ServeHTTP(w, reqs[i])
		i = (i + 1) % len(reqs)
	}
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(int)             {}
