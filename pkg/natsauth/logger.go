package natsauth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// SetLogger installs s's logger: next (nil discards), wrapped so that the
// refusals nats-server only logs are counted as well: a handshake that
// failed before reaching this package's verification (bytes that are not
// TLS, a timeout, a client that rejected the server's certificate), and a
// publish or subscription outside a client's permissions. debug and trace
// are nats-server's own levels for next. The server's debug level is
// switched on whatever debug says, since it logs some of those handshake
// failures at debug level; the debug lines reach next only with debug.
func (a *Auth) SetLogger(s *server.Server, next server.Logger, debug, trace, sysTrace bool) {
	s.SetLoggerV2(&hookLogger{a: a, next: next, debug: debug}, true, trace, sysTrace)
}

// hookLogger matches a few of nats-server v2.15's log lines:
//
//	<conn> - cid:N - TLS handshake error: %v%s           (client port)
//	<conn> - rid:N - TLS route handshake error: %v%s     (route)
//	<conn> - cid:N - "..." - "$G/<identity>" - Publish Violation - Subject %q
//	<conn> - ... - Subscription Violation - Subject "...", SID N
//
// The tests of this package fail if a nats-server upgrade changes them.
type hookLogger struct {
	a     *Auth
	next  server.Logger
	debug bool
}

func (h *hookLogger) Noticef(format string, v ...any) {
	if h.next != nil {
		h.next.Noticef(format, v...)
	}
}

func (h *hookLogger) Warnf(format string, v ...any) {
	if h.next != nil {
		h.next.Warnf(format, v...)
	}
}

func (h *hookLogger) Fatalf(format string, v ...any) {
	if h.next != nil {
		h.next.Fatalf(format, v...)
	}
}

func (h *hookLogger) Errorf(format string, v ...any) {
	h.inspect(format, v)
	if h.next != nil {
		h.next.Errorf(format, v...)
	}
}

func (h *hookLogger) Debugf(format string, v ...any) {
	h.inspect(format, v)
	if h.debug && h.next != nil {
		h.next.Debugf(format, v...)
	}
}

func (h *hookLogger) Tracef(format string, v ...any) {
	if h.next != nil {
		h.next.Tracef(format, v...)
	}
}

func (h *hookLogger) inspect(format string, v []any) {
	switch {
	case strings.Contains(format, "handshake error: "):
		var err error
		for _, x := range v {
			if e, ok := x.(error); ok {
				err = e
				break
			}
		}
		var counted *refusedError
		if err == nil || errors.As(err, &counted) {
			return // counted where it was refused
		}
		what := "tls handshake"
		if strings.Contains(format, " route handshake") {
			what = "route tls handshake"
		}
		h.a.count(ReasonHandshake, peerOf(format), what, err)
	case strings.Contains(format, "Publish Violation - "), strings.Contains(format, "Subscription Violation"):
		msg := fmt.Sprintf(format, v...)
		h.a.count(ReasonPermission, peerOf(format), "publish or subscribe", errors.New(msg))
	}
}

// peerOf is the host of a client's log prefix ("127.0.0.1:5222 - cid:5 - ...").
func peerOf(format string) string {
	conn, _, ok := strings.Cut(format, " - ")
	if !ok {
		return "?"
	}
	if i := strings.LastIndexByte(conn, ':'); i > 0 {
		return strings.Trim(conn[:i], "[]")
	}
	return conn
}
