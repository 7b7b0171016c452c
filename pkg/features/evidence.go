package features

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

// nearLog2 bounds the distances reported as "near" (log2 of 1+distance).
const (
	nearLog2V4 = 10
	nearLog2V6 = 16
)

// Evidence appends to dst the neighbourhood facts that hold for the
// feature vector x (as Extract wrote it) and returns the extended slice.
// It allocates only if dst lacks capacity.
func (ex *Extractor) Evidence(x []float32, dst []string) []string {
	x = x[:Count]
	add := func(cond bool, s string) {
		if cond {
			dst = append(dst, s)
		}
	}
	add(x[ASAnonOthers] > 0, EvASAnon)
	add(x[ASDropOthers] > 0, EvASDrop)
	add(x[WideAnonOthers] > 0, EvWideAnon)
	add(x[WideDropOthers] > 0, EvWideDrop)
	add(x[NarrowAnonOthers] > 0, EvNarrowAnon)
	add(x[NarrowDropOthers] > 0, EvNarrowDrop)
	near := float32(nearLog2V4)
	if x[IsIPv6] == 1 {
		near = nearLog2V6
	}
	add(x[NearAnonLog2] >= 0 && x[NearAnonLog2] <= near, EvNearAnon)
	add(x[NearDropLog2] >= 0 && x[NearDropLog2] <= near, EvNearDrop)
	return dst
}
