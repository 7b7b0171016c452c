package coordinator

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/styx-inference/styx/pkg/logging"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

// NotFoundError reports worker ids the leader does not know, or a host
// without workers. Drain changes nothing when it returns one.
type NotFoundError struct {
	IDs  []string // unknown worker ids
	Host string   // a host without workers, or ""
}

func (e *NotFoundError) Error() string {
	var parts []string
	if len(e.IDs) > 0 {
		parts = append(parts, fmt.Sprintf("no such worker: %s", strings.Join(e.IDs, ", ")))
	}
	if e.Host != "" {
		parts = append(parts, fmt.Sprintf("no worker on host %q", e.Host))
	}
	return strings.Join(parts, "; ")
}

// ErrNothingSelected is returned by Drain when neither ids nor a host is
// given.
var ErrNothingSelected = errors.New("drain: name at least one worker or a host")

// Drain asks the workers named by ids, and every worker registered with
// host, to leave the fleet. In one transaction their rows turn draining
// (dispatch skips them from now on) and are marked DrainRequested; then
// each worker's connection sends a Drain on its Work stream, now or as
// soon as a stream is open. The worker answers what it holds, revokes its
// lease and exits; the watch then removes the row. It returns the selected
// rows as they are after the change, ordered by id.
func (c *Coordinator) Drain(ids []string, host, reason string) ([]state.Worker, error) {
	if len(ids) == 0 && host == "" {
		return nil, ErrNothingSelected
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []state.Worker
	err := c.st.Update(func(t *state.Txn) error {
		selected := map[string]*state.Worker{}
		nf := &NotFoundError{}
		for _, id := range ids {
			w, err := t.Worker(id)
			if errors.Is(err, state.ErrNotFound) || (err == nil && c.conns[id] == nil) {
				nf.IDs = append(nf.IDs, id)
				continue
			}
			if err != nil {
				return err
			}
			selected[id] = w
		}
		if host != "" {
			ws, err := t.WorkersOnHost(host)
			if err != nil {
				return err
			}
			n := 0
			for _, w := range ws {
				if c.conns[w.ID] != nil {
					selected[w.ID] = w
					n++
				}
			}
			if n == 0 {
				nf.Host = host
			}
		}
		if len(nf.IDs) > 0 || nf.Host != "" {
			return nf
		}
		for _, w := range selected {
			nw := *w
			nw.DrainRequested = true
			if nw.State == state.WorkerReady {
				nw.State = state.WorkerDraining
			}
			if err := t.UpsertWorkerTxn(&nw); err != nil {
				return err
			}
			out = append(out, nw)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortWorkers(out)
	for _, w := range out {
		c.counters.DrainRequests++
		c.conns[w.ID].requestDrain(reason)
		c.log.Info().Str(logging.WorkerID, w.ID).Str(logging.Host, w.Host).Int(logging.InFlight, w.InFlight).
			Str(logging.Reason, reason).Msg("drain requested")
	}
	return out, nil
}

func sortWorkers(ws []state.Worker) {
	slices.SortFunc(ws, func(a, b state.Worker) int { return strings.Compare(a.ID, b.ID) })
}

// requestDrain remembers that the worker must drain and wakes the current
// session's sender, which sends the Drain. A session opened later sends it
// right after the worker's Ready.
func (wc *workerConn) requestDrain(reason string) {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	wc.drain = &styxv1.Drain{Reason: reason}
	if wc.kick != nil {
		select {
		case wc.kick <- struct{}{}:
		default:
		}
	}
}

// drainRequest returns the Drain to send, or nil.
func (wc *workerConn) drainRequest() *styxv1.Drain {
	wc.mu.Lock()
	defer wc.mu.Unlock()
	return wc.drain
}
