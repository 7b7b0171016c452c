package uplink

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/styx-inference/styx/clusternode/internal/store"
	"github.com/styx-inference/styx/pkg/attacks"
	"github.com/styx-inference/styx/pkg/verdictlog"
)

// ApplyLog is a verdictlog.Follower's Apply: it writes one burst of a
// verdict log stream to the store, with the stream's cursor moved to the
// burst's last sequence in the same transaction (Store.ApplyLog), so that
// each message is applied exactly once across a crash. Verdicts this node
// has just written from its own outcomes are not written again. An error
// leaves the cursor where it was; the follower offers the burst again.
func (u *Uplink) ApplyLog(stream string, msgs []verdictlog.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	items, reports, badVerdicts, badReports := logItems(msgs)
	read := len(items)
	items = u.dropStored(items)
	last := msgs[len(msgs)-1].Seq
	var ar store.AttackResult
	if len(items) > 0 || len(reports) > 0 || u.cursorDue(stream) {
		var err error
		if _, ar, err = u.cfg.Store.ApplyLog(stream, last, items, reports); err != nil {
			return fmt.Errorf("apply %d log messages of %s: %w", len(msgs), stream, err)
		}
		u.cursorMu.Lock()
		u.cursorSaved[stream] = time.Now()
		u.cursorMu.Unlock()
	}
	u.addStored(items)
	if badVerdicts+badReports > 0 {
		u.log.Debug().Str("stream", stream).Uint64("seq", last).Int("verdicts", badVerdicts).Int("attack_reports", badReports).
			Msg("log verdicts without an address or with an error, and invalid attack reports, skipped")
	}
	u.logMessages.Add(uint64(len(msgs)))
	u.logVerdicts.Add(uint64(read))
	u.logKnown.Add(uint64(read - len(items)))
	u.logSkipped.Add(uint64(badVerdicts))
	u.logAttInvalid.Add(uint64(badReports))
	u.logAttNew.Add(uint64(ar.New))
	u.logAttDup.Add(uint64(ar.Duplicates))
	u.logAttOld.Add(uint64(ar.TooOld))
	return nil
}

// cursorEvery is how long a stream's cursor may stay uncommitted while its
// bursts hold nothing to write (only verdicts this node already stored
// from its own outcomes). Committing such a burst would cost a bbolt
// commit (two fsyncs) for the cursor alone; after a crash the node reads
// at most that much of the log again, verdicts it already holds, which
// the store's ordering rule makes harmless. A burst with anything to write
// (a new verdict, an attack report) always commits with its cursor.
const cursorEvery = time.Second

// cursorDue reports whether the stream's cursor has gone uncommitted for
// cursorEvery.
func (u *Uplink) cursorDue(stream string) bool {
	u.cursorMu.Lock()
	defer u.cursorMu.Unlock()
	return time.Since(u.cursorSaved[stream]) >= u.cursorEvery
}

// logItems converts log messages into store items and attack reports,
// skipping (and counting) verdicts that carry an error or no valid address
// and attack reports that do not decode.
func logItems(msgs []verdictlog.Message) (items []store.Item, reports []attacks.Report, badVerdicts, badReports int) {
	for _, m := range msgs {
		for _, v := range m.Batch.GetVerdicts() {
			a, ok := netip.AddrFromSlice(v.GetAddress())
			if !ok || v.GetError() != "" {
				badVerdicts++
				continue
			}
			items = append(items, store.Item{Addr: store.Normalize(a), Verdict: v})
		}
		for _, p := range m.Batch.GetAttacks() {
			r, err := attacks.FromProto(p)
			if err != nil {
				badReports++
				continue
			}
			reports = append(reports, r)
		}
	}
	return items, reports, badVerdicts, badReports
}
