package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/authlimit"
	"github.com/styx-inference/styx/pkg/locdb"
)

// AttacksPath is where attack reports are posted.
const AttacksPath = "/v2/attacks"

// maxLineErrors bounds the line errors one answer lists.
const maxLineErrors = 100

// httpAuthMetrics prefixes the metrics of the limiter of wrong tokens:
// styx_node_http_auth_failures_total and the others.
const httpAuthMetrics = "styx_node_http"

// AttackSink takes the reports a request carried: the node stores them
// and forwards the new ones to the leader.
type AttackSink interface {
	AddAttacks(rs []attacks.Report) (store.AttackResult, error)
}

type lineError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// serveAttacks handles POST /v2/attacks (see doc.go).
func (a *API) serveAttacks(w http.ResponseWriter, r *http.Request) {
	w.Header().Set(LicenceHeader, locdb.Attribution)
	w.Header().Set("Cache-Control", "no-store")
	status, out := a.attacks(w, r)
	a.writeJSON(w, status, out, true)
	a.attackRequests.WithLabelValues(fmt.Sprint(status)).Inc()
}

func (a *API) attacks(w http.ResponseWriter, r *http.Request) (int, object) {
	fail := func(status int, format string, args ...any) (int, object) {
		return status, object{fv("status", "error"), fv("message", fmt.Sprintf(format, args...))}
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return fail(http.StatusMethodNotAllowed, "method %s not allowed: POST attack reports", r.Method)
	}
	if a.tokenSum == nil || a.cfg.Attacks == nil {
		return fail(http.StatusForbidden, "attack reports are disabled on this node: start it with --attack-token (or STYX_ATTACK_TOKEN)")
	}
	unauthorized := func() (int, object) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="styx attack reports"`)
		return fail(http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer <token>")
	}
	// A request without a token guesses nothing and costs nothing. One
	// with a token is checked only while its source has attempts left
	// (see pkg/authlimit), a correct token included.
	if r.Header.Get("Authorization") == "" {
		return unauthorized()
	}
	src := authlimit.Source(r.RemoteAddr)
	if wait, ok := a.attackLimit.Allow(src); !ok {
		after := authlimit.RetryAfter(wait)
		w.Header().Set("Retry-After", after)
		return fail(http.StatusTooManyRequests, "too many wrong tokens from this address: retry in %s s", after)
	}
	if !a.authorized(r) {
		a.attackLimit.Failed(src)
		return unauthorized()
	}
	a.attackLimit.Succeeded(src)

	now := a.cfg.Now()
	body := http.MaxBytesReader(w, r.Body, a.cfg.AttackMaxBody)
	sc := attacks.NewScanner(body, now, a.cfg.NodeID)
	var reports []attacks.Report
	var errs []lineError
	rejected := 0
	for {
		rep, err := sc.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		var le *attacks.LineError
		switch {
		case errors.As(err, &le):
			rejected++
			if len(errs) < maxLineErrors {
				errs = append(errs, lineError{Line: le.Line, Error: le.Msg})
			}
		case err != nil:
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return fail(http.StatusRequestEntityTooLarge, "body larger than %d bytes: split it (styx-node import-attacks does)", a.cfg.AttackMaxBody)
			}
			return fail(http.StatusBadRequest, "read body: %v", err)
		default:
			reports = append(reports, rep)
		}
		if len(reports)+rejected > a.cfg.AttackMaxReports {
			return fail(http.StatusRequestEntityTooLarge, "more than %d reports in one request: split it (styx-node import-attacks does)", a.cfg.AttackMaxReports)
		}
	}
	errList := func(o object) object {
		if len(errs) > 0 {
			o = append(o, fv("errors", errs))
		}
		return o
	}
	if len(reports) == 0 {
		if rejected == 0 {
			return fail(http.StatusBadRequest, "no report in the body: send lines address,time,kind (CSV) or JSON objects")
		}
		return http.StatusBadRequest, errList(object{fv("status", "error"),
			fv("message", fmt.Sprintf("no valid report: %d lines rejected", rejected)), fv("accepted", 0), fv("rejected", rejected)})
	}
	res, err := a.cfg.Attacks.AddAttacks(reports)
	if errors.Is(err, store.ErrOutboxFull) {
		w.Header().Set("Retry-After", "30")
		return fail(http.StatusServiceUnavailable, "too many reports wait to be forwarded to STYX: retry later")
	}
	if err != nil {
		a.log.Error().Err(err).Int("reports", len(reports)).Msg("store attack reports")
		return fail(http.StatusInternalServerError, "the reports could not be stored")
	}
	a.attackReports.WithLabelValues("new").Add(float64(res.New))
	a.attackReports.WithLabelValues("duplicate").Add(float64(res.Duplicates))
	a.attackReports.WithLabelValues("too_old").Add(float64(res.TooOld))
	a.attackReports.WithLabelValues("rejected").Add(float64(rejected))
	out := object{fv("status", "ok")}
	if rejected > 0 {
		out[0].v = "warning"
		out = append(out, fv("message", fmt.Sprintf("%d of %d reports rejected", rejected, rejected+len(reports))))
	}
	out = append(out,
		fv("accepted", len(reports)), fv("new", res.New), fv("duplicates", res.Duplicates),
		fv("too_old", res.TooOld), fv("rejected", rejected))
	return http.StatusOK, errList(out)
}

// initAttackAuth sets up the check of the attack token, when there is
// one: its digest, and the limiter of wrong tokens per source address,
// whose metrics go to cfg.Registerer.
func (a *API) initAttackAuth() error {
	if a.cfg.AttackToken == "" {
		return nil
	}
	sum := sha256.Sum256([]byte(a.cfg.AttackToken))
	a.tokenSum = sum[:]
	lim, err := authlimit.New(authlimit.Config{What: "attack token", Now: a.cfg.Now}, a.log)
	if err != nil {
		return fmt.Errorf("api: %w", err)
	}
	if a.cfg.Registerer != nil {
		if err := a.cfg.Registerer.Register(lim.Collector(httpAuthMetrics)); err != nil {
			return fmt.Errorf("api: register metrics: %w", err)
		}
	}
	a.attackLimit = lim
	return nil
}

// authorized reports whether r carries the attack token. The comparison
// is of SHA-256 digests in constant time, so neither the token nor its
// length leaks through timing.
func (a *API) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], a.tokenSum) == 1
}

// attackHistory is the "attack history" object of an address (risk=2):
// the total and the count of every kind reported, under proxycheck's
// labels, or nil when the address has none.
func (a *API) attackHistory(h store.AttackHistory) object {
	total := h.Total()
	if total == 0 {
		return nil
	}
	o := object{fv("Total", total)}
	for _, k := range attacks.Kinds() {
		if n := h.Counts[k]; n > 0 {
			o = append(o, fv(k.Label(), n))
		}
	}
	return o
}
