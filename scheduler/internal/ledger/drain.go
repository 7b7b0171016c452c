package ledger

import (
	"errors"
	"fmt"
	"slices"
	"strings"

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

// Drain selects the workers named by ids and every worker registered with
// host. In one transaction their rows turn draining (Assign skips them from
// now on) and are marked DrainRequested; the effects name each of them, so
// that its connection sends a Drain. It returns the selected rows as they
// are after the change, ordered by id. An unknown id or a host without
// workers changes nothing (a *NotFoundError).
func (l *Ledger) Drain(ids []string, host string) ([]state.Worker, Effects, error) {
	if len(ids) == 0 && host == "" {
		return nil, Effects{}, ErrNothingSelected
	}
	var out []state.Worker
	err := l.st.Update(func(t *state.Txn) error {
		selected := map[string]*state.Worker{}
		nf := &NotFoundError{}
		for _, id := range ids {
			w, err := t.Worker(id)
			if errors.Is(err, state.ErrNotFound) {
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
			for _, w := range ws {
				selected[w.ID] = w
			}
			if len(ws) == 0 {
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
		return nil, Effects{}, err
	}
	slices.SortFunc(out, func(a, b state.Worker) int { return strings.Compare(a.ID, b.ID) })
	var fx Effects
	for _, w := range out {
		l.counters.DrainRequests++
		fx.Drains = append(fx.Drains, w.ID)
	}
	return out, fx, nil
}
