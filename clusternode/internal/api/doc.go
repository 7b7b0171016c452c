// Package api is the cluster node's customer query API, modelled on the
// public proxycheck.io v2 API:
//
//	GET  /v2/{ip}?vpn=1&asn=1&risk=1&seen=1&days=7&node=1&time=1&short=1&p=0
//	POST /v2/?flags...   body: ips=1.2.3.4,2001:db8::1 (form-encoded)
//	POST /v2/attacks     attack reports (bearer token; see below)
//	GET  /healthz        200, or 503 while Config.Unhealthy names a reason
//	GET  /metrics        (Prometheus)
//	GET  /threats        the public threats page (with /threats.js, /threats.css)
//	GET  /threats.json?n=N  its data
//
// Answers are immediate: from the node's verdict store when it holds a
// verdict, else from the local real-time engine; the API never waits for
// STYX. Every answered address is passed on (Config.Sighted) so the node can
// stream it to STYX for post-processing.
//
// Flags (each an integer; anything else is a 400):
//
//	vpn=1..3  hosting and VPN networks count as proxies (proxy "yes")
//	asn=1     adds asn, range, provider, continent, continentcode, country, isocode
//	risk=1|2  adds risk (0..100); 2 also adds "attack history" when the
//	          address has one: {"Total": n, "<label>": n, ...} with
//	          proxycheck's labels (Vulnerability Probing, Forum Spam, Login
//	          Attempt, Registration Attempt, Comment Spam, Denial of Service,
//	          Form Submission), only the kinds reported, in that order
//	seen=1    adds "last seen human" / "last seen unix" for proxies: the
//	          last time this node was asked about the address (before now)
//	days=N    stored verdicts inferred more than N days ago are ignored (the
//	          engine answers instead); default: no limit
//	tag=...   accepted and ignored (at most 256 bytes)
//	node=1    adds "node": the node's id
//	time=1    adds "query time"
//	short=1   a single address's fields are not nested under the address
//	p=0       compact JSON; the default (p=1) is indented, as proxycheck does
//
// Output keys keep proxycheck's order. Errors are JSON
// {"status":"error","message":...} with a 4xx status; in a multi-address
// answer an address that cannot be checked gets {"error":...} under its own
// key and the status becomes "warning".
//
// Attack reports: POST /v2/attacks with "Authorization: Bearer <token>"
// (Config.AttackToken; without one the endpoint answers 403, a missing or
// wrong token 401). Wrong tokens are limited per source address
// (pkg/authlimit): past 5 at once, one a second, the others answered 429
// with Retry-After and their token unchecked. The body holds one report
// per line, CSV "address,time,kind" or a JSON object
// {"address","time","kind"}, as
// pkg/attacks.Scanner reads them (time RFC 3339 or Unix seconds; kind
// login, registration, probe, forum-spam, comment-spam, ddos, form, or an
// alias). Partial acceptance: the valid lines are taken even when others
// are bad; the answer (200, status "ok" or "warning") counts them —
// accepted, new, duplicates, too_old, rejected — and lists the first 100
// bad lines as {"line", "error"}. A body with no valid line is a 400 with
// the same list; a body over AttackMaxBody or with more than
// AttackMaxReports lines is refused whole (413); a full forwarding outbox
// is a 503 with Retry-After. Nothing is taken from a refused request.
//
// Threats page (when Config.Threats is set): a random sample of n (default
// 100, 1 to the window's capacity; anything else is a 400) of the newest
// proxy verdicts from post-processing, newest first, each with type, port,
// risk, asn, provider, country, isocode and last_seen_unix (the verdict's
// inference time). The page (threatspage/, embedded) fetches the JSON every
// 10 s, renders every value as text and computes "… ago" in the browser; its
// Content-Security-Policy allows nothing but the node itself.
//
// Licence: country, continent, ASN and provider come from the IPFire
// Location database. Every /v2 response (and the threats page and its JSON)
// carries the credit in the header X-Data-Licence ("IPFire Location
// database, https://location.ipfire.org/, CC BY-SA 4.0"); a header rather
// than a JSON field keeps the body compatible with proxycheck clients,
// which treat unknown top-level keys as addresses.
package api
