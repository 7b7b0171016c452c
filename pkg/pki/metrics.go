package pki

import "github.com/prometheus/client_golang/prometheus"

// Register exports the identity's state: <prefix>_certificate_expiry_seconds
// (seconds until the current certificate expires; alert well before 0),
// <prefix>_certificate_reloads_total and
// <prefix>_certificate_reload_errors_total.
func (s *Source) Register(reg prometheus.Registerer, prefix string) error {
	return reg.Register(&collector{s: s,
		expiry:  prometheus.NewDesc(prefix+"_certificate_expiry_seconds", "Seconds until this process's certificate expires (renew it before; it reloads live).", nil, nil),
		reloads: prometheus.NewDesc(prefix+"_certificate_reloads_total", "Renewed certificates or CAs picked up without a restart.", nil, nil),
		errs:    prometheus.NewDesc(prefix+"_certificate_reload_errors_total", "Changed identity files that were refused (the previous certificate stays in use).", nil, nil),
	})
}

type collector struct {
	s                     *Source
	expiry, reloads, errs *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	ch <- c.reloads
	ch <- c.errs
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, c.s.NotAfter().Sub(c.s.now()).Seconds())
	ch <- prometheus.MustNewConstMetric(c.reloads, prometheus.CounterValue, float64(c.s.Reloads()))
	ch <- prometheus.MustNewConstMetric(c.errs, prometheus.CounterValue, float64(c.s.ReloadErrors()))
}
