package api

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/clusternode/internal/threats"
	"github.com/styx-inference/styx/pkg/authlimit"
	"github.com/styx-inference/styx/pkg/locdb"
	"github.com/styx-inference/styx/pkg/logging"
	"github.com/styx-inference/styx/pkg/raven"
	"github.com/styx-inference/styx/pkg/verdict"
)

// LicenceHeader carries the location data credit on every /v2 response.
const LicenceHeader = "X-Data-Licence"

// VerdictStore is what the API needs from the node's store.
type VerdictStore interface {
	// LookupVerdict returns the stored verdict; LastSeen the last time
	// the address was queried (zero when never), asked only when the
	// answer shows it.
	LookupVerdict(addr netip.Addr) (verdict.Verdict, bool, error)
	LastSeen(addr netip.Addr) (time.Time, error)
	Touch(addr netip.Addr, t time.Time)
	Attacks(addr netip.Addr) (store.AttackHistory, error)
}

// Config configures the API.
type Config struct {
	NodeID  string
	Store   VerdictStore
	Locator raven.Locator
	// Engine answers addresses the store has no verdict for.
	Engine raven.Engine
	// Sighted, when set, is called for every answered address that is
	// global unicast and not private (the ones worth streaming to STYX).
	// It must not block.
	Sighted func(addr netip.Addr, now time.Time)
	// MaxAddresses per query and MaxBody bytes per POST body.
	MaxAddresses int
	MaxBody      int64
	// Registerer receives the API's metrics; Gatherer serves /metrics.
	// Either may be nil.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Health, when set, adds fields to /healthz (e.g. uplink state).
	Health func() map[string]any
	// Unhealthy, when set, is asked on every /healthz: a reason ("" when
	// healthy) makes the answer a 503 with status "unhealthy" and that
	// reason, Health's fields still shown.
	Unhealthy func() string
	// AttackToken enables POST /v2/attacks for requests that carry it as
	// a bearer token; "" disables the endpoint (403). Attacks takes the
	// reports; AttackMaxBody and AttackMaxReports bound one request
	// (defaults 8 MiB and 10,000).
	AttackToken      string
	Attacks          AttackSink
	AttackMaxBody    int64
	AttackMaxReports int
	// Threats, when set, serves the public threats page (/threats) and its
	// JSON (/threats.json) from this window of recent proxy verdicts.
	Threats *threats.Recent
	// Now defaults to time.Now.
	Now func() time.Time
}

// Validate reports a configuration error.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("api: empty node id")
	case c.Store == nil:
		return errors.New("api: nil store")
	case c.Locator == nil:
		return errors.New("api: nil locator")
	case c.Engine == nil:
		return errors.New("api: nil engine")
	case c.MaxAddresses < 1:
		return fmt.Errorf("api: max addresses %d below 1", c.MaxAddresses)
	case c.MaxBody < 1:
		return fmt.Errorf("api: max body %d below 1", c.MaxBody)
	case c.AttackToken != "" && c.Attacks == nil:
		return errors.New("api: an attack token without an attack sink")
	case c.AttackToken != "" && len(c.AttackToken) < 16:
		return errors.New("api: attack token shorter than 16 bytes")
	case c.AttackMaxBody < 0 || c.AttackMaxReports < 0:
		return fmt.Errorf("api: negative attack max body %d or max reports %d", c.AttackMaxBody, c.AttackMaxReports)
	}
	return nil
}

// API is the HTTP handler.
type API struct {
	cfg Config
	// wallClock: cfg.Now is time.Now, so a query's start time serves as
	// its "now" (one clock read fewer per query).
	wallClock bool
	log       zerolog.Logger
	mux       *http.ServeMux

	requests    *prometheus.CounterVec
	addresses   *prometheus.CounterVec
	latency     *prometheus.HistogramVec // by route
	storeErrors prometheus.Counter
	// The hot path's metric children, looked up once.
	queriesOK                 prometheus.Counter
	fromStore, fromEngine     prometheus.Counter
	queryLatency, manyLatency prometheus.Observer

	tokenSum       []byte             // SHA-256 of the attack token; nil: endpoint disabled
	attackLimit    *authlimit.Limiter // wrong attack tokens per source; nil: endpoint disabled
	attackRequests *prometheus.CounterVec
	attackReports  *prometheus.CounterVec
}

// Defaults for the attack endpoint's bounds.
const (
	DefaultAttackMaxBody    = 8 << 20
	DefaultAttackMaxReports = 10_000
)

// New returns the API handler.
func New(cfg Config, log zerolog.Logger) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	wallClock := cfg.Now == nil
	if wallClock {
		cfg.Now = time.Now
	}
	if cfg.AttackMaxBody == 0 {
		cfg.AttackMaxBody = DefaultAttackMaxBody
	}
	if cfg.AttackMaxReports == 0 {
		cfg.AttackMaxReports = DefaultAttackMaxReports
	}
	a := &API{
		cfg:       cfg,
		wallClock: wallClock,
		log:       logging.For(log, "api"),
		mux:       http.NewServeMux(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "queries_total", Help: "Query API requests by HTTP status code.",
		}, []string{"code"}),
		addresses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "query_addresses_total", Help: "Addresses answered, by source (store or engine).",
		}, []string{"source"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "styx_node", Name: "request_duration_seconds",
			Help:    "HTTP request latency by route: query (GET /v2/{ip}), query_many (POST /v2/), attacks (POST /v2/attacks), healthz, metrics, threats (the threats page and its JSON).",
			Buckets: LatencyBuckets,
		}, []string{"route"}),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "query_store_errors_total", Help: "Store reads that failed (the engine answered).",
		}),
		attackRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "attack_requests_total", Help: "POST /v2/attacks requests by HTTP status code.",
		}, []string{"code"}),
		attackReports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "attack_reports_received_total",
			Help: "Attack report lines received on POST /v2/attacks, by result (new, duplicate, too_old, rejected).",
		}, []string{"result"}),
	}
	if err := a.initAttackAuth(); err != nil {
		return nil, err
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{a.requests, a.addresses, a.latency, a.storeErrors, a.attackRequests, a.attackReports} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("api: register metrics: %w", err)
			}
		}
	}
	for _, r := range []string{RouteQuery, RouteQueryMany, RouteAttacks, RouteHealthz, RouteMetrics, RouteThreats} {
		a.latency.WithLabelValues(r)
	}
	a.queriesOK = a.requests.WithLabelValues(strconv.Itoa(http.StatusOK))
	a.fromStore = a.addresses.WithLabelValues("store")
	a.fromEngine = a.addresses.WithLabelValues("engine")
	a.queryLatency = a.latency.WithLabelValues(RouteQuery)
	a.manyLatency = a.latency.WithLabelValues(RouteQueryMany)
	a.mux.HandleFunc("/v2", a.serveQuery)
	a.mux.HandleFunc("/v2/", a.serveQuery)
	a.mux.Handle(AttacksPath, a.timed(RouteAttacks, http.HandlerFunc(a.serveAttacks)))
	a.mux.Handle("/healthz", a.timed(RouteHealthz, http.HandlerFunc(a.serveHealth)))
	if cfg.Threats != nil {
		hs, err := a.threatsHandlers()
		if err != nil {
			return nil, err
		}
		for path, h := range hs {
			a.mux.Handle(path, a.timed(RouteThreats, h))
		}
	}
	if cfg.Gatherer != nil {
		a.mux.Handle("/metrics", a.timed(RouteMetrics, promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		status, out, pretty := errorBody(&Error{Status: http.StatusNotFound, Message: "not found: the API lives under /v2/"}, true)
		a.writeJSON(w, status, out, pretty)
	})
	return a, nil
}

// Routes, the label of styx_node_request_duration_seconds.
const (
	RouteQuery     = "query"      // GET /v2/{ip}
	RouteQueryMany = "query_many" // POST /v2/ (many addresses)
	RouteAttacks   = "attacks"    // POST /v2/attacks
	RouteHealthz   = "healthz"
	RouteMetrics   = "metrics"
	RouteThreats   = "threats" // the threats page, its JSON and assets
)

// LatencyBuckets are the request latency histogram's buckets, in seconds:
// from 100 µs (a stored verdict answered from memory) to 2.5 s.
var LatencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// timed observes h's latency under route.
func (a *API) timed(route string, h http.Handler) http.Handler {
	obs := a.latency.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		h.ServeHTTP(w, r)
		obs.Observe(time.Since(start).Seconds())
	})
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) serveHealth(w http.ResponseWriter, r *http.Request) {
	status, code, reason := "ok", http.StatusOK, ""
	if a.cfg.Unhealthy != nil {
		if reason = a.cfg.Unhealthy(); reason != "" {
			status, code = "unhealthy", http.StatusServiceUnavailable
		}
	}
	o := object{fv("status", status), fv("node", a.cfg.NodeID)}
	if reason != "" {
		o = append(o, fv("reason", reason))
	}
	if a.cfg.Health != nil {
		h := a.cfg.Health()
		for _, k := range slices.Sorted(maps.Keys(h)) {
			o = append(o, fv(k, h[k]))
		}
	}
	a.writeJSON(w, code, o, true)
}

// Header values every query answer carries, shared between responses
// (net/http copies them and never changes them; with a capacity of one,
// an Add by a wrapper copies rather than writes here).
var (
	licenceValue  = []string{locdb.Attribution}
	noStoreValue  = []string{"no-store"}
	jsonTypeValue = []string{"application/json; charset=utf-8"}
)

func (a *API) serveQuery(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h := w.Header()
	// Canonical keys set directly: Header.Set allocates a slice per value.
	h[LicenceHeader] = licenceValue
	h["Cache-Control"] = noStoreValue
	status, out, pretty := a.query(w, r, start)
	a.writeJSON(w, status, out, pretty)
	if status == http.StatusOK {
		a.queriesOK.Inc()
	} else {
		a.requests.WithLabelValues(strconv.Itoa(status)).Inc()
	}
	obs := a.queryLatency
	if r.Method == http.MethodPost {
		obs = a.manyLatency
	}
	obs.Observe(time.Since(start).Seconds())
}

// query answers a /v2 request: status, body and whether to indent it.
func (a *API) query(w http.ResponseWriter, r *http.Request, start time.Time) (int, object, bool) {
	now := start
	if !a.wallClock {
		now = a.cfg.Now()
	}
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		body, err = io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return errorBody(&Error{Status: http.StatusRequestEntityTooLarge,
					Message: fmt.Sprintf("body larger than %d bytes", a.cfg.MaxBody)}, true)
			}
			return errorBody(badRequest("read body: %v", err), true)
		}
	}
	req, perr := Parse(r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), body, a.cfg.MaxAddresses)
	if perr != nil {
		if perr.Status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", "GET, HEAD, POST")
		}
		a.log.Debug().Str("path", r.URL.Path).Int("status", perr.Status).Str("message", perr.Message).Msg("query refused")
		return errorBody(perr, req.Flags.Pretty)
	}
	status, out := a.answer(req, now, start)
	return status, out, req.Flags.Pretty
}

func errorBody(e *Error, pretty bool) (int, object, bool) {
	return e.Status, object{fv("status", "error"), fv("message", e.Message)}, pretty
}

// answer builds the response for a parsed request.
func (a *API) answer(req Request, now, start time.Time) (int, object) {
	f := req.Flags
	var bad int
	for _, it := range req.Items {
		if it.Err != "" {
			bad++
		}
	}
	if bad == len(req.Items) {
		msg := "no valid IP address supplied"
		if len(req.Items) == 1 {
			msg = req.Items[0].Raw + ": " + req.Items[0].Err
		}
		return http.StatusBadRequest, object{fv("status", "error"), fv("message", msg)}
	}
	// status, message, node, the addresses and query time: one allocation.
	out := make(object, 1, 4+len(req.Items))
	out[0] = fv("status", "ok")
	if bad > 0 {
		out[0].v = "warning"
		out = append(out, fv("message", fmt.Sprintf("%d of %d addresses could not be checked", bad, len(req.Items))))
	}
	if f.Node {
		out = append(out, fv("node", a.cfg.NodeID))
	}
	if f.Short && len(req.Items) == 1 {
		out = append(out, a.address(req.Items[0].Addr, f, now)...)
	} else {
		for _, it := range req.Items {
			if it.Err != "" {
				out = append(out, fv(it.Raw, object{fv("error", it.Err)}))
				continue
			}
			out = append(out, fv(it.Raw, a.address(it.Addr, f, now)))
		}
	}
	if f.Time {
		out = append(out, fv("query time", fmt.Sprintf("%.3fs", time.Since(start).Seconds())))
	}
	return http.StatusOK, out
}

// address answers one address and records the sighting.
func (a *API) address(addr netip.Addr, f Flags, now time.Time) object {
	sv, hasVerdict, err := a.cfg.Store.LookupVerdict(addr)
	if err != nil {
		a.storeErrors.Inc()
		a.log.Warn().Err(err).Str(logging.Addr, addr.String()).Msg("store lookup failed, using the engine")
	}
	var seen time.Time // read before this query's touch
	if f.Seen {
		if seen, err = a.cfg.Store.LastSeen(addr); err != nil {
			a.storeErrors.Inc()
			a.log.Warn().Err(err).Str(logging.Addr, addr.String()).Msg("last-seen lookup failed")
		}
	}
	a.cfg.Store.Touch(addr, now)
	if a.cfg.Sighted != nil && Streamable(addr) {
		a.cfg.Sighted(addr, now)
	}

	var v verdict.Verdict
	if hasVerdict && (f.Days == 0 || now.Sub(sv.Inferred) <= time.Duration(f.Days)*24*time.Hour) {
		v = sv
		a.fromStore.Inc()
	} else {
		v = a.cfg.Engine.Examine(addr)
		a.fromEngine.Inc()
	}

	o := make(object, 0, 12)
	if f.ASN {
		if n, ok := a.cfg.Locator.Lookup(addr); ok {
			if n.ASN != 0 {
				o = append(o, asnField("asn", n.ASN))
			}
			o = append(o, prefixField("range", n.Prefix))
			o = appendStr(o, "provider", n.ASName)
			o = appendStr(o, "continent", n.ContinentName)
			o = appendStr(o, "continentcode", n.Continent)
			o = appendStr(o, "country", n.CountryName)
			o = appendStr(o, "isocode", n.Country)
		}
	}
	proxy := v.Proxy || (f.VPN > 0 && (v.Type == raven.TypeHosting || v.Type == "VPN"))
	o = append(o, fv("proxy", yesNo(proxy)))
	o = appendStr(o, "type", v.Type)
	if proxy && v.Port != 0 {
		o = append(o, fv("port", v.Port))
	}
	if f.Risk > 0 {
		o = append(o, fv("risk", v.Risk))
	}
	if f.Risk == 2 {
		h, err := a.cfg.Store.Attacks(addr)
		if err != nil {
			a.storeErrors.Inc()
			a.log.Warn().Err(err).Str(logging.Addr, addr.String()).Msg("attack history lookup failed")
		} else if ah := a.attackHistory(h); ah != nil {
			o = append(o, fv("attack history", ah))
		}
	}
	if f.Seen && proxy && !seen.IsZero() {
		o = append(o,
			fv("last seen human", HumanAgo(now.Sub(seen))),
			fv("last seen unix", strconv.FormatInt(seen.Unix(), 10)))
	}
	return o
}

// Streamable reports whether an address is worth sending to STYX: global
// unicast and not private.
func Streamable(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsGlobalUnicast() && !a.IsPrivate()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// HumanAgo formats a duration as proxycheck does ("6 hours, 8 minutes, 3
// seconds ago"): at most three units, largest first.
func HumanAgo(d time.Duration) string {
	if d < time.Second {
		return "0 seconds ago"
	}
	units := []struct {
		name string
		size time.Duration
	}{{"day", 24 * time.Hour}, {"hour", time.Hour}, {"minute", time.Minute}, {"second", time.Second}}
	var parts []string
	for _, u := range units {
		if n := d / u.size; n > 0 && len(parts) < 3 {
			s := strconv.FormatInt(int64(n), 10) + " " + u.name
			if n != 1 {
				s += "s"
			}
			parts = append(parts, s)
			d -= n * u.size
		}
	}
	return strings.Join(parts, ", ") + " ago"
}

// answerBufs holds answer buffers between requests. Buffers that grew
// past maxPooledAnswer (a large POST's answer) are not kept.
var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

const maxPooledAnswer = 64 << 10

func (a *API) writeJSON(w http.ResponseWriter, status int, o object, pretty bool) {
	bp := answerBufs.Get().(*[]byte)
	b, err := o.appendTo((*bp)[:0], pretty, 0)
	if err != nil {
		a.log.Error().Err(err).Msg("encode response")
		status = http.StatusInternalServerError
		b = append((*bp)[:0], `{"status":"error","message":"internal error"}`...)
	}
	w.Header()["Content-Type"] = jsonTypeValue
	w.WriteHeader(status)
	b = append(b, '\n')
	_, _ = w.Write(b)
	if cap(b) <= maxPooledAnswer {
		*bp = b
		answerBufs.Put(bp)
	}
}

// field and object make a JSON object whose keys keep their order. A
// field's value is v (fv), or one of the typed slots kind names (strField,
// asnField, prefixField): the query path writes a dozen strings per
// answer, and boxing each into v would cost an allocation.
type field struct {
	k    string
	kind valueKind
	v    any          // kindAny
	s    string       // kindString
	n    uint64       // kindASN, written "AS<n>"
	p    netip.Prefix // kindPrefix
}

type valueKind uint8

const (
	kindAny valueKind = iota
	kindString
	kindASN
	kindPrefix
)

func fv(k string, v any) field                   { return field{k: k, v: v} }
func strField(k, s string) field                 { return field{k: k, kind: kindString, s: s} }
func asnField(k string, asn uint32) field        { return field{k: k, kind: kindASN, n: uint64(asn)} }
func prefixField(k string, p netip.Prefix) field { return field{k: k, kind: kindPrefix, p: p} }

// appendStr appends k: s to o, unless s is empty (a value the location
// database does not have).
func appendStr(o object, k, s string) object {
	if s == "" {
		return o
	}
	return append(o, strField(k, s))
}

type object []field

// MarshalJSON implements json.Marshaler (compact), for values that hold an
// object and go through encoding/json.
func (o object) MarshalJSON() ([]byte, error) { return o.appendTo(nil, false, 0) }
