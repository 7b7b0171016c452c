package coordinator

import (
	"net/netip"
	"testing"

	"github.com/styx-inference/styx/pkg/attacks"
)

// The recent keys are a bounded FIFO: the oldest key goes first.
func TestRecentAttacksBounded(t *testing.T) {
	r := recentAttacks{max: 3}
	key := func(i int) attacks.Key {
		return attacks.Key{Addr: netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), UnixNano: int64(i), Kind: attacks.KindLogin, Reporter: "n1"}
	}
	for i := range 5 {
		r.add(key(i))
	}
	for i, want := range []bool{false, false, true, true, true} {
		if r.seen(key(i)) != want {
			t.Fatalf("key %d seen %v, want %v", i, !want, want)
		}
	}
	if len(r.set) != 3 || len(r.fifo) != 3 {
		t.Fatalf("set %d, fifo %d", len(r.set), len(r.fifo))
	}
}
