package registration

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const key = "/test/registrations/a"

// events collects a registrar's callbacks.
type events struct {
	registered chan clientv3.LeaseID
	lost       chan struct{}
}

func newEvents() *events {
	return &events{registered: make(chan clientv3.LeaseID, 10), lost: make(chan struct{}, 10)}
}

func (e *events) config(cli *clientv3.Client, value func() (string, error)) Config {
	return Config{
		Client: cli, Key: key, TTL: 2 * time.Second, Value: value,
		OnRegistered:  func(l clientv3.LeaseID) { e.registered <- l },
		OnLost:        func() { e.lost <- struct{}{} },
		RetryInterval: 10 * time.Millisecond,
	}
}

func (e *events) nextRegistration(t *testing.T) clientv3.LeaseID {
	t.Helper()
	select {
	case l := <-e.registered:
		return l
	case <-e.lost:
		t.Fatal("OnLost called, want a registration")
	case <-time.After(10 * time.Second):
		t.Fatal("not registered within 10s")
	}
	return 0
}

// run starts r.Run; the returned func cancels it and waits for it.
func run(t *testing.T, r *Registrar) (stop func() time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	stopped := false
	stop = func() time.Duration {
		if stopped {
			return 0
		}
		stopped = true
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return within 10s of its context ending")
		}
		return time.Since(start)
	}
	t.Cleanup(func() { stop() })
	return stop
}

// stored returns the key's value and lease, or ok false when absent.
func stored(t *testing.T, cli *clientv3.Client) (string, clientv3.LeaseID, bool) {
	t.Helper()
	resp, err := cli.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), clientv3.LeaseID(resp.Kvs[0].Lease), true
}

// TestLeaseLossRegistersAgain revokes the registration's lease, as etcd
// does when it expires: the registrar reports the loss, registers again on
// a new lease, and revokes that one when it stops.
func TestLeaseLossRegistersAgain(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ev := newEvents()
	r, err := New(ev.config(cli, func() (string, error) { return "v", nil }), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, r)

	first := ev.nextRegistration(t)
	if v, l, ok := stored(t, cli); !ok || v != "v" || l != first || r.Lease() != first {
		t.Fatalf("stored %q on lease %x (present %v), Lease() %x; want \"v\" on %x", v, l, ok, r.Lease(), first)
	}

	if _, err := cli.Revoke(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ev.lost:
	case <-time.After(10 * time.Second):
		t.Fatal("OnLost not called within 10s of the lease's revocation")
	}
	second := ev.nextRegistration(t)
	if second == first {
		t.Fatalf("registered again on the lost lease %x", first)
	}
	if _, l, ok := stored(t, cli); !ok || l != second || r.Lease() != second {
		t.Fatalf("key on lease %x (present %v), Lease() %x; want the new lease %x", l, ok, r.Lease(), second)
	}

	if took := stop(); took > 2*time.Second {
		t.Errorf("stopping took %s", took)
	}
	if _, _, ok := stored(t, cli); ok {
		t.Error("key still present after Run returned: the lease was not revoked")
	}
	ttl, err := cli.TimeToLive(context.Background(), second)
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL != -1 {
		t.Errorf("lease %x still alive (ttl %ds) after Run returned", second, ttl.TTL)
	}
	if r.Lease() != clientv3.NoLease {
		t.Errorf("Lease() %x after Run returned, want none", r.Lease())
	}
	select {
	case <-ev.lost:
		t.Error("OnLost called for a clean stop")
	default:
	}
}

// TestKeepsLeaseAlive sees the first lease outlive its TTL twice over.
func TestKeepsLeaseAlive(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ev := newEvents()
	cfg := ev.config(cli, func() (string, error) { return "v", nil })
	cfg.TTL = time.Second
	r, err := New(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	run(t, r)
	lease := ev.nextRegistration(t)
	granted := time.Now()
	testwait.For(t, testwait.Timeout, "the lease alive two TTLs after its grant", func() bool {
		ttl, err := cli.TimeToLive(context.Background(), lease)
		if err != nil || ttl.TTL < 0 { // -1: expired; 0: under a second left
			t.Fatalf("lease %x gone after %s (%v): not kept alive", lease, time.Since(granted), err)
		}
		return time.Since(granted) > 2*cfg.TTL
	})
	if _, l, ok := stored(t, cli); !ok || l != lease {
		t.Fatalf("key on lease %x (present %v), want %x", l, ok, lease)
	}
}

// TestValueChanges: a failing Value is retried without a lease lost; a
// value that changes while the registrar registers (when a caller cannot
// Refresh yet) is written again; Refresh rewrites it under the same lease.
func TestValueChanges(t *testing.T) {
	_, cli := etcdtest.Start(t)
	ev := newEvents()
	var (
		mu    sync.Mutex
		calls int
		state = "starting"
	)
	value := func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			return "", errors.New("not ready yet")
		}
		v := state
		if v == "starting" {
			// Changed by someone else just after the registrar read it.
			state = "draining"
		}
		return v, nil
	}
	r, err := New(ev.config(cli, value), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Refresh(context.Background()); err == nil {
		t.Error("Refresh before registering: no error")
	}
	run(t, r)
	lease := ev.nextRegistration(t)
	if v, l, _ := stored(t, cli); v != "draining" || l != lease {
		t.Fatalf("stored %q on %x, want the value as it is once registered, \"draining\", on %x", v, l, lease)
	}
	mu.Lock()
	state = "v2"
	mu.Unlock()
	if err := r.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v, l, _ := stored(t, cli); v != "v2" || l != lease {
		t.Fatalf("after Refresh %q on %x, want v2 on %x", v, l, lease)
	}
	select {
	case <-ev.lost:
		t.Error("OnLost called though no lease was lost")
	default:
	}
}

func TestConfigValidate(t *testing.T) {
	_, cli := etcdtest.Start(t)
	value := func() (string, error) { return "", nil }
	good := Config{Client: cli, Key: key, TTL: time.Second, Value: value}
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"nil client": func(c *Config) { c.Client = nil },
		"empty key":  func(c *Config) { c.Key = "" },
		"short ttl":  func(c *Config) { c.TTL = 999 * time.Millisecond },
		"nil value":  func(c *Config) { c.Value = nil },
	} {
		c := good
		mod(&c)
		if _, err := New(c, zerolog.Nop()); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
