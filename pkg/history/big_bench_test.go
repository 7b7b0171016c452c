package history_test

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/styx-inference/styx/pkg/history"
)

// BenchmarkLookupFull looks up random addresses in a full table of
// 1,000,000 addresses (half of them held, half not): the cache and TLB
// misses a worker's examination pays, which BenchmarkLookup's small
// table hides.
func BenchmarkLookupFull(b *testing.B) {
	tb := history.New(history.Config{Locate: asnOf})
	rng := rand.New(rand.NewPCG(3, 4))
	held := make([]netip.Addr, 0, history.DefaultMaxAddrs)
	for range history.DefaultMaxAddrs {
		a := netip.AddrFrom4([4]byte{byte(rng.UintN(223) + 1), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		tb.AddVerdict(a, rng.UintN(8) == 0, 1)
		held = append(held, a)
	}
	addrs := make([]netip.Addr, 1<<16)
	for i := range addrs {
		if i%2 == 0 {
			addrs[i] = held[rng.IntN(len(held))]
		} else {
			addrs[i] = netip.AddrFrom4([4]byte{byte(rng.UintN(223) + 1), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		}
	}
	benchLookups(b, tb, addrs)
}
