// Package authlimit slows down the guessing of a credential over HTTP: it
// limits, per source address, the failed authentications (the 401s) a
// server answers.
//
// A source is the host of a request's RemoteAddr; IPv6 sources are
// grouped by /64, the block one site is given, so that a host cannot
// change address to start afresh. A source may fail Burst times at once;
// after that it earns one more attempt per Every. While it has none left,
// its requests are refused (429 Too Many Requests, with Retry-After)
// without their credential being checked, so a flood learns nothing. Every
// refusal is counted; each source's refusals are logged at most once per
// LogEvery. Memory is bounded: at most MaxSources sources are tracked, and
// a new one in a full table evicts the one touched longest ago.
//
// A request that carries no credential at all need not ask: it guesses
// nothing. One that does asks first, and then tells how it ended:
//
//	src := authlimit.Source(r.RemoteAddr)
//	if wait, ok := lim.Allow(src); !ok {
//		w.Header().Set("Retry-After", authlimit.RetryAfter(wait))
//		http.Error(w, "too many failed attempts", http.StatusTooManyRequests)
//		return
//	}
//	if !valid(credential) {
//		lim.Failed(src)
//		http.Error(w, "unauthorized", http.StatusUnauthorized)
//		return
//	}
//	lim.Succeeded(src)
//
// Allow takes the attempt from the source's allowance before the
// credential is checked, and Succeeded gives it back: a success costs
// nothing, and however many requests of one source run at once, no more
// credentials are checked than the allowance grants.
//
// A correct credential from a source that is being refused is refused as
// well, until the source has earned an attempt again: checking it would
// tell a guesser which guess was right. Sources behind one address (a NAT,
// a reverse proxy) share one allowance.
package authlimit
