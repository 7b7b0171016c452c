// Package addrsample draws addresses from the location database for load
// generators and benchmarks: networks chosen uniformly, and uniformly
// random addresses inside them. The addresses are data only; nothing here
// dials them.
package addrsample

import (
	"math/rand/v2"
	"net/netip"

	"github.com/styx-inference/styx/pkg/locdb"
)

// Networks picks n networks of db uniformly (reservoir sampling over one
// walk of the tree); fewer when db holds fewer.
func Networks(db *locdb.DB, n int, rng *rand.Rand) []netip.Prefix {
	out := make([]netip.Prefix, 0, n)
	seen := 0
	for nw := range db.Networks() {
		seen++
		if len(out) < n {
			out = append(out, nw.Prefix)
		} else if j := rng.IntN(seen); j < n {
			out[j] = nw.Prefix
		}
	}
	return out
}

// In returns a uniformly random address inside p.
func In(p netip.Prefix, rng *rand.Rand) netip.Addr {
	a := p.Addr()
	if a.Is4() {
		b := a.As4()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		if host := 32 - p.Bits(); host > 0 {
			v |= rng.Uint32() & (1<<host - 1)
		}
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	b := a.As16()
	for bit := p.Bits(); bit < 128; bit++ {
		if rng.IntN(2) == 1 {
			b[bit/8] |= 0x80 >> (bit % 8)
		}
	}
	return netip.AddrFrom16(b)
}
