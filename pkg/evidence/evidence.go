package evidence

import (
	"context"
	"net/netip"
	"strconv"
)

// Evidence is one finding of a plugin about an address.
type Evidence struct {
	// Source names the plugin that found it ("proxyprobe").
	Source string
	// Type is the verdict type the finding supports ("HTTP", "SOCKS4",
	// "SOCKS5"), or "" when it supports none.
	Type string
	// Port is the port the finding concerns, or 0.
	Port uint16
}

// String is the form a verdict lists: "source[:type][:port]", for example
// "proxyprobe:SOCKS5:1080".
func (e Evidence) String() string {
	b := make([]byte, 0, len(e.Source)+len(e.Type)+8)
	b = append(b, e.Source...)
	if e.Type != "" {
		b = append(b, ':')
		b = append(b, e.Type...)
	}
	if e.Port != 0 {
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(e.Port), 10)
	}
	return string(b)
}

// Typed returns the first finding with a Type: the one a verdict takes its
// type and port from.
func Typed(evs []Evidence) (Evidence, bool) {
	for _, e := range evs {
		if e.Type != "" {
			return e, true
		}
	}
	return Evidence{}, false
}

// Plugin examines addresses. Implementations are safe for concurrent use.
type Plugin interface {
	// Name is the plugin's stable name (it is the Source of its
	// findings, and appears in errors and logs).
	Name() string
	// Examine appends its findings about addr to dst and returns the
	// result, with an error if the examination could not be completed
	// (the findings appended so far are still returned). It returns
	// promptly once ctx ends; the Runner does not abandon calls, so a
	// plugin that ignored ctx would hold its slot.
	Examine(ctx context.Context, addr netip.Addr, dst []Evidence) ([]Evidence, error)
}
