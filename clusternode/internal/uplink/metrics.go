package uplink

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Register adds the uplink's metrics to reg. They read the same counters
// as Stats.
func (u *Uplink) Register(reg prometheus.Registerer) error {
	counter := func(name, help string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "styx_node", Name: name, Help: help},
			func() float64 { return float64(f(u.Stats())) })
	}
	outcomes := func(kind string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "outcomes_total", Help: "Sightings resolved, by outcome kind.",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 { return float64(f(u.Stats())) })
	}
	attacks := func(name, help string, f func(Stats) uint64, result string) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "attack_reports_" + name + "_total", Help: help,
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(f(u.Stats())) })
	}
	const logVerdictsHelp = "Verdicts read from the verdict log, by what became of them: stored (written, or not newer than the one held), known (written here from an outcome just before), skipped (an error or no address)."
	logVerdicts := func(result string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "styx_node", Name: "log_verdicts_total", Help: logVerdictsHelp,
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(f(u.Stats())) })
	}
	const logAttacksHelp = "Attack reports applied from the verdict log, by result."
	cs := []prometheus.Collector{
		counter("sightings_submitted_total", "Sightings created and queued for the leader.", func(s Stats) uint64 { return s.Submitted }),
		counter("sightings_not_submitted_total", "Addresses not submitted because the pending table was full (or no id could be reserved).", func(s Stats) uint64 { return s.NotSubmitted }),
		counter("sightings_deduplicated_total", "Addresses not submitted because they were seen within the dedup window.", func(s Stats) uint64 { return s.Deduplicated }),
		counter("sightings_resent_total", "Sightings sent again after a reconnect or leader change.", func(s Stats) uint64 { return s.Resent }),
		counter("sighting_batches_sent_total", "Sighting batches sent.", func(s Stats) uint64 { return s.BatchesSent }),
		counter("sightings_acked_total", "Sightings the leader acknowledged.", func(s Stats) uint64 { return s.Acked }),
		outcomes("verdict", func(s Stats) uint64 { return s.Verdicts }),
		outcomes("expired", func(s Stats) uint64 { return s.Expired }),
		outcomes("shed", func(s Stats) uint64 { return s.Shed }),
		outcomes("rejected", func(s Stats) uint64 { return s.Rejected }),
		outcomes("unspecified", func(s Stats) uint64 { return s.Unspecified }),
		counter("outcomes_duplicate_total", "Outcomes for sightings already resolved (ignored).", func(s Stats) uint64 { return s.DuplicateOutcomes }),
		counter("verdict_errors_total", "Verdict outcomes not stored (error verdict, missing verdict or store failure).", func(s Stats) uint64 { return s.VerdictErrors }),
		counter("submit_sessions_total", "Submit streams the leader welcomed.", func(s Stats) uint64 { return s.Sessions }),
		logVerdicts("stored", func(s Stats) uint64 { return s.LogVerdicts - s.LogVerdictsKnown }),
		logVerdicts("known", func(s Stats) uint64 { return s.LogVerdictsKnown }),
		logVerdicts("skipped", func(s Stats) uint64 { return s.LogVerdictsSkipped }),
		attacks("forwarded", "Attack reports forwarded to the leader, by its answer.", func(s Stats) uint64 { return s.AttacksForwarded }, "accepted"),
		attacks("forwarded", "Attack reports forwarded to the leader, by its answer.", func(s Stats) uint64 { return s.AttacksLeaderDuplicates }, "duplicate"),
		attacks("forwarded", "Attack reports forwarded to the leader, by its answer.", func(s Stats) uint64 { return s.AttacksLeaderRejected }, "rejected"),
		attacks("log", logAttacksHelp, func(s Stats) uint64 { return s.LogAttacksNew }, "new"),
		attacks("log", logAttacksHelp, func(s Stats) uint64 { return s.LogAttacksDuplicate }, "duplicate"),
		attacks("log", logAttacksHelp, func(s Stats) uint64 { return s.LogAttacksTooOld }, "too_old"),
		attacks("log", logAttacksHelp, func(s Stats) uint64 { return s.LogAttacksInvalid }, "invalid"),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "styx_node", Name: "sightings_pending", Help: "Sightings submitted and waiting for their outcome."},
			func() float64 { return float64(u.Stats().Pending) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "styx_node", Name: "uplink_connected", Help: "1 while a submit stream to the leader is up."},
			func() float64 {
				if u.connected.Load() {
					return 1
				}
				return 0
			}),
	}
	cs = append(cs, u.outboxCollectors()...)
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
