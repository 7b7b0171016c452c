package evidence

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/styx-inference/styx/pkg/testwait"
)

var testAddr = netip.MustParseAddr("192.0.2.1") // never dialed: the fakes do no I/O

// blockingPlugin is a hand-written fake: every call announces itself on
// started and finds one piece of evidence once release is closed, or gives
// up when its context ends.
type blockingPlugin struct {
	started chan struct{}
	release chan struct{}
}

func newBlockingPlugin() *blockingPlugin {
	return &blockingPlugin{started: make(chan struct{}, 100), release: make(chan struct{})}
}

func (p *blockingPlugin) Name() string { return "fake" }

func (p *blockingPlugin) Examine(ctx context.Context, _ netip.Addr, dst []Evidence) ([]Evidence, error) {
	p.started <- struct{}{}
	select {
	case <-p.release:
		return append(dst, Evidence{Source: "fake", Type: "HTTP", Port: 8080}), nil
	case <-ctx.Done():
		return dst, context.Cause(ctx)
	}
}

// instantPlugin finds nothing, at once.
type instantPlugin struct{}

func (instantPlugin) Name() string { return "instant" }
func (instantPlugin) Examine(_ context.Context, _ netip.Addr, dst []Evidence) ([]Evidence, error) {
	return dst, nil
}

func newRunner(t *testing.T, cfg Config) *Runner {
	t.Helper()
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = time.Minute
	}
	r, err := NewRunner(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// calls runs n Examine calls in goroutines and returns a function that
// waits for them and returns their errors.
func calls(r *Runner, ctx context.Context, n int) func() []error {
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.Examine(ctx, testAddr, nil)
		}()
	}
	return func() []error {
		wg.Wait()
		return errs
	}
}

func TestRunnerConfigValidate(t *testing.T) {
	ok := Config{Plugin: instantPlugin{}, Concurrency: CommanderConfig{Min: 1, Max: 1}, CallTimeout: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mutate := range []func(*Config){
		func(c *Config) { c.Plugin = nil },
		func(c *Config) { c.Concurrency.Min = 0 },
		func(c *Config) { c.Rate = -1 },
		func(c *Config) { c.Burst = -1 },
		func(c *Config) { c.CallTimeout = 0 },
		func(c *Config) { c.MaxWaiting = -1 },
		func(c *Config) { c.MaxWait = -1 },
	} {
		c := ok
		mutate(&c)
		if _, err := NewRunner(c, zerolog.Nop()); err == nil {
			t.Errorf("NewRunner(%+v) accepted", c)
		}
	}
}

func TestRunnerLimitsConcurrencyAndBacklog(t *testing.T) {
	p := newBlockingPlugin()
	r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 2, Max: 8}, MaxWaiting: 3})
	wait := calls(r, context.Background(), 5)
	testwait.For(t, testwait.Timeout, "2 in flight and 3 waiting", func() bool {
		s := r.Stats()
		return s.InFlight == 2 && s.Backlog == 3 && s.Waiting == 3
	})
	if len(p.started) != 2 {
		t.Fatalf("%d calls started, want 2 (the limit)", len(p.started))
	}
	// One more caller than MaxWaiting is refused at once.
	if _, err := r.Examine(context.Background(), testAddr, nil); !errors.Is(err, ErrBusy) {
		t.Fatalf("sixth call: %v, want ErrBusy", err)
	}
	close(p.release)
	for i, err := range wait() {
		if err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	s := r.Stats()
	if s.Calls != 5 || s.Busy != 1 || s.Errors != 0 || s.InFlight != 0 || s.Waiting != 0 {
		t.Fatalf("stats %+v, want 5 calls, 1 busy, nothing in flight or waiting", s)
	}
}

func TestRunnerReturnsEvidence(t *testing.T) {
	p := newBlockingPlugin()
	close(p.release)
	r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 1, Max: 1}})
	dst := []Evidence{{Source: "earlier"}}
	out, err := r.Examine(context.Background(), testAddr, dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2 || out[0].Source != "earlier" || out[1].String() != "fake:HTTP:8080" {
		t.Fatalf("evidence %v", out)
	}
	if r.Name() != "fake" {
		t.Fatalf("Name() = %q", r.Name())
	}
	var _ Plugin = r
}

func TestRunnerCallTimeout(t *testing.T) {
	p := newBlockingPlugin() // never released
	r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 1, Max: 1}, CallTimeout: 20 * time.Millisecond})
	start := time.Now()
	_, err := r.Examine(context.Background(), testAddr, nil)
	if !errors.Is(err, ErrCallTimeout) {
		t.Fatalf("Examine = %v, want ErrCallTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("timed out after %s", d)
	}
	if s := r.Stats(); s.Timeouts != 1 || s.Errors != 1 || s.InFlight != 0 {
		t.Fatalf("stats %+v, want one timeout and the slot back", s)
	}
	// The caller's own cancellation is not a call timeout.
	ctx, cancel := context.WithCancel(context.Background())
	done := calls(r, ctx, 1)
	<-p.started // the timed-out call's
	<-p.started // this one's
	cancel()
	if err := done()[0]; !errors.Is(err, context.Canceled) || errors.Is(err, ErrCallTimeout) {
		t.Fatalf("cancelled call: %v, want context.Canceled only", err)
	}
}

func TestRunnerCancelWhileWaitingForSlot(t *testing.T) {
	p := newBlockingPlugin()
	r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 1, Max: 1}})
	first := calls(r, context.Background(), 1)
	<-p.started
	ctx, cancel := context.WithCancel(context.Background())
	waiting := calls(r, ctx, 1)
	testwait.For(t, testwait.Timeout, "a waiter", func() bool { return r.Stats().Backlog == 1 })
	cancel()
	if err := waiting()[0]; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiting call: %v, want context.Canceled", err)
	}
	if s := r.Stats(); s.Backlog != 0 || s.Waiting != 0 || s.InFlight != 1 {
		t.Fatalf("stats %+v after the waiter left", s)
	}
	close(p.release)
	if err := first()[0]; err != nil {
		t.Fatal(err)
	}
	// The slot is free again.
	if _, err := r.Examine(context.Background(), testAddr, nil); err != nil {
		t.Fatal(err)
	}
}

func TestRunnerRateLimit(t *testing.T) {
	fc := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	r := newRunner(t, Config{Plugin: instantPlugin{}, Concurrency: CommanderConfig{Min: 4, Max: 4}, Rate: 2, Burst: 2, Clock: fc})

	// The bucket starts full: a burst of two goes at once.
	for i := range 2 {
		if _, err := r.Examine(context.Background(), testAddr, nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// The third waits half a second of the fake clock for its token.
	done := calls(r, context.Background(), 1)
	testwait.For(t, testwait.Timeout, "the third call to wait for a token", fc.HasWaiters)
	if s := r.Stats(); s.Calls != 2 || s.Waiting != 1 || s.Backlog != 0 {
		t.Fatalf("stats %+v, want 2 calls and 1 waiting for a token (not for a slot)", s)
	}
	fc.Step(499 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if s := r.Stats(); s.Calls != 2 {
		t.Fatal("the third call ran before its token was due")
	}
	fc.Step(time.Millisecond)
	if err := done()[0]; err != nil {
		t.Fatal(err)
	}

	// A caller that gives up while waiting for its token returns it.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := calls(r, ctx, 1)
	testwait.For(t, testwait.Timeout, "a call to wait for a token", fc.HasWaiters)
	cancel()
	if err := gaveUp()[0]; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	fc.Step(500 * time.Millisecond) // one token due
	if _, err := r.Examine(context.Background(), testAddr, nil); err != nil {
		t.Fatal(err)
	}
	if fc.HasWaiters() {
		t.Fatal("a call waited although the cancelled reservation gave its token back")
	}
}

func TestRunnerRunRaisesWithBacklog(t *testing.T) {
	fc := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
	p := newBlockingPlugin()
	r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 1, Max: 4, Interval: time.Second}, Clock: fc})

	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	testwait.For(t, testwait.Timeout, "Run's ticker", fc.HasWaiters)
	if err := r.Run(ctx); err == nil {
		t.Error("a second Run was accepted")
	}

	wait := calls(r, context.Background(), 6)
	testwait.For(t, testwait.Timeout, "1 in flight, 5 waiting", func() bool { s := r.Stats(); return s.InFlight == 1 && s.Backlog == 5 })
	fc.Step(time.Second)
	testwait.For(t, testwait.Timeout, "limit 2", func() bool { s := r.Stats(); return s.Limit == 2 && s.InFlight == 2 && s.Backlog == 4 })
	fc.Step(time.Second)
	testwait.For(t, testwait.Timeout, "limit 4", func() bool { s := r.Stats(); return s.Limit == 4 && s.InFlight == 4 && s.Backlog == 2 })
	fc.Step(time.Second)
	time.Sleep(20 * time.Millisecond)
	if s := r.Stats(); s.Limit != 4 {
		t.Fatalf("limit %d, want it capped at max 4", s.Limit)
	}
	close(p.release)
	for _, err := range wait() {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestRunnerSteerLowersWhenIdle(t *testing.T) {
	r := newRunner(t, Config{Plugin: instantPlugin{}, Concurrency: CommanderConfig{Min: 1, Max: 8, Interval: time.Second, IdleFor: 2 * time.Second}})
	now := time.Unix(1_000_000, 0)
	r.cmd.limit = 8
	r.gate.setLimit(8)
	for range 10 {
		now = now.Add(time.Second)
		r.steer(now)
	}
	if s := r.Stats(); s.Limit != 1 {
		t.Fatalf("limit %d after 10 idle seconds, want min 1", s.Limit)
	}
}

func TestGateSetLimit(t *testing.T) {
	g := newGate(1)
	ctx := context.Background()
	if err := g.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 3)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := g.acquire(ctx); err == nil {
				got <- i
			}
		}()
		testwait.For(t, testwait.Timeout, "a waiter queued", func() bool { return g.stats().waiting == i+1 })
	}
	g.setLimit(3) // wakes two, in arrival order
	if a, b := <-got, <-got; a+b != 1 {
		t.Fatalf("woken %d and %d; want 0 and 1 (FIFO)", a, b)
	}
	g.setLimit(1) // holders keep their slots; the third waits until two leave
	g.release()
	g.release()
	if st := g.stats(); st.inUse != 1 || st.waiting != 1 {
		t.Fatalf("stats %+v, want 1 in use, 1 waiting", st)
	}
	g.release()
	if i := <-got; i != 2 {
		t.Fatalf("woken %d, want 2", i)
	}
	g.release()
	wg.Wait()
	if st := g.stats(); st.inUse != 0 || st.waiting != 0 {
		t.Fatalf("stats %+v, want empty", st)
	}
}

func TestEvidenceString(t *testing.T) {
	for _, tc := range []struct {
		e    Evidence
		want string
	}{
		{Evidence{Source: "proxyprobe", Type: "SOCKS5", Port: 1080}, "proxyprobe:SOCKS5:1080"},
		{Evidence{Source: "proxyprobe", Type: "HTTP"}, "proxyprobe:HTTP"},
		{Evidence{Source: "history", Port: 22}, "history:22"},
		{Evidence{Source: "history"}, "history"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.e, got, tc.want)
		}
	}
	evs := []Evidence{{Source: "history"}, {Source: "proxyprobe", Type: "SOCKS4", Port: 1080}, {Source: "proxyprobe", Type: "HTTP", Port: 3128}}
	if e, ok := Typed(evs); !ok || e.Type != "SOCKS4" || e.Port != 1080 {
		t.Fatalf("Typed = %+v %v", e, ok)
	}
	if _, ok := Typed(evs[:1]); ok {
		t.Fatal("Typed found a type in untyped evidence")
	}
}

func TestRunnerMaxWait(t *testing.T) {
	t.Run("a token due too late is refused at once and not taken", func(t *testing.T) {
		fc := testingclock.NewFakeClock(time.Unix(1_000_000, 0))
		r := newRunner(t, Config{Plugin: instantPlugin{}, Concurrency: CommanderConfig{Min: 1, Max: 1}, Rate: 2, Burst: 1, MaxWait: 100 * time.Millisecond, Clock: fc})
		if _, err := r.Examine(context.Background(), testAddr, nil); err != nil {
			t.Fatal(err)
		}
		// The next token is due in 500 ms, beyond MaxWait: ErrBusy, no wait.
		if _, err := r.Examine(context.Background(), testAddr, nil); !errors.Is(err, ErrBusy) {
			t.Fatalf("second call: %v, want ErrBusy", err)
		}
		if fc.HasWaiters() {
			t.Fatal("a refused call waits on the clock")
		}
		// 450 ms later the token is due in 50 ms: within MaxWait, it waits.
		fc.Step(450 * time.Millisecond)
		done := calls(r, context.Background(), 1)
		testwait.For(t, testwait.Timeout, "a call waiting for its token", fc.HasWaiters)
		fc.Step(50 * time.Millisecond)
		if err := done()[0]; err != nil {
			t.Fatalf("third call: %v (the refused call must not have taken the token)", err)
		}
		if s := r.Stats(); s.Calls != 2 || s.Busy != 1 || s.Waiting != 0 {
			t.Fatalf("stats %+v, want 2 calls, 1 busy", s)
		}
	})
	t.Run("a caller gives up on a slot after MaxWait", func(t *testing.T) {
		p := newBlockingPlugin()
		r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 1, Max: 1}, MaxWait: 20 * time.Millisecond})
		first := calls(r, context.Background(), 1)
		<-p.started
		start := time.Now()
		_, err := r.Examine(context.Background(), testAddr, nil)
		if !errors.Is(err, ErrBusy) {
			t.Fatalf("second call: %v, want ErrBusy", err)
		}
		if d := time.Since(start); d < 20*time.Millisecond || d > 5*time.Second {
			t.Fatalf("gave up after %s, want about 20ms", d)
		}
		if s := r.Stats(); s.Busy != 1 || s.Backlog != 0 || s.Waiting != 0 || s.InFlight != 1 {
			t.Fatalf("stats %+v, want 1 busy, nobody waiting, 1 in flight", s)
		}
		close(p.release)
		if err := first()[0]; err != nil {
			t.Fatal(err)
		}
		// A free slot is taken at once.
		if _, err := r.Examine(context.Background(), testAddr, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the caller's cancellation is not busy", func(t *testing.T) {
		p := newBlockingPlugin()
		r := newRunner(t, Config{Plugin: p, Concurrency: CommanderConfig{Min: 1, Max: 1}, MaxWait: time.Minute})
		first := calls(r, context.Background(), 1)
		<-p.started
		ctx, cancel := context.WithCancel(context.Background())
		waiting := calls(r, ctx, 1)
		testwait.For(t, testwait.Timeout, "a waiter", func() bool { return r.Stats().Backlog == 1 })
		cancel()
		if err := waiting()[0]; !errors.Is(err, context.Canceled) || errors.Is(err, ErrBusy) {
			t.Fatalf("cancelled call: %v, want context.Canceled only", err)
		}
		close(p.release)
		if err := first()[0]; err != nil {
			t.Fatal(err)
		}
		if s := r.Stats(); s.Busy != 0 {
			t.Fatalf("stats %+v, want nothing busy", s)
		}
	})
}
