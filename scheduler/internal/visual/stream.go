package visual

import (
	"net/http"
	"sync/atomic"
	"time"
)

// writeTimeout bounds one write to a stream's client.
const writeTimeout = 10 * time.Second

type stream struct {
	since time.Time
	bytes atomic.Int64
}

// ServeEvents streams Models as Server-Sent Events: a full frame first,
// then deltas, at most one per MinInterval. It returns when the client goes
// away or the Hub stops.
func (h *Hub) ServeEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	s := &stream{since: h.cfg.Now()}
	h.subscribe(s)
	defer func() {
		h.unsubscribe(s)
		d := h.cfg.Now().Sub(s.since)
		h.log.Debug().Int64("bytes", s.bytes.Load()).Dur("open", d).
			Float64("bytes_per_second", float64(s.bytes.Load())/max(d.Seconds(), 1e-3)).Msg("visualiser stream ended")
	}()
	write := func(parts ...[]byte) bool {
		// A client that stops reading must not hold the handler forever.
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		for _, p := range parts {
			n, err := w.Write(p)
			s.bytes.Add(int64(n))
			if err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	// The page reconnects 2 s after the stream breaks.
	if !write([]byte("retry: 2000\n\n")) {
		return
	}
	keep := time.NewTicker(h.cfg.KeepAlive)
	defer keep.Stop()
	var sent *Model
	for {
		m, changed := h.latest()
		if m != nil && m != sent {
			if f := delta(sent, m); f != nil {
				if !write([]byte("data: "), f, []byte("\n\n")) {
					return
				}
				keep.Reset(h.cfg.KeepAlive)
			}
			sent = m
		}
		select {
		case <-changed:
		case <-keep.C:
			if !write([]byte(": keep-alive\n\n")) {
				return
			}
		case <-r.Context().Done():
			return
		case <-h.done:
			return
		}
	}
}
