package store

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkSweep measures one retention sweep of a store holding 200,000
// verdicts and their last-seen times: a sweep that finds nothing to
// delete (what every minute costs at rest), and one that deletes a tenth
// of them. The scan reads only the time at the head of most verdicts.
func BenchmarkSweep(b *testing.B) {
	const stored = 200_000
	for _, expired := range []int{0, stored / 10} {
		b.Run(fmt.Sprintf("expired=%d", expired), func(b *testing.B) {
			s, err := Open(Config{Path: filepath.Join(b.TempDir(), "node.db"), Retention: Retention{Clean: time.Hour, Proxy: 720 * time.Hour}}, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := t0.Add(1000 * time.Hour)
			next := uint32(0)
			// fill stores n clean verdicts of new addresses (scattered
			// over the key space), inferred and last seen age ago.
			fill := func(n int, age time.Duration) {
				items := make([]Item, n)
				for i := range items {
					next++
					var k [4]byte
					binary.BigEndian.PutUint32(k[:], next*2654435761) // a bijection: distinct, scattered
					items[i] = Item{netip.AddrFrom4(k), wireVerdict(false, "", 5, now.Add(-age))}
					s.Touch(items[i].Addr, now.Add(-age))
				}
				for lo := 0; lo < len(items); lo += 4096 {
					if _, err := s.Put(items[lo:min(lo+4096, len(items))]); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			fill(stored-expired, 30*time.Minute)
			var took time.Duration
			for b.Loop() {
				b.StopTimer()
				fill(expired, 2*time.Hour)
				b.StartTimer()
				start := time.Now()
				e, err := s.Sweep(now)
				took += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if e.Clean != uint64(expired) || e.Seen != uint64(expired) {
					b.Fatalf("swept %+v, want %d verdicts and last-seen times", e, expired)
				}
			}
			b.ReportMetric(took.Seconds()*1000/float64(b.N), "ms/sweep")
		})
	}
}
