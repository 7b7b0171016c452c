package api

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/styx-inference/styx/clusternode/internal/threats"
	"github.com/styx-inference/styx/pkg/locdb"
)

// The threats page's paths.
const (
	ThreatsPath     = "/threats"
	ThreatsJSONPath = "/threats.json"
	threatsJSPath   = "/threats.js"
	threatsCSSPath  = "/threats.css"
)

// DefaultThreatsSample is how many addresses the threats page shows when
// the request names no n (at most the window's capacity).
const DefaultThreatsSample = 100

// threatsCSP allows the page its own script, style and JSON, and nothing
// else: no inline script, no other origin.
const threatsCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed threatspage/threats.html threatspage/threats.js threatspage/threats.css
var threatsFiles embed.FS

var threatsPage = template.Must(template.ParseFS(threatsFiles, "threatspage/threats.html"))

// threatsPageData fills threats.html.
type threatsPageData struct {
	Node     string
	Licence  string
	Capacity int
	Sample   int
}

// threatsHandlers returns the handlers of the threats page, by path.
func (a *API) threatsHandlers() (map[string]http.HandlerFunc, error) {
	asset := func(name, ctype string) (http.HandlerFunc, error) {
		b, err := threatsFiles.ReadFile("threatspage/" + name)
		if err != nil {
			return nil, fmt.Errorf("api: threats page: %w", err)
		}
		return func(w http.ResponseWriter, r *http.Request) {
			if !getOrHead(w, r) {
				return
			}
			w.Header().Set("Content-Type", ctype)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				_, _ = w.Write(b)
			}
		}, nil
	}
	js, err := asset("threats.js", "text/javascript; charset=utf-8")
	if err != nil {
		return nil, err
	}
	css, err := asset("threats.css", "text/css; charset=utf-8")
	if err != nil {
		return nil, err
	}
	return map[string]http.HandlerFunc{
		ThreatsPath:     a.serveThreatsPage,
		ThreatsJSONPath: a.serveThreatsJSON,
		threatsJSPath:   js,
		threatsCSSPath:  css,
	}, nil
}

// getOrHead answers 405 for any other method and reports whether the
// request may go on.
func getOrHead(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "method "+r.Method+" not allowed: use GET", http.StatusMethodNotAllowed)
	return false
}

// threatsSample reads the request's n: absent means the default; anything
// but one decimal integer from 1 to the window's capacity is an error.
func (a *API) threatsSample(r *http.Request) (int, error) {
	capacity := a.cfg.Threats.Capacity()
	vals, ok := r.URL.Query()["n"]
	if !ok {
		return min(DefaultThreatsSample, capacity), nil
	}
	bad := fmt.Errorf("n must be an integer from 1 to %d", capacity)
	if len(vals) != 1 {
		return 0, fmt.Errorf("%w, given once", bad)
	}
	v := vals[0]
	n, err := strconv.Atoi(v)
	if err != nil || v[0] == '+' || v[0] == '-' {
		if len(v) > 32 {
			v = v[:32] + "…"
		}
		return 0, fmt.Errorf("%w, not %q", bad, v)
	}
	if n < 1 || n > capacity {
		return 0, fmt.Errorf("%w, not %d", bad, n)
	}
	return n, nil
}

func (a *API) serveThreatsPage(w http.ResponseWriter, r *http.Request) {
	if !getOrHead(w, r) {
		return
	}
	h := w.Header()
	h.Set(LicenceHeader, locdb.Attribution)
	n, err := a.threatsSample(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var buf bytes.Buffer
	if err := threatsPage.Execute(&buf, threatsPageData{
		Node: a.cfg.NodeID, Licence: locdb.Attribution, Capacity: a.cfg.Threats.Capacity(), Sample: n,
	}); err != nil {
		a.log.Error().Err(err).Msg("render threats page")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", threatsCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

func (a *API) serveThreatsJSON(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set(LicenceHeader, locdb.Attribution)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		status, out, _ := errorBody(&Error{Status: http.StatusMethodNotAllowed, Message: "method " + r.Method + " not allowed: use GET"}, true)
		a.writeJSON(w, status, out, true)
		return
	}
	n, err := a.threatsSample(r)
	if err != nil {
		status, out, _ := errorBody(badRequest("%s", err.Error()), true)
		a.writeJSON(w, status, out, true)
		return
	}
	now := a.cfg.Now()
	sample := a.cfg.Threats.Sample(n)
	list := make([]object, len(sample))
	for i, e := range sample {
		list[i] = a.threat(e)
	}
	a.writeJSON(w, http.StatusOK, object{
		fv("status", "ok"),
		fv("node", a.cfg.NodeID),
		fv("time_unix", now.Unix()),
		fv("held", a.cfg.Threats.Len()),
		fv("capacity", a.cfg.Threats.Capacity()),
		fv("count", len(list)),
		fv("licence", locdb.Attribution),
		fv("threats", list),
	}, true)
}

// threat is one entry of /threats.json: the verdict, then what the
// location database says about the address.
func (a *API) threat(e threats.Entry) object {
	o := object{fv("address", e.Addr.String())}
	o = appendStr(o, "type", e.Type)
	if e.Port != 0 {
		o = append(o, fv("port", e.Port))
	}
	o = append(o, fv("risk", e.Risk))
	o = append(o, a.location(e.Addr)...)
	seen := int64(0) // inference time unknown
	if !e.Seen.IsZero() {
		seen = e.Seen.Unix()
	}
	return append(o, fv("last_seen_unix", seen))
}

// location returns asn, provider, country and isocode of addr, each when
// known.
func (a *API) location(addr netip.Addr) object {
	n, ok := a.cfg.Locator.Lookup(addr)
	if !ok {
		return nil
	}
	var o object
	if n.ASN != 0 {
		o = append(o, asnField("asn", n.ASN))
	}
	o = appendStr(o, "provider", n.ASName)
	o = appendStr(o, "country", n.CountryName)
	return appendStr(o, "isocode", n.Country)
}
