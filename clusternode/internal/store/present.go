package store

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// present is a Bloom filter of the addresses that have a stored verdict.
// The query path asks bbolt only about addresses the filter may hold; an
// address never examined (what a node is asked about first) is answered
// without a read transaction. The filter only grows: bits are set before
// the transaction that stores the verdict commits, so a reader that finds
// the verdict committed also finds its bits. A failed commit leaves bits
// set, and so does a verdict the retention sweep deletes (a filter cannot
// unset one address's bits): either only costs a read, until the next
// start builds the filter from the keys again.
//
// It is sized at open for presentBitsPerKey bits per stored verdict
// (at least presentMinBits, at most presentMaxBits). With 3 probes (each
// a cache miss) that is 0.5% false positives at the size it was built
// for and 5% once the store has grown 2.5 times; the smallest filter
// holds 4 million verdicts at 0.5%. A node that outgrows its filter reads
// bbolt more often until its next start.
type present struct {
	words []atomic.Uint64
	mask  uint64 // bits - 1
}

const (
	presentBitsPerKey = 16
	presentMinBits    = 1 << 26 // 8 MiB
	presentMaxBits    = 1 << 30 // 128 MiB
	presentProbes     = 3
)

// newPresent returns a filter for about keys verdicts.
func newPresent(keys int) *present {
	n := max(uint64(presentMinBits), uint64(keys)*presentBitsPerKey)
	n = min(uint64(presentMaxBits), uint64(1)<<bits.Len64(n-1)) // a power of two
	return &present{words: make([]atomic.Uint64, n/64), mask: n - 1}
}

// probes returns the filter's two hashes of k; probe i is h1 + i·h2.
func probes(k [16]byte) (h1, h2 uint64) {
	a, b := binary.LittleEndian.Uint64(k[:8]), binary.LittleEndian.Uint64(k[8:])
	return mix(a ^ bits.RotateLeft64(b, 31)), mix(b+0x9e3779b97f4a7c15) | 1
}

// mix is the 64-bit finaliser of MurmurHash3.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	return x ^ x>>33
}

func (p *present) add(k [16]byte) {
	h1, h2 := probes(k)
	for i := range uint64(presentProbes) {
		b := (h1 + i*h2) & p.mask
		p.words[b/64].Or(1 << (b % 64))
	}
}

// mayHave is false only when k was never added.
func (p *present) mayHave(k [16]byte) bool {
	h1, h2 := probes(k)
	for i := range uint64(presentProbes) {
		b := (h1 + i*h2) & p.mask
		if p.words[b/64].Load()&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}
