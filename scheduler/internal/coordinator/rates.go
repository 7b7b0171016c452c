package coordinator

import (
	"math"
	"time"
)

// rateWindow is the time constant of the workers' throughput average.
const rateWindow = 10 * time.Second

// workerRate is one worker's throughput estimate.
type workerRate struct {
	at    time.Time // last sample
	addrs uint64    // AddrsDone at the last sample
	rate  float64   // addresses per second, exponentially averaged
	valid bool      // rate has at least one interval behind it
}

// sampleRatesLocked updates every worker's throughput from the answered
// addresses memdb counts (c.mu held; called every second by the sweep).
func (c *Coordinator) sampleRatesLocked(now time.Time) {
	ws, err := c.State().Snapshot().Workers(nil)
	if err != nil {
		return
	}
	seen := make(map[string]bool, len(ws))
	for _, w := range ws {
		seen[w.ID] = true
		r, ok := c.rates[w.ID]
		if !ok || w.AddrsDone < r.addrs {
			c.rates[w.ID] = workerRate{at: now, addrs: w.AddrsDone}
			continue
		}
		dt := now.Sub(r.at)
		if dt <= 0 {
			continue
		}
		inst := float64(w.AddrsDone-r.addrs) / dt.Seconds()
		if r.valid {
			a := 1 - math.Exp(-dt.Seconds()/rateWindow.Seconds())
			r.rate += a * (inst - r.rate)
		} else {
			r.rate, r.valid = inst, true
		}
		r.at, r.addrs = now, w.AddrsDone
		c.rates[w.ID] = r
	}
	for id := range c.rates {
		if !seen[id] {
			delete(c.rates, id)
		}
	}
}

// WorkerRates returns each worker's recent throughput in addresses per
// second, averaged over about 10 s (sampled every second).
func (c *Coordinator) WorkerRates() map[string]float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]float64, len(c.rates))
	for id, r := range c.rates {
		out[id] = r.rate
	}
	return out
}
