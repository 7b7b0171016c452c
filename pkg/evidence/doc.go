// Package evidence is the framework of Raven's evidence plugins: checks
// that look at an address from outside the location database (the first is
// the open-proxy probe in evidence/proxyprobe) and report findings that the
// verdict uses.
//
// A Plugin examines one address and appends Evidence. A Runner wraps a
// plugin with the limits every plugin that touches the network needs:
//
//   - concurrency: at most Limit calls in flight; a Commander moves Limit
//     within [Min, Max], raising it while callers queue for a slot and
//     lowering it after slots have stayed spare for a while;
//   - rate: a token bucket (golang.org/x/time/rate) bounds how many calls
//     start per second;
//   - time: every call gets its own deadline (CallTimeout);
//   - backlog: at most MaxWaiting callers wait for a token or a slot;
//     one more is refused at once with ErrBusy, so the queue never grows
//     without bound. With MaxWait, a caller also gets ErrBusy instead of
//     waiting longer than that for a token or a slot (the worker's
//     examining goroutines skip the examination rather than stall).
//
// The Runner waits for a rate token before it waits for a slot, so a
// backlog caused by the rate limit does not make the Commander raise the
// concurrency. The Commander is pure logic (time is passed in); the
// Runner's Run loop samples the backlog every Interval on its clock
// (k8s.io/utils/clock, faked in tests) and applies the Commander's limit.
// Without Run the limit stays at Min.
//
// How findings reach a verdict (verdict.Verdict, through raven.EvidenceStage,
// which the worker runs with --probe): the first Evidence with a Type gives
// the verdict's Type and Port (Typed), and every Evidence's String
// ("proxyprobe:SOCKS5:1080") goes into Verdict.Evidence.
//
// Lock order: Runner has none of its own; gate.mu is a leaf.
package evidence
