package raven_test

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/evidence"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/verdict"
)

// The fakes below do no I/O: nothing in these tests is dialed.
var evAddr = netip.MustParseAddr("192.0.2.7")

// verdictEngine answers v for every address and records the attack history
// it was given.
type verdictEngine struct {
	v       verdict.Verdict
	version string
	history atomic.Pointer[attacks.History]
}

func (e *verdictEngine) Examine(netip.Addr) verdict.Verdict { return e.v }
func (e *verdictEngine) ModelVersion() string               { return e.version }
func (e *verdictEngine) UseAttackHistory(h attacks.History) {
	e.history.Store(&h)
}

// noHistoryEngine does not want the attack history.
type noHistoryEngine struct{ raven.Nop }

// fakePlugin is a hand-written evidence.Plugin: it returns found and err,
// or, when block is set, waits until its context ends.
type fakePlugin struct {
	found []evidence.Evidence
	err   error
	block bool

	calls   atomic.Int64
	started chan netip.Addr // receives each examined address, if not nil
}

func (p *fakePlugin) Name() string { return "fake" }

func (p *fakePlugin) Examine(ctx context.Context, a netip.Addr, dst []evidence.Evidence) ([]evidence.Evidence, error) {
	p.calls.Add(1)
	if p.started != nil {
		p.started <- a
	}
	if p.block {
		<-ctx.Done()
		return append(dst, p.found...), context.Cause(ctx)
	}
	return append(dst, p.found...), p.err
}

// pluginResult is what a fakePlugin returns.
type pluginResult struct {
	found []evidence.Evidence
	err   error
}

// evReports collects what Observe receives.
type evReports struct {
	mu  sync.Mutex
	got []raven.EvidenceReport
}

func (r *evReports) observe(rep raven.EvidenceReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Found = append([]evidence.Evidence(nil), rep.Found...) // valid during the call only
	r.got = append(r.got, rep)
}

func (r *evReports) all() []raven.EvidenceReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]raven.EvidenceReport(nil), r.got...)
}

func newStage(t *testing.T, cfg raven.EvidenceConfig) *raven.EvidenceStage {
	t.Helper()
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	s, err := raven.NewEvidenceStage(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func socks5(port uint16) evidence.Evidence {
	return evidence.Evidence{Source: "proxyprobe", Type: "SOCKS5", Port: port}
}

func TestEvidenceConfigValidate(t *testing.T) {
	p := &fakePlugin{}
	for _, cfg := range []raven.EvidenceConfig{
		{Timeout: time.Second},
		{Plugin: p},
		{Plugin: p, Timeout: -time.Second},
		{Plugin: p, Timeout: time.Second, Risk: 101},
	} {
		if _, err := raven.NewEvidenceStage(cfg); err == nil {
			t.Errorf("NewEvidenceStage(%+v) accepted", cfg)
		}
	}
}

func TestEvidenceEngineVerdicts(t *testing.T) {
	// shared has spare capacity: appending to it in place would show in
	// the inner engine's next verdict.
	shared := make([]string, 1, 8)
	shared[0] = "locdb:hosting-as"
	timedOut := errors.Join(evidence.ErrCallTimeout, errors.New("probe cut short"))
	tests := []struct {
		name      string
		inner     verdict.Verdict
		plugin    pluginResult
		risk      uint32
		want      verdict.Verdict
		wantCalls int64
	}{{
		name:      "an open proxy found: proxy, type, port, risk, evidence appended",
		inner:     verdict.Verdict{Type: raven.TypeHosting, Risk: 33, Evidence: shared},
		plugin:    pluginResult{found: []evidence.Evidence{socks5(1080)}},
		want:      verdict.Verdict{Proxy: true, Type: "SOCKS5", Risk: 100, Port: 1080, Evidence: []string{"locdb:hosting-as", "proxyprobe:SOCKS5:1080"}},
		wantCalls: 1,
	}, {
		name:  "several found: the first typed one gives type and port, all are listed",
		inner: verdict.Verdict{Evidence: []string{}},
		plugin: pluginResult{found: []evidence.Evidence{
			{Source: "other"}, {Source: "proxyprobe", Type: "HTTP", Port: 3128}, socks5(8888),
		}},
		want:      verdict.Verdict{Proxy: true, Type: "HTTP", Risk: 100, Port: 3128, Evidence: []string{"other", "proxyprobe:HTTP:3128", "proxyprobe:SOCKS5:8888"}},
		wantCalls: 1,
	}, {
		name:      "a configured risk",
		inner:     verdict.Verdict{Risk: 10},
		plugin:    pluginResult{found: []evidence.Evidence{socks5(1080)}},
		risk:      80,
		want:      verdict.Verdict{Proxy: true, Type: "SOCKS5", Risk: 80, Port: 1080, Evidence: []string{"proxyprobe:SOCKS5:1080"}},
		wantCalls: 1,
	}, {
		name:      "nothing found: the inner verdict unchanged",
		inner:     verdict.Verdict{Type: raven.TypeHosting, Risk: 33, Evidence: shared},
		want:      verdict.Verdict{Type: raven.TypeHosting, Risk: 33, Evidence: shared},
		wantCalls: 1,
	}, {
		name:      "an untyped finding is listed but makes no proxy",
		inner:     verdict.Verdict{Risk: 5},
		plugin:    pluginResult{found: []evidence.Evidence{{Source: "history", Port: 22}}},
		want:      verdict.Verdict{Risk: 5, Evidence: []string{"history:22"}},
		wantCalls: 1,
	}, {
		name:      "the plugin failed: the inner verdict unchanged",
		inner:     verdict.Verdict{Risk: 5, Evidence: shared},
		plugin:    pluginResult{err: errors.New("boom")},
		want:      verdict.Verdict{Risk: 5, Evidence: shared},
		wantCalls: 1,
	}, {
		name:      "the plugin was busy: the inner verdict unchanged",
		inner:     verdict.Verdict{Risk: 5},
		plugin:    pluginResult{err: evidence.ErrBusy},
		want:      verdict.Verdict{Risk: 5},
		wantCalls: 1,
	}, {
		name:      "what was found before a timeout counts",
		inner:     verdict.Verdict{},
		plugin:    pluginResult{found: []evidence.Evidence{socks5(1080)}, err: timedOut},
		want:      verdict.Verdict{Proxy: true, Type: "SOCKS5", Risk: 100, Port: 1080, Evidence: []string{"proxyprobe:SOCKS5:1080"}},
		wantCalls: 1,
	}, {
		name:   "the inner engine already calls it a proxy: no probe",
		inner:  verdict.Verdict{Proxy: true, Type: raven.TypeAnonymizer, Risk: 90, Evidence: []string{"locdb:anonymous-proxy"}, ModelVersion: "canary-v2"},
		plugin: pluginResult{found: []evidence.Evidence{socks5(1080)}},
		want:   verdict.Verdict{Proxy: true, Type: raven.TypeAnonymizer, Risk: 90, Evidence: []string{"locdb:anonymous-proxy"}, ModelVersion: "canary-v2"},
	}, {
		name:      "the verdict keeps the model that made it",
		inner:     verdict.Verdict{ModelVersion: "canary-v2"},
		plugin:    pluginResult{found: []evidence.Evidence{socks5(1080)}},
		want:      verdict.Verdict{Proxy: true, Type: "SOCKS5", Risk: 100, Port: 1080, Evidence: []string{"proxyprobe:SOCKS5:1080"}, ModelVersion: "canary-v2"},
		wantCalls: 1,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rep evReports
			p := &fakePlugin{found: tc.plugin.found, err: tc.plugin.err}
			inner := &verdictEngine{v: tc.inner, version: "inner-v1"}
			e := newStage(t, raven.EvidenceConfig{Plugin: p, Risk: tc.risk, Observe: rep.observe}).Wrap(inner)
			got := e.Examine(evAddr)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("verdict\n got %+v\nwant %+v", got, tc.want)
			}
			if n := p.calls.Load(); n != tc.wantCalls {
				t.Errorf("plugin called %d times, want %d", n, tc.wantCalls)
			}
			if len(shared) != 1 || shared[:2][1] != "" {
				t.Errorf("the inner engine's evidence slice was written to: %q", shared[:2])
			}
			if e.ModelVersion() != "inner-v1" || e.Inner() != inner {
				t.Errorf("ModelVersion %q, Inner %v: want the inner engine's", e.ModelVersion(), e.Inner())
			}
			r := rep.all()
			if int64(len(r)) != tc.wantCalls {
				t.Fatalf("%d evReports, want %d", len(r), tc.wantCalls)
			}
			if len(r) == 1 && (!reflect.DeepEqual(r[0].Found, tc.plugin.found) || !errors.Is(r[0].Err, tc.plugin.err)) {
				t.Errorf("report %+v, want found %v, err %v", r[0], tc.plugin.found, tc.plugin.err)
			}
		})
	}
}

func TestEvidenceEngineTimeout(t *testing.T) {
	var rep evReports
	p := &fakePlugin{block: true}
	e := newStage(t, raven.EvidenceConfig{Plugin: p, Timeout: 30 * time.Millisecond, Observe: rep.observe}).Wrap(&verdictEngine{v: verdict.Verdict{Risk: 3}})
	start := time.Now()
	v := e.Examine(evAddr)
	if d := time.Since(start); d < 30*time.Millisecond || d > 5*time.Second {
		t.Errorf("Examine took %s, want about the 30ms timeout", d)
	}
	if !reflect.DeepEqual(v, verdict.Verdict{Risk: 3}) {
		t.Errorf("verdict %+v, want the inner one", v)
	}
	if r := rep.all(); len(r) != 1 || !errors.Is(r[0].Err, context.DeadlineExceeded) {
		t.Errorf("evReports %+v, want one deadline error", r)
	}
}

func TestEvidenceStageStop(t *testing.T) {
	var rep evReports
	p := &fakePlugin{block: true, started: make(chan netip.Addr, 1)}
	s := newStage(t, raven.EvidenceConfig{Plugin: p, Timeout: time.Minute, Observe: rep.observe})
	e := s.Wrap(&verdictEngine{v: verdict.Verdict{Risk: 3}})

	// Stop ends an examination in progress at once.
	done := make(chan verdict.Verdict, 1)
	go func() { done <- e.Examine(evAddr) }()
	<-p.started
	s.Stop()
	select {
	case v := <-done:
		if !reflect.DeepEqual(v, verdict.Verdict{Risk: 3}) {
			t.Errorf("verdict %+v, want the inner one", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Examine still running after Stop")
	}
	// Afterwards the plugin is not called any more.
	if v := e.Examine(evAddr); !reflect.DeepEqual(v, verdict.Verdict{Risk: 3}) {
		t.Errorf("verdict after Stop %+v, want the inner one", v)
	}
	if n := p.calls.Load(); n != 1 {
		t.Errorf("plugin called %d times, want 1 (none after Stop)", n)
	}
	r := rep.all()
	if len(r) != 2 || !errors.Is(r[0].Err, raven.ErrEvidenceStopped) || !errors.Is(r[1].Err, raven.ErrEvidenceStopped) {
		t.Errorf("evReports %+v, want two ErrEvidenceStopped", r)
	}
	s.Stop() // again: nothing happens
}

func TestEvidenceEngineAttackHistory(t *testing.T) {
	s := newStage(t, raven.EvidenceConfig{Plugin: &fakePlugin{}})
	table := attacks.NewTable(10)
	inner := &verdictEngine{}
	var e raven.Engine = s.Wrap(inner)
	u, ok := e.(attacks.HistoryUser)
	if !ok {
		t.Fatal("the wrapper does not take the attack history")
	}
	u.UseAttackHistory(table)
	if h := inner.history.Load(); h == nil || *h != attacks.History(table) {
		t.Error("the inner engine did not get the attack history")
	}
	// An inner engine that does not want it is left alone.
	s.Wrap(noHistoryEngine{}).UseAttackHistory(table)
}

// TestEvidenceStageAcrossSwaps wraps two engines, as a worker does when a
// new model is installed live, and runs them through one real Runner: the
// limits are shared, and a busy Runner means no probe.
func TestEvidenceStageAcrossSwaps(t *testing.T) {
	p := &fakePlugin{block: true, found: nil, started: make(chan netip.Addr, 4)}
	runner, err := evidence.NewRunner(evidence.Config{
		Plugin:      p,
		Concurrency: evidence.CommanderConfig{Min: 1, Max: 1},
		CallTimeout: time.Minute,
		MaxWait:     10 * time.Millisecond,
	}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var rep evReports
	s := newStage(t, raven.EvidenceConfig{Plugin: runner, Timeout: time.Minute, Observe: rep.observe})
	old := s.Wrap(&verdictEngine{version: "v1"})
	cur := s.Wrap(&verdictEngine{version: "v2"})

	// The old engine's examination holds the only slot...
	done := make(chan verdict.Verdict, 1)
	go func() { done <- old.Examine(evAddr) }()
	<-p.started
	// ... so the new engine's is skipped after MaxWait, not queued.
	start := time.Now()
	if v := cur.Examine(evAddr); v.Proxy || len(v.Evidence) != 0 {
		t.Errorf("verdict %+v while busy, want the inner one", v)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a busy examination took %s", d)
	}
	s.Stop()
	<-done
	r := rep.all()
	if len(r) != 2 || !errors.Is(r[0].Err, evidence.ErrBusy) || !errors.Is(r[1].Err, raven.ErrEvidenceStopped) {
		t.Errorf("evReports %+v, want busy, then stopped", r)
	}
	if st := runner.Stats(); st.Busy != 1 || st.Calls != 1 || st.InFlight != 0 {
		t.Errorf("runner stats %+v, want 1 call, 1 busy", st)
	}
}
