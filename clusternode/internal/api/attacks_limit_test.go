package api

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/styx-inference/styx/pkg/authlimit"
)

// limitClock is a test clock that moves only when told.
type limitClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *limitClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *limitClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newLimitFixture is a node taking attack reports, on a clock of the
// test's.
func newLimitFixture(t *testing.T) (*fixture, *limitClock) {
	t.Helper()
	c := &limitClock{t: now}
	f := newFixture(t, func(cfg *Config) {
		withAttacks(cfg)
		cfg.Now = c.Now
	})
	return f, c
}

// postFrom posts one good report from remote with the Authorization auth
// ("" for none).
func (f *fixture) postFrom(remote, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", AttacksPath, strings.NewReader("203.0.113.9,2025-06-01T11:00:00Z,login\n"))
	r.RemoteAddr = remote
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	f.api.ServeHTTP(w, r)
	return w
}

func wantLimit(t *testing.T, f *fixture, failures, limited uint64) {
	t.Helper()
	if st := f.api.attackLimit.Stats(); st.Failures != failures || st.Limited != limited {
		t.Fatalf("limiter %+v, want %d failures and %d refused", st, failures, limited)
	}
}

// A flood of wrong tokens from one address, over HTTP: the burst is
// checked and answered 401, every other one 429 without being checked.
// The token from another address works at once; from the flooded address
// it is refused too, until the address has an attempt again.
func TestAttackTokenFloodIsSlowed(t *testing.T) {
	f, clock := newLimitFixture(t)
	srv := httptest.NewServer(f.api)
	defer srv.Close()
	cli := srv.Client()
	defer cli.CloseIdleConnections()

	const n, workers = 5000, 8
	var (
		mu    sync.Mutex
		codes = map[int]int{}
		wg    sync.WaitGroup
		errs  = make(chan error, workers)
	)
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k; i < n; i += workers {
				req, _ := http.NewRequest(http.MethodPost, srv.URL+AttacksPath, strings.NewReader("203.0.113.9,2025-06-01T11:00:00Z,login\n"))
				req.Header.Set("Authorization", fmt.Sprintf("Bearer wrong-guess-%d", i))
				resp, err := cli.Do(req)
				if err != nil {
					errs <- err
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "1" {
					errs <- fmt.Errorf("429 with Retry-After %q, want 1", resp.Header.Get("Retry-After"))
					return
				}
				mu.Lock()
				codes[resp.StatusCode]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if codes[http.StatusUnauthorized] != authlimit.DefaultBurst || codes[http.StatusTooManyRequests] != n-authlimit.DefaultBurst || len(codes) != 2 {
		t.Fatalf("answers %v, want %d × 401 and the rest 429", codes, authlimit.DefaultBurst)
	}
	wantLimit(t, f, authlimit.DefaultBurst, n-authlimit.DefaultBurst)
	err := testutil.GatherAndCompare(f.reg, strings.NewReader(fmt.Sprintf(`
# HELP styx_node_http_auth_limited_total Attempts refused without their credential checked (HTTP 429), their source having failed too often.
# TYPE styx_node_http_auth_limited_total counter
styx_node_http_auth_limited_total %d
# HELP styx_node_http_auth_failures_total Credentials checked and found wrong (HTTP 401).
# TYPE styx_node_http_auth_failures_total counter
styx_node_http_auth_failures_total %d
`, n-authlimit.DefaultBurst, authlimit.DefaultBurst)), "styx_node_http_auth_limited_total", "styx_node_http_auth_failures_total")
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(f.api.attackRequests.WithLabelValues("429")); got != n-authlimit.DefaultBurst {
		t.Fatalf("styx_node_attack_requests_total{code=429} %v", got)
	}

	// Another address: at once.
	w := f.postFrom("198.51.100.7:4000", "Bearer "+token)
	if w.Code != http.StatusOK {
		t.Fatalf("the token from another address: %d %s", w.Code, w.Body)
	}
	// The flooded address: refused unchecked, even with the token.
	post := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+AttacksPath, strings.NewReader("203.0.113.9,2025-06-01T11:00:00Z,login\n"))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := post(); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the token from the flooded address: %d, want 429 until it has an attempt again", resp.StatusCode)
	}
	// A second later it has one; the token is checked and accepted, and
	// costs nothing, so it can be sent again.
	clock.Add(time.Second)
	for range 3 {
		if resp := post(); resp.StatusCode != http.StatusOK {
			t.Fatalf("the token from the flooded address a second later: %d, want 200", resp.StatusCode)
		}
	}
	wantLimit(t, f, authlimit.DefaultBurst, n-authlimit.DefaultBurst+1)
}

func TestAttackTokenLimitPerSource(t *testing.T) {
	f, clock := newLimitFixture(t)
	const src = "192.0.2.1:1000"
	// No header: 401, at no cost, even while the source is refused.
	for range 50 {
		if w := f.postFrom(src, ""); w.Code != http.StatusUnauthorized {
			t.Fatalf("no header: %d", w.Code)
		}
	}
	wantLimit(t, f, 0, 0)
	// Any header is checked: a wrong scheme fails too.
	for _, auth := range []string{"Basic " + token, "Bearer nope", "Bearer " + token[:10], "Bearer x", "Bearer y"} {
		if w := f.postFrom(src, auth); w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") == "" {
			t.Fatalf("%q: %d, want 401 with WWW-Authenticate", auth, w.Code)
		}
	}
	w := f.postFrom(src, "Bearer nope")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("past the burst: %d, Retry-After %q; want 429 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	if a := decode(t, w); a.Status != "error" || !strings.Contains(a.Message, "too many wrong tokens from this address: retry in 1 s") {
		t.Fatalf("answer %+v", a)
	}
	if w := f.postFrom(src, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("no header from a refused address: %d, want 401", w.Code)
	}
	// One IPv6 /64 is one source.
	for i := range authlimit.DefaultBurst {
		if w := f.postFrom(fmt.Sprintf("[2001:db8:1:2::%x]:1", i+1), "Bearer nope"); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong token %d from the /64: %d", i, w.Code)
		}
	}
	if w := f.postFrom("[2001:db8:1:2:ffff::1]:1", "Bearer "+token); w.Code != http.StatusTooManyRequests {
		t.Fatalf("the token from another address of the flooded /64: %d, want 429", w.Code)
	}
	if w := f.postFrom("[2001:db8:1:3::1]:1", "Bearer "+token); w.Code != http.StatusOK {
		t.Fatalf("the token from the next /64: %d, want 200", w.Code)
	}
	// Successes cost nothing.
	clock.Add(time.Hour)
	for range 3 * authlimit.DefaultBurst {
		if w := f.postFrom(src, "Bearer "+token); w.Code != http.StatusOK {
			t.Fatalf("the token: %d", w.Code)
		}
	}
	wantLimit(t, f, 2*authlimit.DefaultBurst, 2)
}

func TestAttackLimitOnlyWithAToken(t *testing.T) {
	f := newFixture(t, nil)
	if f.api.attackLimit != nil {
		t.Fatal("a limiter without an attack token")
	}
	if w := f.postFrom("192.0.2.1:1", "Bearer "+token); w.Code != http.StatusForbidden {
		t.Fatalf("disabled endpoint: %d", w.Code)
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "styx_node_http_auth") {
			t.Fatalf("%s exported without an attack token", mf.GetName())
		}
	}
}
