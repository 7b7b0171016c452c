package features

import "math/bits"

// Evidence strings: the neighbourhood facts an engine reports beside its
// verdict. They are static, so reporting them does not allocate.
const (
	EvASAnon     = "nbr:as-anonymous-proxy"     // other networks of the AS are flagged anonymous proxy
	EvASDrop     = "nbr:as-drop"                // other networks of the AS are flagged drop
	EvWideAnon   = "nbr:wide-anonymous-proxy"   // ... of the same IPv4 /16 or IPv6 /32
	EvWideDrop   = "nbr:wide-drop"              //
	EvNarrowAnon = "nbr:narrow-anonymous-proxy" // ... of the same IPv4 /24 or IPv6 /48
	EvNarrowDrop = "nbr:narrow-drop"            //
	EvNearAnon   = "nbr:near-anonymous-proxy"   // an anonymous-proxy network starts within 1,024 IPv4 addresses (IPv6: 65,536 /64s)
	EvNearDrop   = "nbr:near-drop"              // the same for drop
)

// facts are the evidence strings in the order of Facts' bits.
var facts = [...]string{EvASAnon, EvASDrop, EvWideAnon, EvWideDrop, EvNarrowAnon, EvNarrowDrop, EvNearAnon, EvNearDrop}

// nearLog2 bounds the distances reported as "near" (log2 of 1+distance).
const (
	nearLog2V4 = 10
	nearLog2V6 = 16
)

// Facts returns the neighbourhood facts that hold for the feature vector x
// (as Extract wrote it) as a bit set: bit i is Fact(i).
func (ex *Extractor) Facts(x []float32) uint32 {
	x = x[:Count]
	near := float32(nearLog2V4)
	if x[IsIPv6] == 1 {
		near = nearLog2V6
	}
	return bit(x[ASAnonOthers] > 0, 0) | bit(x[ASDropOthers] > 0, 1) |
		bit(x[WideAnonOthers] > 0, 2) | bit(x[WideDropOthers] > 0, 3) |
		bit(x[NarrowAnonOthers] > 0, 4) | bit(x[NarrowDropOthers] > 0, 5) |
		bit(x[NearAnonLog2] >= 0 && x[NearAnonLog2] <= near, 6) |
		bit(x[NearDropLog2] >= 0 && x[NearDropLog2] <= near, 7)
}

func bit(cond bool, i int) uint32 {
	if cond {
		return 1 << i
	}
	return 0
}

// Fact is the evidence string of Facts' bit i (EvASAnon, ...), "" past
// the last.
func (ex *Extractor) Fact(i int) string {
	if i < 0 || i >= len(facts) {
		return ""
	}
	return facts[i]
}

// Evidence appends to dst the neighbourhood facts that hold for the
// feature vector x (as Extract wrote it) and returns the extended slice.
// It allocates only if dst lacks capacity.
func (ex *Extractor) Evidence(x []float32, dst []string) []string {
	for f := ex.Facts(x); f != 0; f &= f - 1 {
		dst = append(dst, facts[bits.TrailingZeros32(f)])
	}
	return dst
}

// Hosting reports whether x (as Extract wrote it) is of a network whose AS
// name looks like a hosting provider's (raven.HostingName).
func (ex *Extractor) Hosting(x []float32) bool { return x[ASHostingName] == 1 }
