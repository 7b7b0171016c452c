package history

import "github.com/prometheus/client_golang/prometheus"

// NewCollector returns the table's metrics, named prefix_history_*
// (prefix "styx_worker" or "styx_node"): the addresses, buckets and ASes
// held, and the addresses evicted. A scrape reads the table's sizes once.
func NewCollector(t *Table, prefix string) prometheus.Collector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(prefix+"_history_"+name, help, nil, nil)
	}
	return &collector{
		t:       t,
		addrs:   desc("addresses", "Addresses in the history table."),
		buckets: desc("buckets", "IPv4 /24 and IPv6 /48 buckets in the history table."),
		ases:    desc("ases", "ASes in the history table."),
		evicted: desc("evicted_total", "Addresses dropped from the full history table."),
	}
}

type collector struct {
	t                             *Table
	addrs, buckets, ases, evicted *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.addrs
	ch <- c.buckets
	ch <- c.ases
	ch <- c.evicted
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	z := c.t.Sizes()
	ch <- prometheus.MustNewConstMetric(c.addrs, prometheus.GaugeValue, float64(z.Addrs))
	ch <- prometheus.MustNewConstMetric(c.buckets, prometheus.GaugeValue, float64(z.Buckets))
	ch <- prometheus.MustNewConstMetric(c.ases, prometheus.GaugeValue, float64(z.ASes))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(z.Evicted))
}
