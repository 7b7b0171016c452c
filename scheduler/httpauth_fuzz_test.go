package scheduler

import (
	"testing"
	"time"
)

// FuzzCheckCookie: the visualiser cookie is the one input of the HTTP
// guard that an unauthenticated client shapes freely. No value panics, and
// only a value signed with the token is taken as signed.
func FuzzCheckCookie(f *testing.F) {
	const token = "fuzz-token-0123456789"
	now := time.Unix(1_800_000_000, 0)
	f.Add(cookieValue(token, now.Add(time.Hour)))
	f.Add(cookieValue(token, now.Add(-time.Hour)))
	f.Add(cookieValue("another-token-0123456789", now.Add(time.Hour)))
	f.Add("")
	f.Add(".")
	f.Add("-1.00")
	f.Add("+9223372036854775807.zz")
	f.Fuzz(func(t *testing.T, v string) {
		signed, live := checkCookie(token, v, now)
		if live && !signed {
			t.Fatalf("%q live but not signed", v)
		}
		if signed {
			if _, other := checkCookie("another-token-0123456789", v, now); other {
				t.Fatalf("%q signed under two tokens", v)
			}
		}
	})
}
