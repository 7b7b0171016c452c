package store

import (
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// BenchmarkVerdicts measures the verdict paths of the store over 100,000
// stored verdicts: a query's LookupVerdict (one read and decode), a full
// ScanVerdicts (decoding every value), and a Put of 1,024 newer verdicts
// with an OnVerdicts hook (encode, compare, and the landed copies).
func BenchmarkVerdicts(b *testing.B) {
	const stored = 100_000
	rng := rand.New(rand.NewPCG(1, 2))
	items := make([]Item, stored)
	for i := range items {
		a := netip.AddrFrom4([4]byte{byte(rng.UintN(223) + 1), byte(rng.UintN(256)), byte(rng.UintN(256)), byte(rng.UintN(256))})
		items[i] = Item{Addr: a, Verdict: wireVerdict(i%3 == 0, "VPN", uint32(i%101), t0.Add(time.Duration(i)*time.Millisecond))}
	}
	landed := 0
	s, err := Open(Config{Path: filepath.Join(b.TempDir(), "node.db"), FlushInterval: time.Hour,
		OnVerdicts: func(ls []Landed) { landed += len(ls) }}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for lo := 0; lo < stored; lo += 10_000 {
		if _, err := s.Put(items[lo : lo+10_000]); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("LookupVerdict", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, ok, err := s.LookupVerdict(items[i%stored].Addr); err != nil || !ok {
				b.Fatal(ok, err)
			}
			i++
		}
	})
	b.Run("ScanVerdicts", func(b *testing.B) {
		want := s.Len() // random addresses may repeat
		b.ReportAllocs()
		for b.Loop() {
			n := 0
			err := s.ScanVerdicts(func(time.Time) bool { return true }, func(netip.Addr, verdict.Verdict) { n++ })
			if err != nil || n != want {
				b.Fatal(n, err)
			}
		}
	})
	b.Run("Put", func(b *testing.B) {
		b.ReportAllocs()
		batch := make([]Item, 1024)
		next, at := 0, t0.Add(time.Hour)
		for b.Loop() {
			b.StopTimer()
			at = at.Add(time.Second)
			for j := range batch {
				it := items[next]
				batch[j] = Item{Addr: it.Addr, Verdict: &styxv1.Verdict{Proxy: true, Type: "VPN", Risk: 90, ModelVersion: "m2",
					Evidence: it.Verdict.Evidence, InferredUnixNano: at.UnixNano()}}
				next = (next + 1) % stored
			}
			b.StartTimer()
			if n, err := s.Put(batch); err != nil || n != len(batch) {
				b.Fatal(n, err)
			}
		}
	})
}
