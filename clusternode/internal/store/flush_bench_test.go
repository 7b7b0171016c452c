package store

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// BenchmarkFlush measures the last-seen flush as the node query benchmark
// drives it: 100,000 addresses already stored, then one flush of the
// touches that arrived meanwhile (each at a later time). The cost per
// touch falls as a flush holds more of them, since random keys rewrite
// most of the bucket's pages whatever their number. cpu-ns/touch is the
// process's CPU time during the flushes (the wall time includes waiting
// for fsync).
func BenchmarkFlush(b *testing.B) {
	const stored = 100_000
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := make([]netip.Addr, stored)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{byte(rng.UintN(223) + 1), byte(rng.UintN(256)), byte(rng.UintN(256)), byte(rng.UintN(256))})
	}
	for _, n := range []int{5_000, 20_000, 100_000} {
		b.Run(fmt.Sprintf("touches=%d", n), func(b *testing.B) {
			s, err := Open(Config{Path: filepath.Join(b.TempDir(), "node.db"), TouchMax: stored, FlushInterval: time.Hour}, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			t := t0
			for _, a := range addrs {
				s.Touch(a, t)
			}
			if err := s.Flush(); err != nil {
				b.Fatal(err)
			}
			next := 0
			var cpu time.Duration
			b.ReportAllocs()
			for b.Loop() {
				b.StopTimer()
				t = t.Add(time.Second)
				for range n {
					s.Touch(addrs[next], t)
					next = (next + 1) % stored
				}
				b.StartTimer()
				c0 := processCPU()
				if err := s.Flush(); err != nil {
					b.Fatal(err)
				}
				cpu += processCPU() - c0
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/touch")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N*n), "cpu-ns/touch")
		})
	}
}

// processCPU is the CPU time this process has used (all threads, user and
// system): the flush's cost without the time it waits for the disk.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
