package store

import (
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// The filter never loses a key, and its false positives stay near the
// Bloom filter's estimate at its sizing (16 bits per key, 3 probes).
func TestPresentNoFalseNegatives(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct{ keys, bits uint64 }{
		{0, presentMinBits}, {1 << 20, presentMinBits}, {1<<22 + 1, 1 << 27}, {1 << 28, presentMaxBits},
	} {
		if got := uint64(len(newPresent(int(c.keys)).words)) * 64; got != c.bits {
			t.Fatalf("filter for %d keys has %d bits, want %d", c.keys, got, c.bits)
		}
	}
	// A small filter at the same load as a full-size one: 16 bits a key.
	const keys = 1 << 18
	p := &present{words: make([]atomic.Uint64, keys*presentBitsPerKey/64), mask: keys*presentBitsPerKey - 1}
	added := make(map[[16]byte]bool, keys)
	for len(added) < keys {
		var k [16]byte
		for i := range k {
			k[i] = byte(rng.Uint32())
		}
		added[k] = true
		p.add(k)
	}
	for k := range added {
		if !p.mayHave(k) {
			t.Fatalf("added key %x missing", k)
		}
	}
	fp := 0
	const tries = 200_000
	for range tries {
		// IPv4-mapped keys, as most of a node's are.
		k := netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())}).As16()
		if !added[k] && p.mayHave(k) {
			fp++
		}
	}
	// 16 bits per key and 3 probes: about 0.5%.
	if rate := float64(fp) / tries; rate > 0.01 {
		t.Fatalf("false positive rate %.4f, want under 0.01", rate)
	}
}

// LookupVerdict reads bbolt only for addresses that may have a verdict:
// every stored one (from Put and from the log, before and after a
// reopen) is found, and absent ones rarely cost a read.
func TestLookupSkipsAbsentAddresses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.db")
	s := open(t, path)
	var stored []netip.Addr
	var items []Item
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)})
		items = append(items, Item{a, wireVerdict(i%2 == 0, "VPN", 50, t0)})
		stored = append(stored, a)
	}
	if _, err := s.Put(items[:500]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ApplyLog(testStream, 1, items[500:], nil); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		r0 := s.verdictReads.Load()
		for _, a := range stored {
			if _, ok, err := s.LookupVerdict(a); err != nil || !ok {
				t.Fatalf("stored verdict of %s not found (%v)", a, err)
			}
		}
		if got := s.verdictReads.Load() - r0; got != uint64(len(stored)) {
			t.Fatalf("%d reads for %d stored addresses", got, len(stored))
		}
		r0 = s.verdictReads.Load()
		const absent = 10_000
		for i := range absent {
			a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 12: byte(i >> 24), 13: byte(i >> 16), 14: byte(i >> 8), 15: byte(i)})
			if _, ok, err := s.LookupVerdict(a); err != nil || ok {
				t.Fatalf("absent %s: found %v, err %v", a, ok, err)
			}
		}
		if got := s.verdictReads.Load() - r0; got > absent/100 {
			t.Fatalf("%d of %d absent addresses read bbolt", got, absent)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path) // the filter is rebuilt from the file
	defer s.Close()
	check(s)
}
