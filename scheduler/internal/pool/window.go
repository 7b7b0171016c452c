package pool

import "github.com/styx-inference/styx/pkg/recent"

// window is the recent-verdict window as the pool uses it: verdicts of
// type V by address, whatever form they are kept in.
type window[V any] struct {
	get   func(now int64, k addrKey) (V, bool)
	put   func(now int64, k addrKey, v V)
	sweep func(now int64)
	size  func() (int, recent.Evictions)
}

// codec packs verdicts of type V into the records of type R a window
// keeps, and back.
type codec[V, R any] struct {
	// pack returns v's record.
	pack func(v V) R
	// unpack returns the verdict of a record that pack returned, equal
	// to the one packed.
	unpack func(r R) V
	// release is told that the window let go of r.
	release func(r R)
}

// same is the codec that keeps verdicts as they are.
func same[V any]() codec[V, V] {
	return codec[V, V]{
		pack:    func(v V) V { return v },
		unpack:  func(v V) V { return v },
		release: func(V) {},
	}
}

// newWindow returns a window bounded by l that keeps the records c packs
// in a recent.Set.
func newWindow[V, R any](l recent.Limits, c codec[V, R]) (*window[V], error) {
	set, err := recent.New[addrKey, R](l)
	if err != nil {
		return nil, err
	}
	set.OnDrop(func(_ addrKey, r R) { c.release(r) })
	return &window[V]{
		get: func(now int64, k addrKey) (V, bool) {
			if r, ok := set.Get(now, k); ok {
				return c.unpack(r), true
			}
			var none V
			return none, false
		},
		put:   func(now int64, k addrKey, v V) { set.Put(now, k, c.pack(v)) },
		sweep: func(now int64) { set.Sweep(now) },
		size:  func() (int, recent.Evictions) { return set.Len(), set.Evictions() },
	}, nil
}
