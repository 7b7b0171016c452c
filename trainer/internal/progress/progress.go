// Package progress reports a long job's advance: a redrawn bar on a
// terminal, a line every few seconds otherwise (logs, CI), or nothing.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mode says how progress is shown.
type Mode string

// The modes; Auto picks Bar on a terminal and Lines otherwise.
const (
	Auto  Mode = "auto"
	Bar   Mode = "bar"
	Lines Mode = "lines"
	Off   Mode = "off"
)

// ParseMode checks a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Auto, Bar, Lines, Off:
		return m, nil
	}
	return "", fmt.Errorf("progress mode %q: want auto, bar, lines or off", s)
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// Reporter shows the progress of one counted job. It is safe for
// concurrent use.
type Reporter struct {
	mu       sync.Mutex
	w        io.Writer
	mode     Mode
	what     string
	total    int
	start    time.Time
	every    time.Duration
	last     time.Time
	lastFrac int
	now      func() time.Time
}

// New returns a reporter of a job of total steps named what. In Lines mode
// it prints at most every `every` (and at each tenth of the job).
func New(w io.Writer, mode Mode, what string, total int, every time.Duration) *Reporter {
	if mode == Auto {
		mode = Lines
		if IsTerminal(w) {
			mode = Bar
		}
	}
	r := &Reporter{w: w, mode: mode, what: what, total: max(total, 1), every: every, now: time.Now}
	r.start = r.now()
	r.last = r.start
	return r
}

// Update reports that done steps are finished; note says what is being
// done (e.g. the head being trained). startedAt is the step count when the
// reporter was created (a resumed job), for an honest rate.
func (r *Reporter) Update(done, startedAt int, note string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	elapsed := now.Sub(r.start)
	eta := "?"
	if d := done - startedAt; d > 0 {
		eta = (time.Duration(float64(elapsed) / float64(d) * float64(r.total-done))).Round(time.Second).String()
	}
	pct := 100 * done / r.total
	switch r.mode {
	case Bar:
		const width = 30
		fill := width * done / r.total
		fmt.Fprintf(r.w, "\r%s [%s%s] %3d%% %d/%d %s, elapsed %s, eta %s   ",
			r.what, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, done, r.total, note,
			elapsed.Round(time.Second), eta)
	case Lines:
		if now.Sub(r.last) < r.every && pct/10 == r.lastFrac && done != r.total {
			return
		}
		r.last, r.lastFrac = now, pct/10
		fmt.Fprintf(r.w, "%s: %d/%d (%d%%) %s, elapsed %s, eta %s\n", r.what, done, r.total, pct, note,
			elapsed.Round(time.Second), eta)
	}
}

// Done ends a bar's line.
func (r *Reporter) Done() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mode == Bar {
		fmt.Fprintln(r.w)
	}
}
