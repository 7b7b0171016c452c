package coordinator

import (
	"github.com/styx-inference/styx/pkg/logging"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
	"github.com/styx-inference/styx/scheduler/internal/ledger"
	"github.com/styx-inference/styx/scheduler/internal/state"
)

// NotFoundError reports worker ids the leader does not know, or a host
// without workers (see ledger.NotFoundError).
type NotFoundError = ledger.NotFoundError

// ErrNothingSelected is returned by Drain when neither ids nor a host is
// given.
var ErrNothingSelected = ledger.ErrNothingSelected

// Drain asks the workers named by ids, and every worker registered with
// host, to leave the fleet. The ledger turns their rows draining (dispatch
// skips them from now on); then each worker's connection sends a Drain on
// its Work stream, now or as soon as a stream is open. The worker answers
// what it holds, revokes its lease and exits; the watch then removes the
// row. It returns the selected rows as they are after the change, ordered
// by id.
func (c *Coordinator) Drain(ids []string, host, reason string) ([]state.Worker, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out, fx, err := c.ledger.Drain(ids, host)
	if err != nil {
		return nil, err
	}
	for _, id := range fx.Drains {
		if wc := c.conns[id]; wc != nil {
			wc.requestDrain(reason)
		}
	}
	for _, w := range out {
		c.log.Info().Str(logging.WorkerID, w.ID).Str(logging.Host, w.Host).Int(logging.InFlight, w.InFlight).
			Str(logging.Reason, reason).Msg("drain requested")
	}
	return out, nil
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
