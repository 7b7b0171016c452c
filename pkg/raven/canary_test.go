package raven

import (
	"net/netip"
	"testing"

	"github.com/styx-inference/styx/pkg/verdict"
)

// fixed answers every address with one type.
type fixed struct{ version, typ string }

func (f fixed) Examine(netip.Addr) verdict.Verdict {
	return verdict.Verdict{Proxy: f.typ != "", Type: f.typ}
}
func (f fixed) ModelVersion() string { return f.version }

func TestCanaryShareAndComparison(t *testing.T) {
	c := NewCanary(fixed{"m1", ""}, fixed{"m2", "VPN"}, 0.25, nil)
	if c.ModelVersion() != "m1" {
		t.Fatalf("version %s", c.ModelVersion())
	}
	const n = 20000
	canary := 0
	for i := range n {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		v := c.Examine(a)
		if v.ModelVersion == "m2" {
			canary++
			if v.Type != "VPN" {
				t.Fatalf("canary verdict %+v", v)
			}
		} else if v.ModelVersion != "" || v.Proxy {
			t.Fatalf("current verdict %+v", v)
		}
		// The same address meets the same model again.
		if again := c.Examine(a); again.ModelVersion != v.ModelVersion {
			t.Fatalf("%s moved between models", a)
		}
	}
	share := float64(canary) / n
	if share < 0.22 || share > 0.28 {
		t.Fatalf("canary share %.3f, want about 0.25", share)
	}
	s := c.Stats()
	if s.Examined != 2*uint64(canary) || s.Differed != s.Examined || s.ByType["->VPN"] != s.Examined {
		t.Fatalf("stats %+v (canary %d)", s, canary)
	}
}

func TestCanaryEdges(t *testing.T) {
	a := netip.MustParseAddr("2001:db8::1")
	if v := NewCanary(fixed{"m1", ""}, fixed{"m2", "VPN"}, 0, nil).Examine(a); v.ModelVersion != "" {
		t.Fatal("share 0 reached the canary")
	}
	if v := NewCanary(fixed{"m1", ""}, fixed{"m2", "VPN"}, 1, nil).Examine(a); v.ModelVersion != "m2" {
		t.Fatal("share 1 missed the canary")
	}
	same := NewCanary(fixed{"m1", "VPN"}, fixed{"m2", "VPN"}, 1, nil)
	same.Examine(a)
	if s := same.Stats(); s.Examined != 1 || s.Differed != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestSwap(t *testing.T) {
	s := NewSwap(fixed{"m1", ""})
	a := netip.MustParseAddr("192.0.2.1")
	if s.ModelVersion() != "m1" || s.Examine(a).Proxy {
		t.Fatal("m1 not served")
	}
	s.Set(fixed{"m2", "VPN"})
	if s.ModelVersion() != "m2" || s.Examine(a).Type != "VPN" || s.Current().ModelVersion() != "m2" {
		t.Fatal("m2 not served after Set")
	}
}
