package api

import (
	"fmt"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Limits on request parts (besides Config.MaxAddresses and MaxBody).
const (
	maxTagLen    = 256
	maxRawAddr   = 64 // longer entries are reported invalid under a cut key
	maxDays      = 36500
	formMIMEType = "application/x-www-form-urlencoded"
)

// Flags are the query flags of a request.
type Flags struct {
	VPN    int // 0..3
	ASN    bool
	Risk   int // 0..2
	Seen   bool
	Days   int // 0: no limit
	Tag    string
	Node   bool
	Time   bool
	Short  bool
	Pretty bool // p, default true
}

// Item is one address of a request, in request order.
type Item struct {
	// Raw is the address as given (trimmed); it is the answer's key.
	Raw string
	// Addr is the parsed address, unmapped; invalid when Err is set.
	Addr netip.Addr
	Err  string
}

// Request is a parsed query.
type Request struct {
	Flags Flags
	Items []Item // at least one, distinct Raw values
}

// Error is a request the API refuses as a whole.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

func badRequest(format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// Parse decodes a query: method, the unescaped URL path, the raw query
// string, the Content-Type header and the (already size-limited) body.
func Parse(method, path, rawQuery, contentType string, body []byte, maxAddrs int) (Request, *Error) {
	req := Request{Flags: Flags{Pretty: true}}
	rest, ok := strings.CutPrefix(path, "/v2")
	if !ok || (rest != "" && rest[0] != '/') {
		return req, &Error{Status: http.StatusNotFound, Message: "not found: the API lives under /v2/"}
	}
	rest = strings.TrimPrefix(rest, "/")

	q, ok := scanQuery(rawQuery)
	if !ok {
		return req, badRequest("malformed query string")
	}
	flags, err := parseFlags(&q)
	if err != nil {
		return req, badRequest("%s", err.Error())
	}
	req.Flags = flags

	var one [1]string // a GET's address, without allocating
	raws := one[:0]
	if rest != "" {
		raws = append(raws, rest)
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		if rest == "" {
			return req, badRequest("no address: use GET /v2/{ip} or POST /v2/ with ips=")
		}
	case http.MethodPost:
		if len(body) > 0 {
			if contentType != "" {
				mt, _, err := mime.ParseMediaType(contentType)
				if err != nil || mt != formMIMEType {
					return req, &Error{Status: http.StatusUnsupportedMediaType,
						Message: "body must be " + formMIMEType + " with an ips field"}
				}
			}
			form, err := url.ParseQuery(string(body))
			if err != nil {
				return req, badRequest("malformed form body")
			}
			for _, list := range form["ips"] {
				for raw := range strings.SplitSeq(list, ",") {
					if raw = strings.TrimSpace(raw); raw != "" {
						raws = append(raws, raw)
						if len(raws) > maxAddrs {
							return req, badRequest("too many addresses: at most %d per query", maxAddrs)
						}
					}
				}
			}
		}
		if len(raws) == 0 {
			return req, badRequest("no address: POST /v2/ with a form field ips=1.2.3.4,5.6.7.8")
		}
	default:
		return req, &Error{Status: http.StatusMethodNotAllowed, Message: "method " + method + " not allowed: use GET or POST"}
	}
	if len(raws) > maxAddrs {
		return req, badRequest("too many addresses: at most %d per query", maxAddrs)
	}

	if len(raws) == 1 {
		req.Items = []Item{parseItem(raws[0])}
		return req, nil
	}
	seen := make(map[string]bool, len(raws))
	for _, raw := range raws {
		it := parseItem(raw)
		if seen[it.Raw] {
			continue
		}
		seen[it.Raw] = true
		req.Items = append(req.Items, it)
	}
	return req, nil
}

func parseItem(raw string) Item {
	if len(raw) > maxRawAddr {
		return Item{Raw: strings.ToValidUTF8(raw[:maxRawAddr], "") + "...", Err: "not a valid IP address"}
	}
	a, err := netip.ParseAddr(raw)
	switch {
	case err != nil:
		return Item{Raw: raw, Err: "not a valid IP address"}
	case a.Zone() != "":
		return Item{Raw: raw, Err: "an address with a zone cannot be checked"}
	}
	return Item{Raw: raw, Addr: a.Unmap()}
}

// Query flag names, indexes into flagValues.
const (
	qVPN = iota
	qRisk
	qDays
	qASN
	qSeen
	qNode
	qTime
	qShort
	qPretty
	qTag
	nQueryFlags
)

var queryFlagNames = [nQueryFlags]string{"vpn", "risk", "days", "asn", "seen", "node", "time", "short", "p", "tag"}

// flagValues holds the first value of each known flag in a query string,
// as url.Values.Get would return it, and whether the flag was present
// (url.Values.Has).
type flagValues struct {
	v   [nQueryFlags]string
	has [nQueryFlags]bool
}

func (q *flagValues) set(key, value string) {
	for i, n := range queryFlagNames {
		if key == n {
			if !q.has[i] {
				q.v[i], q.has[i] = value, true
			}
			return
		}
	}
}

// fastQueryPairs bounds the pairs scanQuery reads itself; longer query
// strings go through url.ParseQuery (and its own limit).
const fastQueryPairs = 64

// scanQuery reads the known flags of a raw query string; ok is false when
// url.ParseQuery would refuse it. A query without escapes ('%', '+') and
// semicolons, the usual kind, is read in place without allocating; any
// other goes through url.ParseQuery, so both accept and refuse the same
// strings and read the same values.
func scanQuery(raw string) (q flagValues, ok bool) {
	if strings.ContainsAny(raw, "%+;") || strings.Count(raw, "&") >= fastQueryPairs {
		vals, err := url.ParseQuery(raw)
		if err != nil {
			return q, false
		}
		for i, n := range queryFlagNames {
			if vs, found := vals[n]; found {
				q.v[i], q.has[i] = vs[0], true
			}
		}
		return q, true
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		q.set(k, v)
	}
	return q, true
}

func parseFlags(q *flagValues) (Flags, error) {
	f := Flags{Pretty: true}
	num := func(i, lo, hi int) (int, error) {
		s := q.v[i]
		if s == "" {
			return 0, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("flag %s=%q: want an integer from %d to %d", queryFlagNames[i], s, lo, hi)
		}
		return n, nil
	}
	var err error
	if f.VPN, err = num(qVPN, 0, 3); err != nil {
		return f, err
	}
	if f.Risk, err = num(qRisk, 0, 2); err != nil {
		return f, err
	}
	if f.Days, err = num(qDays, 0, maxDays); err != nil {
		return f, err
	}
	for i, dst := range [...]*bool{qASN: &f.ASN, qSeen: &f.Seen, qNode: &f.Node, qTime: &f.Time, qShort: &f.Short, qPretty: &f.Pretty} {
		if dst == nil {
			continue
		}
		n, err := num(i, 0, 1)
		if err != nil {
			return f, err
		}
		if q.has[i] && q.v[i] != "" {
			*dst = n == 1
		}
	}
	if f.Tag = q.v[qTag]; len(f.Tag) > maxTagLen {
		return f, fmt.Errorf("tag longer than %d bytes", maxTagLen)
	}
	return f, nil
}
