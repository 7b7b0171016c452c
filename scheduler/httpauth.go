package scheduler

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/authlimit"
)

// tokenCookie holds a session once a page was opened with ?token=:
// EventSource cannot send an Authorization header.
const tokenCookie = "styx_token"

// defaultCookieTTL is how long a visualiser session cookie is valid.
const defaultCookieTTL = 12 * time.Hour

// cookieLabel starts the message a session cookie signs, so that its MAC
// cannot serve as any other MAC keyed by the token.
const cookieLabel = "styx visualiser cookie|"

// httpAuthMetrics prefixes the metrics of the HTTP token's limiter:
// styx_scheduler_http_auth_failures_total and the others.
const httpAuthMetrics = "styx_scheduler_http"

// tokenGuard configures requireTokenWith.
type tokenGuard struct {
	// Token is the HTTP token; "" leaves every route open.
	Token string
	// Limiter slows down wrong credentials, per source address; nil: one
	// with authlimit's defaults that logs nothing.
	Limiter *authlimit.Limiter
	// CookieTTL is how long a session cookie is valid (defaultCookieTTL
	// when not positive).
	CookieTTL time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// newHTTPLimiter returns the limiter of wrong HTTP tokens (authlimit's
// defaults; now nil for time.Now). Its metrics, for the caller to
// register: lim.Collector(httpAuthMetrics).
func newHTTPLimiter(log zerolog.Logger, now func() time.Time) *authlimit.Limiter {
	lim, err := authlimit.New(authlimit.Config{What: "scheduler HTTP token", Now: now}, log)
	if err != nil {
		panic(err) // not reached: authlimit's defaults are valid
	}
	return lim
}

// requireToken is requireTokenWith with the defaults: a limiter of its
// own that logs nothing and exports no metrics, cookies valid for
// defaultCookieTTL.
func requireToken(token string, next http.Handler) http.Handler {
	return requireTokenWith(tokenGuard{Token: token}, next)
}

// requireTokenWith guards every route but /healthz with g.Token (no guard
// when it is empty). It accepts "Authorization: Bearer <token>", the
// session cookie, or ?token=<token>, which sets the cookie (HttpOnly,
// SameSite=Strict, Secure over TLS, valid for g.CookieTTL); a page opened
// that way is redirected to its address without the token.
//
// The cookie is "<expiry, Unix seconds>.<hex HMAC-SHA256 keyed by the
// token of cookieLabel and the expiry>": it is refused after its expiry,
// and as soon as the token changes.
//
// A request with none of the three is answered 401 and costs nothing.
// One with any asks g.Limiter first, by source address: while the source
// has failed too often, it is answered 429 with Retry-After and its
// credential is not checked, even a correct one. A wrong credential is a
// failure; a cookie this guard signed that has expired is not (it is
// answered 401 and cleared).
func requireTokenWith(g tokenGuard, next http.Handler) http.Handler {
	if g.Token == "" {
		return next
	}
	if g.Now == nil {
		g.Now = time.Now
	}
	if g.CookieTTL <= 0 {
		g.CookieTTL = defaultCookieTTL
	}
	lim := g.Limiter
	if lim == nil {
		lim = newHTTPLimiter(zerolog.Nop(), g.Now)
	}
	want := sha256.Sum256([]byte(g.Token))
	okToken := func(s string) bool {
		got := sha256.Sum256([]byte(s))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		cookie, err := r.Cookie(tokenCookie)
		hasCookie := err == nil
		q := r.URL.Query()
		qToken := q.Get("token")
		if !hasBearer && !hasCookie && qToken == "" {
			unauthorized(w, "unauthorized: this scheduler's HTTP routes need its token (Authorization: Bearer <token>, or ?token=<token> once in the browser)")
			return
		}
		src := authlimit.Source(r.RemoteAddr)
		if wait, ok := lim.Allow(src); !ok {
			after := authlimit.RetryAfter(wait)
			w.Header().Set("Retry-After", after)
			http.Error(w, "too many failed authentications from this address: retry in "+after+" s", http.StatusTooManyRequests)
			return
		}
		now := g.Now()
		bearerOK := hasBearer && okToken(bearer)
		signed, live := false, false
		if hasCookie {
			signed, live = checkCookie(g.Token, cookie.Value, now)
		}
		queryOK := qToken != "" && okToken(qToken)
		if !bearerOK && !live && !queryOK {
			if hasCookie {
				clearCookie(w, r)
			}
			// A wrong guess in any of the three is a failure; a cookie
			// we signed that merely expired is not.
			if (hasBearer && !bearerOK) || (hasCookie && !signed) || qToken != "" {
				lim.Failed(src)
				unauthorized(w, "unauthorized: wrong token")
				return
			}
			lim.Succeeded(src)
			unauthorized(w, "unauthorized: the session has expired: open the page with ?token=<token> again")
			return
		}
		lim.Succeeded(src)
		if queryOK {
			exp := now.Add(g.CookieTTL)
			http.SetCookie(w, &http.Cookie{
				Name: tokenCookie, Value: cookieValue(g.Token, exp), Path: "/",
				Expires: exp, MaxAge: int(g.CookieTTL / time.Second),
				HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
			})
			if r.Method == http.MethodGet && (r.URL.Path == "/" || r.URL.Path == "/status") {
				q.Del("token")
				u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
				http.Redirect(w, r, u.String(), http.StatusSeeOther)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="styx-scheduler"`)
	http.Error(w, msg, http.StatusUnauthorized)
}

// clearCookie tells the browser to drop a session cookie that was
// refused, so that it stops sending it.
func clearCookie(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: tokenCookie, Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// cookieMAC signs a cookie's expiry (its decimal text) with token.
func cookieMAC(token, expiry string) []byte {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte(cookieLabel + expiry))
	return m.Sum(nil)
}

// cookieValue is the session cookie valid until exp.
func cookieValue(token string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	return e + "." + hex.EncodeToString(cookieMAC(token, e))
}

// checkCookie reports whether v is a session cookie signed with token,
// and whether it is also still valid at now.
func checkCookie(token, v string, now time.Time) (signed, live bool) {
	e, sig, ok := strings.Cut(v, ".")
	if !ok {
		return false, false
	}
	exp, err := strconv.ParseInt(e, 10, 64)
	if err != nil {
		return false, false
	}
	mac, err := hex.DecodeString(sig)
	if err != nil || !hmac.Equal(mac, cookieMAC(token, e)) {
		return false, false
	}
	return true, now.Unix() < exp
}
