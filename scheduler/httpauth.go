package scheduler

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
)

// tokenCookie holds a digest of the HTTP token once a page was opened with
// ?token=: EventSource cannot send an Authorization header.
const tokenCookie = "styx_token"

// requireToken guards every route but /healthz with token (no guard when
// token is empty). It accepts "Authorization: Bearer <token>", the cookie,
// or ?token=<token>, which sets the cookie (HttpOnly, SameSite=Strict); a
// page opened that way is redirected to its address without the token.
func requireToken(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	want := sha256.Sum256([]byte(token))
	cookieSum := sha256.Sum256([]byte("styx visualiser cookie\x00" + token))
	cookieVal := hex.EncodeToString(cookieSum[:])
	okToken := func(s string) bool {
		got := sha256.Sum256([]byte(s))
		return subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && okToken(a) {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(tokenCookie); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(cookieVal)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		q := r.URL.Query()
		if t := q.Get("token"); t != "" && okToken(t) {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: cookieVal, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			if r.Method == http.MethodGet && (r.URL.Path == "/" || r.URL.Path == "/status") {
				q.Del("token")
				u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
				http.Redirect(w, r, u.String(), http.StatusSeeOther)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="styx-scheduler"`)
		http.Error(w, "unauthorized: this scheduler's HTTP routes need its token (Authorization: Bearer <token>, or ?token=<token> once in the browser)", http.StatusUnauthorized)
	})
}
