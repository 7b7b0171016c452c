package visual

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// page mirrors what app.js keeps: the page's picture rebuilt from frames.
type page struct {
	Leading bool
	Term    int64
	Pool    []uint64
	Workers map[int]pageWorker
	Nodes   []pageNode
}

// pageNode is a node's row as the page decodes it: [id, lag, lag_s, flags].
type pageNode struct {
	ID    string
	Lag   float64
	LagS  float64
	Flags int
}

type pageWorker struct {
	ID, State, Model  string
	Credits, InFlight int
	Batches           uint64
	Rate              int
}

type frameJSON struct {
	Full  int               `json:"full"`
	Lead  bool              `json:"lead"`
	Term  int64             `json:"term"`
	P     []uint64          `json:"p"`
	WS    []json.RawMessage `json:"ws"`
	W     [][5]float64      `json:"w"`
	RM    []int             `json:"rm"`
	Nodes *[][]any          `json:"nodes"`
}

func (p *page) apply(t *testing.T, b []byte) {
	t.Helper()
	var f frameJSON
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame is not JSON: %v\n%s", err, b)
	}
	if f.Full == 1 {
		*p = page{Leading: f.Lead, Term: f.Term, Workers: map[int]pageWorker{}}
	}
	if f.P != nil {
		p.Pool = f.P
	}
	for _, raw := range f.WS {
		var w struct {
			K  int     `json:"k"`
			ID string  `json:"id"`
			S  string  `json:"s"`
			M  string  `json:"m"`
			Cr int     `json:"cr"`
			If int     `json:"if"`
			B  uint64  `json:"b"`
			R  float64 `json:"r"`
		}
		if err := json.Unmarshal(raw, &w); err != nil {
			t.Fatal(err)
		}
		p.Workers[w.K] = pageWorker{ID: w.ID, State: w.S, Model: w.M, Credits: w.Cr, InFlight: w.If, Batches: w.B, Rate: int(w.R)}
	}
	for _, r := range f.W {
		w := p.Workers[int(r[0])]
		w.Credits, w.InFlight, w.Rate = int(r[1]), int(r[2]), int(r[4])
		w.Batches += uint64(r[3])
		p.Workers[int(r[0])] = w
	}
	for _, k := range f.RM {
		delete(p.Workers, k)
	}
	if f.Nodes != nil {
		p.Nodes = nil
		for _, n := range *f.Nodes {
			p.Nodes = append(p.Nodes, pageNode{ID: n[0].(string), Lag: n[1].(float64), LagS: n[2].(float64), Flags: int(n[3].(float64))})
		}
	}
}

func (p *page) want(m *Model) page {
	out := page{Leading: m.Leading, Term: m.Term, Workers: map[int]pageWorker{}}
	if m.Leading {
		pv := m.Pool
		out.Pool = []uint64{pv.Pending, pv.InFlight, uint64(pv.OldestMillis), pv.Received, pv.Examined, pv.Deduplicated, pv.Shed, pv.Expired, pv.Reassigned, pv.Verdicts, pv.Prox}
	}
	for _, w := range m.Workers {
		out.Workers[w.Slot] = pageWorker{ID: w.ID, State: w.State, Model: w.Model, Credits: w.Credits, InFlight: w.InFlight, Batches: w.Batches, Rate: int(w.Rate + 0.5)}
	}
	for _, n := range m.Nodes {
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
		out.Nodes = append(out.Nodes, pageNode{ID: n.ID, Lag: float64(n.Lag), LagS: n.LagSeconds, Flags: flags})
	}
	return out
}

func worker(slot int, id string, credits, inFlight int, batches uint64) WorkerView {
	return WorkerView{Slot: slot, ID: id, Host: "h", NUMA: 0, CPUs: "0-3", Cores: 4, Capacity: 4, Credits: credits, InFlight: inFlight, Batches: batches, Model: "m1", State: "ready"}
}

func TestDeltasRebuildTheModel(t *testing.T) {
	lead := func(ws ...WorkerView) *Model {
		return &Model{Self: "s1", Leading: true, Term: 7, LeaderID: "s1", Pool: PoolView{Pending: 3, Coverage: 1, Policy: "sample 1/5"}, Workers: ws}
	}
	steps := []struct {
		name      string
		m         *Model
		wantFull  bool
		wantEmpty bool
	}{
		{"first frame is full", lead(worker(1, "w1", 4, 0, 0), worker(2, "w2", 4, 0, 0)), true, false},
		{"nothing changed", lead(worker(1, "w1", 4, 0, 0), worker(2, "w2", 4, 0, 0)), false, true},
		{"counters move", lead(worker(1, "w1", 2, 2, 5), worker(2, "w2", 4, 0, 0)), false, false},
		{"a worker joins", lead(worker(1, "w1", 2, 2, 5), worker(2, "w2", 4, 0, 0), worker(3, "w3", 4, 0, 0)), false, false},
		{"a worker leaves", lead(worker(1, "w1", 2, 2, 5), worker(3, "w3", 4, 0, 0)), false, false},
		{"state changes", func() *Model {
			w := worker(1, "w1", 0, 0, 5)
			w.State = "draining"
			return lead(w, worker(3, "w3", 4, 0, 0))
		}(), false, false},
		{"a node reports its log lag", func() *Model {
			m := lead(worker(1, "w1", 0, 0, 5), worker(3, "w3", 4, 0, 0))
			w := m.Workers[0]
			w.State = "draining"
			m.Workers[0] = w
			m.Nodes = []NodeView{{ID: "n1", Reported: true, Connected: true, Lag: 12, LagSeconds: 1.5}, {ID: "n2"}}
			return m
		}(), false, false},
		{"a node stalls", func() *Model {
			m := lead(worker(1, "w1", 0, 0, 5), worker(3, "w3", 4, 0, 0))
			w := m.Workers[0]
			w.State = "draining"
			m.Workers[0] = w
			m.Nodes = []NodeView{{ID: "n1", Reported: true, Connected: true, Stalled: true, Lag: 40, LagSeconds: 16}, {ID: "n2"}}
			return m
		}(), false, false},
		{"new term", &Model{Self: "s1", Leading: true, Term: 9, LeaderID: "s1", Workers: []WorkerView{worker(1, "w9", 1, 0, 0)}}, true, false},
		{"following", &Model{Self: "s1", LeaderID: "s2", LeaderHTTP: "127.0.0.1:1"}, true, false},
		{"still following", &Model{Self: "s1", LeaderID: "s2", LeaderHTTP: "127.0.0.1:1"}, false, true},
	}
	var prev *Model
	var pg page
	for _, st := range steps {
		f := delta(prev, st.m)
		if st.wantEmpty {
			if f != nil {
				t.Fatalf("%s: want no frame, got %s", st.name, f)
			}
			prev = st.m
			continue
		}
		if f == nil {
			t.Fatalf("%s: no frame", st.name)
		}
		if isFull := strings.HasPrefix(string(f), `{"full":1`); isFull != st.wantFull {
			t.Fatalf("%s: full=%v, want %v: %s", st.name, isFull, st.wantFull, f)
		}
		pg.apply(t, f)
		if want := pg.want(st.m); !reflect.DeepEqual(pg, want) {
			t.Fatalf("%s: page has\n%+v\nwant\n%+v\nframe %s", st.name, pg, want, f)
		}
		prev = st.m
	}
}

func TestStringsAreSafeJSON(t *testing.T) {
	for _, s := range []string{`plain`, `quote " and \ back`, "</script><b>&", "tab\tnl\n", "ünïcødé ✓", "\u2028", string([]byte{0xff, 'a'})} {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q: %v (%s)", s, err, b)
		}
		if strings.ContainsAny(string(b), "<>&") {
			t.Fatalf("%q: unescaped HTML in %s", s, b)
		}
		if strings.ToValidUTF8(s, "\ufffd") != got {
			t.Fatalf("%q came back as %q", s, got)
		}
	}
}

func TestCountCPUs(t *testing.T) {
	for list, want := range map[string]int{"": 0, "0": 1, "0-3": 4, "0-3,8,10-11": 7, "5-2": 0, "x": 0, " 0-1 , 4": 3} {
		if got := countCPUs(list); got != want {
			t.Errorf("countCPUs(%q) = %d, want %d", list, got, want)
		}
	}
}

func TestDeltaSizeFor500BusyWorkers(t *testing.T) {
	var a, b Model
	a.Leading, b.Leading, a.Term, b.Term = true, true, 1, 1
	for i := range 500 {
		w := worker(i+1, "host-123-numa0", 8, 0, 100000)
		a.Workers = append(a.Workers, w)
		w.Credits, w.InFlight, w.Batches, w.Rate = 6, 2, 100003, 1234
		b.Workers = append(b.Workers, w)
	}
	f := delta(&a, &b)
	// Every worker moved: one short row each.
	if per := len(f) / 500; per > 24 {
		t.Fatalf("%d bytes per busy worker in a delta: %s", per, f[:200])
	}
	t.Logf("delta with 500 busy workers: %d bytes; full frame: %d bytes", len(f), len(full(&b)))
}
