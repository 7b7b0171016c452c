// Package verdict is the one type of a Raven verdict, from the worker's
// engine through the scheduler to the node's store. Conversions to and
// from the wire live at the edges (pkg/columns), never here.
package verdict

import "time"

// Verdict is what post-processing concluded about one address. The
// address itself travels beside it (a batch's addresses, a store's key).
type Verdict struct {
	Proxy bool
	// Type names the kind of proxy ("VPN", "SOCKS5", ...); "" when nothing
	// was found.
	Type string
	// Risk is 0..100.
	Risk uint32
	// Port is the open-proxy port an evidence plugin confirmed, 0 if none.
	Port uint32
	// ModelVersion names the model that made the verdict.
	ModelVersion string
	// Evidence lists the signals used, e.g. "locdb:anonymous-proxy". It may
	// be shared between verdicts (engines hand out cached lists): never
	// modify it; append only to a copy.
	Evidence []string
	// Error is set when the address could not be examined (a poison
	// address); the other fields are then meaningless.
	Error string
	// Inferred is when inference produced the verdict (zero: unknown).
	Inferred time.Time
}

// InferredUnixNano returns Inferred in Unix nanoseconds, 0 when zero.
func (v *Verdict) InferredUnixNano() int64 { return UnixNanoOf(v.Inferred) }

// UnixNano returns the time of ns Unix nanoseconds, the zero time for 0:
// the inverse of InferredUnixNano.
func UnixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// UnixNanoOf returns t in Unix nanoseconds, 0 for the zero time: the
// inverse of UnixNano, for a time that travels without its verdict (the
// inference time a store scan filters on).
func UnixNanoOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
