package scheduler

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/authlimit"
)

const authToken = "a-long-enough-test-token"

// authClock is a test clock that moves only when told.
type authClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *authClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *authClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// authFixture is a guarded handler that answers 200 "open" once past the
// guard, its limiter and its clock.
type authFixture struct {
	h     http.Handler
	lim   *authlimit.Limiter
	clock *authClock
	reg   *prometheus.Registry
}

func newAuthFixture(t *testing.T, token string) *authFixture {
	t.Helper()
	f := &authFixture{clock: &authClock{t: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}, reg: prometheus.NewRegistry()}
	f.lim = newHTTPLimiter(zerolog.Nop(), f.clock.Now)
	f.reg.MustRegister(f.lim.Collector(httpAuthMetrics))
	f.h = f.guard(token)
	return f
}

// guard returns a guard of token sharing f's limiter and clock (the same
// scheduler after its token changed).
func (f *authFixture) guard(token string) http.Handler {
	return requireTokenWith(tokenGuard{Token: token, Limiter: f.lim, Now: f.clock.Now},
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "open") }))
}

// do serves one request from remote ("ip:port") with the headers hdr.
func do(h http.Handler, remote, target string, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remote
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

func cookieHdr(v string) []string { return []string{"Cookie", tokenCookie + "=" + v} }

// sessionCookie opens / with ?token= from remote and returns the cookie set.
func sessionCookie(t *testing.T, h http.Handler, remote string) *http.Cookie {
	t.Helper()
	w := do(h, remote, "/?token="+authToken)
	if w.Code != http.StatusSeeOther {
		t.Fatalf("GET /?token=: %d %s", w.Code, w.Body)
	}
	cs := w.Result().Cookies()
	if len(cs) != 1 || cs[0].Name != tokenCookie {
		t.Fatalf("cookies %v, want one %s", cs, tokenCookie)
	}
	return cs[0]
}

func wantCode(t *testing.T, w *httptest.ResponseRecorder, code int, what string) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("%s: %d %q, want %d", what, w.Code, w.Body, code)
	}
}

func wantStats(t *testing.T, lim *authlimit.Limiter, failures, limited uint64) {
	t.Helper()
	if st := lim.Stats(); st.Failures != failures || st.Limited != limited {
		t.Fatalf("limiter %+v, want %d failures and %d refused", st, failures, limited)
	}
}

// A flood of wrong tokens from one address, over HTTP: the burst is
// checked and answered 401, every other one 429 without being checked.
// A correct token from another address works at once; from the flooded
// address it is refused too, until the address has an attempt again.
func TestTokenFloodIsSlowed(t *testing.T) {
	f := newAuthFixture(t, authToken)
	srv := httptest.NewServer(f.h)
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
				req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/status", nil)
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
	wantStats(t, f.lim, authlimit.DefaultBurst, n-authlimit.DefaultBurst)
	err := testutil.GatherAndCompare(f.reg, strings.NewReader(fmt.Sprintf(`
# HELP styx_scheduler_http_auth_limited_total Attempts refused without their credential checked (HTTP 429), their source having failed too often.
# TYPE styx_scheduler_http_auth_limited_total counter
styx_scheduler_http_auth_limited_total %d
`, n-authlimit.DefaultBurst)), "styx_scheduler_http_auth_limited_total")
	if err != nil {
		t.Fatal(err)
	}

	// Another address: at once.
	wantCode(t, do(f.h, "192.0.2.10:4000", "/api/status", bearer(authToken)...), http.StatusOK, "the token from another address")
	// The flooded address: refused unchecked, even with the token.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/status", nil)
	req.Header.Set("Authorization", "Bearer "+authToken)
	resp, err := cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the token from the flooded address: %d, want 429 until it has an attempt again", resp.StatusCode)
	}
	// A second later it has one; the token is checked and accepted, and
	// costs nothing, so it can be sent again.
	f.clock.Add(time.Second)
	for range 3 {
		resp, err := cli.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("the token from the flooded address a second later: %d, want 200", resp.StatusCode)
		}
	}
	wantStats(t, f.lim, authlimit.DefaultBurst, n-authlimit.DefaultBurst+1)
}

// A request without any credential guesses nothing: it costs nothing.
func TestNoCredentialCostsNothing(t *testing.T) {
	f := newAuthFixture(t, authToken)
	const src = "192.0.2.1:1000"
	for range 100 {
		w := do(f.h, src, "/")
		wantCode(t, w, http.StatusUnauthorized, "no credential")
		if w.Header().Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	}
	wantCode(t, do(f.h, src, "/", "Authorization", "Basic "+authToken), http.StatusUnauthorized, "another scheme")
	wantStats(t, f.lim, 0, 0)
	for range authlimit.DefaultBurst {
		wantCode(t, do(f.h, src, "/", bearer("wrong")...), http.StatusUnauthorized, "a wrong token in the burst")
	}
	w := do(f.h, src, "/", bearer("wrong")...)
	wantCode(t, w, http.StatusTooManyRequests, "a wrong token past the burst")
	if w.Header().Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", w.Header().Get("Retry-After"))
	}
	// Even while it is refused, a request without a credential is told it
	// needs one: it guesses nothing.
	wantCode(t, do(f.h, src, "/"), http.StatusUnauthorized, "no credential from a refused address")
	// Each kind of wrong credential is a failure.
	for i, hdr := range [][]string{bearer("wrong"), cookieHdr("nope"), nil} {
		src := fmt.Sprintf("192.0.2.%d:1000", 100+i)
		target := "/"
		if hdr == nil {
			target = "/?token=wrong"
		}
		for range authlimit.DefaultBurst {
			wantCode(t, do(f.h, src, target, hdr...), http.StatusUnauthorized, "a wrong credential")
		}
		wantCode(t, do(f.h, src, target, hdr...), http.StatusTooManyRequests, "a wrong credential past the burst")
	}
	wantCode(t, do(f.h, src, "/healthz", bearer("wrong")...), http.StatusOK, "/healthz stays open")
}

func TestTokenRoutes(t *testing.T) {
	f := newAuthFixture(t, authToken)
	const src = "192.0.2.1:1000"
	wantCode(t, do(f.h, src, "/api/status", bearer(authToken)...), http.StatusOK, "the bearer token")
	wantCode(t, do(f.h, src, "/healthz"), http.StatusOK, "/healthz")
	// A wrong bearer token beside a valid cookie: the cookie opens.
	c := sessionCookie(t, f.h, src)
	wantCode(t, do(f.h, src, "/", append(bearer("wrong"), cookieHdr(c.Value)...)...), http.StatusOK, "a valid cookie beside a wrong bearer token")
	// ?token= off the pages passes through, with the cookie set.
	w := do(f.h, src, "/api/status?token="+authToken)
	wantCode(t, w, http.StatusOK, "/api/status?token=")
	if len(w.Result().Cookies()) != 1 {
		t.Fatal("?token= set no cookie")
	}
	// On a page, it redirects to the address without the token.
	w = do(f.h, src, "/status?x=1&token="+authToken)
	wantCode(t, w, http.StatusSeeOther, "/status?token=")
	if loc := w.Header().Get("Location"); loc != "/status?x=1" {
		t.Fatalf("Location %q", loc)
	}
	wantStats(t, f.lim, 0, 0)
	// No token: no guard.
	open := &struct{ http.Handler }{http.NotFoundHandler()}
	if g := requireToken("", open); g != http.Handler(open) {
		t.Fatal("an empty token guards")
	}
	// The default guard works as well.
	g := requireToken(authToken, open)
	wantCode(t, do(g, src, "/x"), http.StatusUnauthorized, "default guard, no credential")
	for range authlimit.DefaultBurst {
		wantCode(t, do(g, src, "/x", bearer("wrong")...), http.StatusUnauthorized, "default guard, wrong token")
	}
	wantCode(t, do(g, src, "/x", bearer("wrong")...), http.StatusTooManyRequests, "default guard, past the burst")
	wantCode(t, do(g, "192.0.2.2:1", "/x", bearer(authToken)...), http.StatusNotFound, "default guard, the token")
}

var cookieForm = regexp.MustCompile(`^([0-9]+)\.[0-9a-f]{64}$`)

func TestCookieExpires(t *testing.T) {
	f := newAuthFixture(t, authToken)
	const src = "192.0.2.1:1000"
	start := f.clock.Now()
	c := sessionCookie(t, f.h, src)
	m := cookieForm.FindStringSubmatch(c.Value)
	if m == nil || m[1] != strconv.FormatInt(start.Add(defaultCookieTTL).Unix(), 10) {
		t.Fatalf("cookie value %q, want <expiry>.<hex HMAC> expiring in 12 h", c.Value)
	}
	if !c.HttpOnly || c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" ||
		c.MaxAge != int(defaultCookieTTL/time.Second) || !c.Expires.Equal(start.Add(defaultCookieTTL)) {
		t.Fatalf("cookie %+v: want HttpOnly, not Secure over plain HTTP, SameSite=Strict, Path=/, Max-Age and Expires 12 h", c)
	}
	if c.Value == authToken || strings.Contains(c.Value, authToken) {
		t.Fatal("the cookie carries the token")
	}
	f.clock.Add(defaultCookieTTL - time.Second)
	wantCode(t, do(f.h, src, "/events", cookieHdr(c.Value)...), http.StatusOK, "the cookie a second before it expires")
	f.clock.Add(time.Second)
	w := do(f.h, src, "/events", cookieHdr(c.Value)...)
	wantCode(t, w, http.StatusUnauthorized, "the cookie at its expiry")
	if !strings.Contains(w.Body.String(), "expired") {
		t.Fatalf("answer %q, want it to say the session expired", w.Body)
	}
	if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].Name != tokenCookie || cs[0].MaxAge >= 0 {
		t.Fatalf("cookies %v, want the expired one cleared", cs)
	}
	// An expired cookie of ours is no guess: it costs nothing.
	for range 2 * authlimit.DefaultBurst {
		wantCode(t, do(f.h, src, "/events", cookieHdr(c.Value)...), http.StatusUnauthorized, "the expired cookie again")
	}
	wantStats(t, f.lim, 0, 0)
	// Its expiry cannot be moved: the MAC signs it.
	_, sig, _ := strings.Cut(c.Value, ".")
	later := strconv.FormatInt(f.clock.Now().Add(time.Hour).Unix(), 10) + "." + sig
	wantCode(t, do(f.h, src, "/events", cookieHdr(later)...), http.StatusUnauthorized, "the cookie with a later expiry")
	wantStats(t, f.lim, 1, 0)
}

func TestCookieTTL(t *testing.T) {
	f := newAuthFixture(t, authToken)
	f.h = requireTokenWith(tokenGuard{Token: authToken, Limiter: f.lim, Now: f.clock.Now, CookieTTL: time.Minute}, http.NotFoundHandler())
	c := sessionCookie(t, f.h, "192.0.2.1:1")
	if c.MaxAge != 60 || !c.Expires.Equal(f.clock.Now().Add(time.Minute)) {
		t.Fatalf("cookie %+v, want Max-Age 60", c)
	}
	f.clock.Add(time.Minute)
	wantCode(t, do(f.h, "192.0.2.1:1", "/", cookieHdr(c.Value)...), http.StatusUnauthorized, "the cookie after its minute")
}

// A cookie is bound to the token: once the token changes, the old
// cookies are refused (and each counts as a failure).
func TestCookieBoundToToken(t *testing.T) {
	f := newAuthFixture(t, authToken)
	const src = "192.0.2.1:1000"
	c := sessionCookie(t, f.h, src)
	wantCode(t, do(f.h, src, "/", cookieHdr(c.Value)...), http.StatusOK, "the cookie under its token")
	changed := f.guard("another-long-enough-token")
	w := do(changed, src, "/", cookieHdr(c.Value)...)
	wantCode(t, w, http.StatusUnauthorized, "the cookie after the token changed")
	if cs := w.Result().Cookies(); len(cs) != 1 || cs[0].MaxAge >= 0 {
		t.Fatalf("cookies %v, want the refused one cleared", cs)
	}
	wantStats(t, f.lim, 1, 0)
	for _, v := range []string{"", ".", "1.2", c.Value + "0", "x" + c.Value, "99999999999999999999." + strings.Repeat("0", 64)} {
		wantCode(t, do(f.h, "192.0.2.50:1", "/", cookieHdr(v)...), http.StatusUnauthorized, fmt.Sprintf("cookie %q", v))
		f.clock.Add(time.Second) // one attempt earned back each time
	}
}

// Over TLS the cookie is Secure.
func TestCookieSecureOverTLS(t *testing.T) {
	f := newAuthFixture(t, authToken)
	srv := httptest.NewTLSServer(f.h)
	defer srv.Close()
	cli := srv.Client()
	defer cli.CloseIdleConnections()
	cli.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := cli.Get(srv.URL + "/?token=" + authToken)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cs := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || len(cs) != 1 || !cs[0].Secure || !cs[0].HttpOnly {
		t.Fatalf("%d, cookies %+v: want a redirect with one Secure, HttpOnly cookie", resp.StatusCode, cs)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events", nil)
	req.AddCookie(&http.Cookie{Name: cs[0].Name, Value: cs[0].Value})
	resp, err = cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the cookie over TLS: %d", resp.StatusCode)
	}
}
