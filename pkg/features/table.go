package features

import "slices"

// table is a read-only hash table from uint64 keys, built once: its
// entries ordered by the top bits of their key's hash, behind an index of
// where each hash's run starts. Runs hold one entry on average, so a
// lookup reads the index and then one entry: two cache misses, where a
// binary search over a million sorted keys takes five or more in a row. It
// costs the sorted arrays' memory plus 4 to 8 bytes a key for the index.
type table[V any] struct {
	shift uint
	start []uint32 // entries of hash h: ents[start[h]:start[h+1]]
	ents  []entry[V]
}

type entry[V any] struct {
	key uint64
	val V
}

func newTable[V any](keys []uint64, vals []V) table[V] {
	bits := 1
	for 1<<bits < len(keys) {
		bits++
	}
	t := table[V]{shift: uint(64 - bits), start: make([]uint32, 1<<bits+1), ents: make([]entry[V], len(keys))}
	for _, k := range keys { // a counting sort by hash, stable
		t.start[t.hash(k)+1]++
	}
	for i := 1; i < len(t.start); i++ {
		t.start[i] += t.start[i-1]
	}
	next := slices.Clone(t.start)
	for i, k := range keys {
		h := t.hash(k)
		t.ents[next[h]] = entry[V]{k, vals[i]}
		next[h]++
	}
	return t
}

// hash is Fibonacci hashing: the top bits of the key times 2^64/φ.
func (t *table[V]) hash(k uint64) uint64 { return (k * 0x9e3779b97f4a7c15) >> t.shift }

// find returns the value of k, nil if there is none.
func (t *table[V]) find(k uint64) *V {
	h := t.hash(k)
	for i := t.start[h]; i < t.start[h+1]; i++ {
		if t.ents[i].key == k {
			return &t.ents[i].val
		}
	}
	return nil
}

// len is the number of keys.
func (t *table[V]) len() int { return len(t.ents) }

// bytes is the table's approximate heap size, given the size of an entry.
func (t *table[V]) bytes(entrySize uintptr) int {
	return len(t.ents)*int(entrySize) + len(t.start)*4
}
