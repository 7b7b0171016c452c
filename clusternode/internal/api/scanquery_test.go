package api

import (
	"net/url"
	"strings"
	"testing"
)

// TestScanQueryMatchesParseQuery checks that the in-place query reader
// accepts, refuses and reads flags exactly as url.ParseQuery does.
func TestScanQueryMatchesParseQuery(t *testing.T) {
	for _, raw := range []string{
		"",
		"vpn=1&asn=1",
		"vpn=1&vpn=2",
		"asn&seen=1",
		"asn=&p=0",
		"&&vpn=3&",
		"=1&vpn",
		"p=0&tag=a%20b",
		"tag=a+b",
		"vpn=1;asn=1",
		"vpn=%zz",
		"%zz=1&vpn=2",
		"risk=2&days=7&node=1&time=1&short=1",
		"unknown=x&vpn=2",
		strings.Repeat("x=1&", fastQueryPairs+1) + "vpn=1",
	} {
		got, ok := scanQuery(raw)
		vals, err := url.ParseQuery(raw)
		if ok != (err == nil) {
			t.Errorf("%q: ok %v, url.ParseQuery error %v", raw, ok, err)
			continue
		}
		if !ok {
			continue
		}
		for i, n := range queryFlagNames {
			if got.v[i] != vals.Get(n) || got.has[i] != vals.Has(n) {
				t.Errorf("%q: flag %s = %q (present %v), want %q (present %v)", raw, n, got.v[i], got.has[i], vals.Get(n), vals.Has(n))
			}
		}
	}
}

// TestParseGETAllocations keeps the usual GET's parse cheap: at most the
// one-item slice it returns.
func TestParseGETAllocations(t *testing.T) {
	n := testing.AllocsPerRun(100, func() {
		if _, err := Parse("GET", "/v2/192.0.2.1", "vpn=1&asn=1", "", nil, 100); err != nil {
			t.Fatal(err)
		}
	})
	if n > 1 {
		t.Errorf("Parse of a GET: %.0f allocations, want at most 1", n)
	}
}
