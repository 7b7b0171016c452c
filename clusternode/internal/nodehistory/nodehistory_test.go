package nodehistory

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/history"
	"github.com/styx-inference/styx/pkg/locdb"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

// asnOf gives every /16 its own AS.
func asnOf(a netip.Addr) uint32 { b := a.As4(); return 64500 + uint32(b[1]) }

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func openStore(tb testing.TB, hooks ...*Folder) *store.Store {
	tb.Helper()
	cfg := store.Config{Path: filepath.Join(tb.TempDir(), "node.db")}
	for _, f := range hooks {
		cfg.OnVerdicts, cfg.OnAttacks = f.Landed, f.Attacked
	}
	s, err := store.Open(cfg, zerolog.Nop())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// fillStore writes n verdicts (one in three a proxy, inferred one second
// apart, in an order unrelated to their addresses) and an attack report
// against every tenth address.
func fillStore(tb testing.TB, s *store.Store, n int) {
	tb.Helper()
	const batch = 10_000
	for lo := 0; lo < n; lo += batch {
		var items []store.Item
		var rs []attacks.Report
		for i := lo; i < min(n, lo+batch); i++ {
			j := (i * 7919) % n // a permutation when n is not a multiple of 7919
			a := addr(j)
			at := t0.Add(time.Duration(i) * time.Second)
			items = append(items, store.Item{Addr: a, Verdict: &styxv1.Verdict{Proxy: j%3 == 0, InferredUnixNano: at.UnixNano()}})
			if j%10 == 0 {
				rs = append(rs, attacks.Report{Addr: a, Time: at, Kind: attacks.KindProbe, Reporter: "node-1"})
			}
		}
		if _, _, err := s.ApplyLog("STYX_PROXY", uint64(lo+1), items, rs); err != nil {
			tb.Fatal(err)
		}
	}
}

// Fill from a store gives the table the hooks built as the events landed,
// when it holds them all; with a bound it keeps the newest.
func TestFillEqualsFolding(t *testing.T) {
	live := history.New(history.Config{Locate: asnOf})
	s := openStore(t, New(live))
	fillStore(t, s, 3000)

	filled := history.New(history.Config{Locate: asnOf})
	st, err := Fill(filled, s, history.DefaultMaxAddrs)
	if err != nil {
		t.Fatal(err)
	}
	if st != (FillStats{Verdicts: 3000, Attacked: 300}) {
		t.Fatalf("fill %+v", st)
	}
	for i := range 3000 + 256 {
		a := addr(i)
		if got, want := filled.Lookup(a, asnOf(a)), live.Lookup(a, asnOf(a)); got != want {
			t.Fatalf("%s: filled %+v, folded live %+v", a, got, want)
		}
	}
	lz, fz := live.Sizes(), filled.Sizes()
	if lz.Addrs != fz.Addrs || lz.Buckets != fz.Buckets || lz.ASes != fz.ASes || !lz.Clock.Equal(fz.Clock) {
		t.Fatalf("sizes: filled %+v, live %+v", fz, lz)
	}

	small := history.New(history.Config{MaxAddrs: 100, Locate: asnOf})
	st, err = Fill(small, s, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.Verdicts != 100 || st.Attacked != 100 || st.Skipped != 3000+300-200 || small.Sizes().Addrs != 100 {
		t.Fatalf("bounded fill %+v, %+v", st, small.Sizes())
	}
	// The verdicts inferred last (i = 2900..2999) are the newest events.
	for i := 2900; i < 3000; i++ {
		if _, ok := small.Entry(addr((i * 7919) % 3000)); !ok {
			t.Fatalf("verdict %d not held", i)
		}
	}
}

// BenchmarkFill measures the node's start-up fill: N stored verdicts (and
// an attack history for every tenth address) read from bbolt and folded,
// with ASes from the installed location database when there is one.
func BenchmarkFill(b *testing.B) {
	locate := asnOf
	if db, err := locdb.Open(locdb.Config{Path: "/var/lib/location/database.db", SkipVerify: true}); err == nil {
		defer db.Close()
		locate = locdb.ASNOf(db.Lookup)
	} else if !os.IsNotExist(err) {
		b.Logf("location database: %v (synthetic ASes)", err)
	}
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("verdicts=%d", n), func(b *testing.B) {
			s := openStore(b)
			fillStore(b, s, n)
			b.ResetTimer()
			for b.Loop() {
				t := history.New(history.Config{Locate: locate})
				if _, err := Fill(t, s, history.DefaultMaxAddrs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "verdicts/s")
		})
	}
}
