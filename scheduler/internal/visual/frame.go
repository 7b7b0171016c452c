package visual

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
)

// The frames are compact JSON objects; the page's app.js reads them.
//
// A full frame ("full":1) carries the whole Model:
//
//	{"full":1,"self":"s1","lead":true,"term":7,"leader":"s1","lhttp":"127.0.0.1:7080",
//	 "p":[pending,in_flight,oldest_ms,received,examined,deduplicated,shed,expired,reassigned,verdicts,proxies],
//	 "cov":0.998,"pol":"sample 1/5","r":[sightings_s,verdicts_s,proxies_h],
//	 "ws":[worker...],"nodes":[["n1",lag,lag_s,flags]...]}
//
// where a node's lag is in messages and seconds behind the verdict log, and
// its flags are 1 stalled, 2 not connected to the log, 4 not reported yet;
// and a worker is
//
//	{"k":slot,"id":"w1","h":"host-a","n":0,"c":"0-3","cores":4,"cap":8,"cr":6,"if":2,"b":batches,"r":addrs_s,"m":"model","s":"ready"}
//
// A delta frame carries only what changed since the frame the stream sent
// before: "p", "cov", "pol", "r" and "nodes" when they differ, "ws" with
// the workers that joined or whose description changed (state, model,
// capacity, placement), "w" with one row [slot,credits,in_flight,
// batches_answered_since,addrs_s] per worker whose counters moved, and
// "rm" with the slots of the workers that left. A role or term change is
// sent as a full frame.

// full encodes m whole.
func full(m *Model) []byte {
	b := make([]byte, 0, 256+len(m.Workers)*120)
	b = append(b, `{"full":1,"self":`...)
	b = appendString(b, m.Self)
	b = append(b, `,"lead":`...)
	b = strconv.AppendBool(b, m.Leading)
	b = append(b, `,"term":`...)
	b = strconv.AppendInt(b, m.Term, 10)
	b = append(b, `,"leader":`...)
	b = appendString(b, m.LeaderID)
	b = append(b, `,"lhttp":`...)
	b = appendString(b, m.LeaderHTTP)
	if m.Leading {
		b = appendPool(b, m.Pool)
		b = append(b, `,"cov":`...)
		b = appendFloat(b, m.Pool.Coverage, 4)
		b = append(b, `,"pol":`...)
		b = appendString(b, m.Pool.Policy)
		b = appendRates(b, m.Rates)
		b = append(b, `,"ws":[`...)
		for i := range m.Workers {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendWorker(b, &m.Workers[i])
		}
		b = append(b, ']')
		b = appendNodes(b, m.Nodes)
	}
	return append(b, '}')
}

// delta encodes what changed from prev to m; nil when nothing did. It
// returns a full frame when the role or the term changed.
func delta(prev, m *Model) []byte {
	if prev == nil || prev.Leading != m.Leading || prev.Term != m.Term || prev.Self != m.Self ||
		prev.LeaderID != m.LeaderID || prev.LeaderHTTP != m.LeaderHTTP {
		return full(m)
	}
	if !m.Leading {
		return nil
	}
	b := make([]byte, 0, 128)
	b = append(b, '{')
	if prev.Pool != m.Pool {
		b = appendPool(b, m.Pool)
		if roundTo(prev.Pool.Coverage, 4) != roundTo(m.Pool.Coverage, 4) {
			b = append(b, `,"cov":`...)
			b = appendFloat(b, m.Pool.Coverage, 4)
		}
		if prev.Pool.Policy != m.Pool.Policy {
			b = append(b, `,"pol":`...)
			b = appendString(b, m.Pool.Policy)
		}
	}
	if roundRates(prev.Rates) != roundRates(m.Rates) {
		b = appendRates(b, m.Rates)
	}
	if !slices.Equal(prev.Nodes, m.Nodes) {
		b = appendNodes(b, m.Nodes)
	}
	// Both worker lists are ordered by slot: merge them.
	var joined, rows, gone []byte
	i, j := 0, 0
	for i < len(prev.Workers) || j < len(m.Workers) {
		switch {
		case j == len(m.Workers) || (i < len(prev.Workers) && prev.Workers[i].Slot < m.Workers[j].Slot):
			gone = appendSep(gone)
			gone = strconv.AppendInt(gone, int64(prev.Workers[i].Slot), 10)
			i++
		case i == len(prev.Workers) || m.Workers[j].Slot < prev.Workers[i].Slot:
			joined = appendSep(joined)
			joined = appendWorker(joined, &m.Workers[j])
			j++
		default:
			p, w := &prev.Workers[i], &m.Workers[j]
			if p.ID != w.ID || p.Host != w.Host || p.NUMA != w.NUMA || p.CPUs != w.CPUs ||
				p.Capacity != w.Capacity || p.Model != w.Model || p.State != w.State || w.Batches < p.Batches {
				joined = appendSep(joined)
				joined = appendWorker(joined, w)
			} else if p.Credits != w.Credits || p.InFlight != w.InFlight || p.Batches != w.Batches ||
				math.Round(p.Rate) != math.Round(w.Rate) {
				rows = appendSep(rows)
				rows = append(rows, '[')
				rows = strconv.AppendInt(rows, int64(w.Slot), 10)
				rows = append(rows, ',')
				rows = strconv.AppendInt(rows, int64(w.Credits), 10)
				rows = append(rows, ',')
				rows = strconv.AppendInt(rows, int64(w.InFlight), 10)
				rows = append(rows, ',')
				rows = strconv.AppendUint(rows, w.Batches-p.Batches, 10)
				rows = append(rows, ',')
				rows = strconv.AppendInt(rows, int64(math.Round(w.Rate)), 10)
				rows = append(rows, ']')
			}
			i++
			j++
		}
	}
	b = appendList(b, "ws", joined)
	b = appendList(b, "w", rows)
	b = appendList(b, "rm", gone)
	if len(b) == 1 {
		return nil
	}
	b = append(b[:1], b[2:]...) // every part starts with a comma
	return append(b, '}')
}

func appendSep(b []byte) []byte {
	if len(b) > 0 {
		b = append(b, ',')
	}
	return b
}

func appendList(b []byte, key string, items []byte) []byte {
	if len(items) == 0 {
		return b
	}
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":[`...)
	b = append(b, items...)
	return append(b, ']')
}

func appendPool(b []byte, p PoolView) []byte {
	b = append(b, `,"p":[`...)
	for i, v := range []uint64{p.Pending, p.InFlight, uint64(max(p.OldestMillis, 0)), p.Received, p.Examined, p.Deduplicated, p.Shed, p.Expired, p.Reassigned, p.Verdicts, p.Prox} {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, v, 10)
	}
	return append(b, ']')
}

func roundRates(r Rates) [3]float64 {
	return [3]float64{math.Round(r.SightingsPerSec), math.Round(r.VerdictsPerSec), math.Round(r.ProxiesPerHour)}
}

func appendRates(b []byte, r Rates) []byte {
	b = append(b, `,"r":[`...)
	for i, v := range roundRates(r) {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendFloat(b, v, 'f', -1, 64)
	}
	return append(b, ']')
}

func appendNodes(b []byte, nodes []NodeView) []byte {
	b = append(b, `,"nodes":[`...)
	for i, n := range nodes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = appendString(b, n.ID)
		b = append(b, ',')
		b = strconv.AppendUint(b, n.Lag, 10)
		b = append(b, ',')
		b = strconv.AppendFloat(b, n.LagSeconds, 'f', -1, 64)
		flags := 0
		if n.Stalled {
			flags |= 1
		}
		if !n.Connected {
			flags |= 2
		}
		if !n.Reported {
			flags |= 4
		}
		b = append(b, ',')
		b = strconv.AppendInt(b, int64(flags), 10)
		b = append(b, ']')
	}
	return append(b, ']')
}

func appendWorker(b []byte, w *WorkerView) []byte {
	b = append(b, `{"k":`...)
	b = strconv.AppendInt(b, int64(w.Slot), 10)
	b = append(b, `,"id":`...)
	b = appendString(b, w.ID)
	b = append(b, `,"h":`...)
	b = appendString(b, w.Host)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, int64(w.NUMA), 10)
	b = append(b, `,"c":`...)
	b = appendString(b, w.CPUs)
	b = append(b, `,"cores":`...)
	b = strconv.AppendInt(b, int64(w.Cores), 10)
	b = append(b, `,"cap":`...)
	b = strconv.AppendInt(b, int64(w.Capacity), 10)
	b = append(b, `,"cr":`...)
	b = strconv.AppendInt(b, int64(w.Credits), 10)
	b = append(b, `,"if":`...)
	b = strconv.AppendInt(b, int64(w.InFlight), 10)
	b = append(b, `,"b":`...)
	b = strconv.AppendUint(b, w.Batches, 10)
	b = append(b, `,"r":`...)
	b = strconv.AppendInt(b, int64(math.Round(w.Rate)), 10)
	b = append(b, `,"m":`...)
	b = appendString(b, w.Model)
	b = append(b, `,"s":`...)
	b = appendString(b, w.State)
	return append(b, '}')
}

func roundTo(f float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(f*p) / p
}

func appendFloat(b []byte, f float64, digits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, roundTo(f, digits), 'f', -1, 64)
}

// appendString appends s as a JSON string. encoding/json escapes <, > and
// & (so that a frame can never close a script element), U+2028 and U+2029,
// and turns invalid UTF-8 into U+FFFD.
func appendString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}
