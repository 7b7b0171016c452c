package addrsample

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/styx-inference/styx/pkg/locdb"
)

func TestInStaysInside(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range []string{"1.2.3.0/24", "10.0.0.0/8", "1.2.3.4/32", "0.0.0.0/0", "2001:db8::/32", "2001:db8::1/128", "::/0"} {
		p := netip.MustParsePrefix(s)
		for range 200 {
			if a := In(p, rng); !p.Contains(a) {
				t.Fatalf("%s outside %s", a, p)
			}
		}
	}
}

func TestNetworksFromTheDatabase(t *testing.T) {
	db, err := locdb.Open(locdb.Config{Path: locdb.DefaultPath, SkipVerify: true})
	if err != nil {
		t.Skipf("the location database is needed (make deps installs it): %v", err)
	}
	defer db.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	nets := Networks(db, 1000, rng)
	if len(nets) != 1000 {
		t.Fatalf("%d networks, want 1000", len(nets))
	}
	for _, p := range nets {
		a := In(p, rng)
		if n, ok := db.Lookup(a); !ok || !n.Prefix.Contains(a) {
			t.Fatalf("%s from %s: lookup %v %v", a, p, n.Prefix, ok)
		}
	}
}
