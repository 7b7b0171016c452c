package api

import (
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
)

// FuzzThreatsSample: any query string either gives one n from 1 to the
// capacity, exactly when it holds one such decimal n, or an error.
func FuzzThreatsSample(f *testing.F) {
	for _, s := range []string{"", "n=1", "n=500", "n=501", "n=0", "n=-1", "n=+5", "n=1&n=1", "n=%00", "n=007", "n=1e2", "x=1"} {
		f.Add(s)
	}
	fx := newThreatsFixture(f, 500, nil)
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/threats.json", nil)
		r.URL.RawQuery = raw
		n, err := fx.api.threatsSample(r)
		q, _ := url.ParseQuery(raw)
		vals, has := q["n"]
		if !has {
			if err != nil || n != DefaultThreatsSample {
				t.Fatalf("%q: %d %v", raw, n, err)
			}
			return
		}
		want, perr := strconv.Atoi(vals[0])
		valid := len(vals) == 1 && perr == nil && want >= 1 && want <= 500 && vals[0][0] != '+' && vals[0][0] != '-'
		if valid != (err == nil) || (valid && n != want) {
			t.Fatalf("%q: n %d err %v, want valid=%v n=%d", raw, n, err, valid, want)
		}
	})
}
