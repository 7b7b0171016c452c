package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// FuzzQuery feeds arbitrary paths, query strings, content types and bodies
// to the parser and then to the whole handler: the parser must keep its
// promises and every answer must be JSON with a status.
func FuzzQuery(f *testing.F) {
	for _, s := range []struct{ method, path, query, ctype, body string }{
		{"GET", "/v2/8.8.8.8", "asn=1&risk=1&vpn=1", "", ""},
		{"GET", "/v2/2001:4860::1", "short=1&p=0&time=1", "", ""},
		{"GET", "/v2/fe80::1%eth0", "", "", ""},
		{"POST", "/v2/", "node=1&seen=1&days=3", form, "ips=8.8.8.8,88.198.1.1,x"},
		{"POST", "/v2/1.2.3.4", "", "", "ips=%zz"},
		{"POST", "/v2", "tag=a", "application/json", `{"ips":[]}`},
		{"PUT", "/v2/", "", "", ""},
		{"GET", "/v2/" + strings.Repeat("9", 100), "p=", "", ""},
	} {
		f.Add(s.method, s.path, s.query, s.ctype, []byte(s.body))
	}
	fx := newFixture(f, nil)
	f.Fuzz(func(t *testing.T, method, path, query, ctype string, body []byte) {
		req, perr := Parse(method, path, query, ctype, body, fx.api.cfg.MaxAddresses)
		if perr == nil {
			if len(req.Items) == 0 || len(req.Items) > fx.api.cfg.MaxAddresses {
				t.Fatalf("%d items", len(req.Items))
			}
			seen := map[string]bool{}
			for _, it := range req.Items {
				if seen[it.Raw] {
					t.Fatalf("duplicate key %q", it.Raw)
				}
				seen[it.Raw] = true
				if (it.Err == "") != it.Addr.IsValid() || (it.Err == "" && (it.Addr.Zone() != "" || it.Addr.Is4In6())) {
					t.Fatalf("item %+v", it)
				}
			}
		} else if perr.Status < 400 || perr.Status > 499 || perr.Message == "" {
			t.Fatalf("error %+v", perr)
		}

		if !validMethod(method) {
			return // net/http would refuse such a request before us
		}
		r := &http.Request{
			Method: method, URL: &url.URL{Path: path, RawQuery: query},
			Header: http.Header{}, Body: io.NopCloser(bytes.NewReader(body)),
			ContentLength: int64(len(body)), RequestURI: path,
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		fx.api.ServeHTTP(w, r)
		if w.Code >= 300 && w.Code < 400 {
			return // the mux cleaning a path
		}
		var out struct{ Status string }
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Status == "" {
			t.Fatalf("%s %q %q: %d %q", method, path, query, w.Code, w.Body)
		}
	})
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, c := range m {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", c) {
			return false
		}
	}
	return true
}
