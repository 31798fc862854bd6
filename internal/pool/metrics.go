package pool

import (
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
)

var (
	hostsDesc = prometheus.NewDesc("cci_pool_hosts", "Hosts of the pool.", []string{"pool"}, nil)
	readyDesc = prometheus.NewDesc("cci_pool_hosts_ready", "Hosts of the pool that take pods now (Ready, not cordoned).", []string{"pool"}, nil)
	allocDesc = prometheus.NewDesc("cci_pool_allocatable", "Sum of the allocatable resources of the pool's hosts (cpu in cores, memory in bytes, pods and devices in units).",
		[]string{"pool", "resource", "unit"}, nil)
	reqDesc = prometheus.NewDesc("cci_pool_requested", "Sum of the requests of the unfinished pods bound to the pool's hosts (cpu in cores, memory in bytes, pods and devices in units).",
		[]string{"pool", "resource", "unit"}, nil)
)

// Collector serves the pools' figures (the same as `cci pool list`) as
// Prometheus gauges, computed at each scrape from summaries.
type Collector struct {
	summaries func() []Summary
}

// NewCollector makes a collector that reads summaries at each scrape.
func NewCollector(summaries func() []Summary) *Collector { return &Collector{summaries: summaries} }

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{hostsDesc, readyDesc, allocDesc, reqDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.summaries() {
		ch <- prometheus.MustNewConstMetric(hostsDesc, prometheus.GaugeValue, float64(s.Hosts), s.Name)
		ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, float64(s.ReadyHosts), s.Name)
		for _, r := range s.Resources() {
			unit := "integer"
			switch r {
			case corev1.ResourceCPU:
				unit = "core"
			case corev1.ResourceMemory:
				unit = "byte"
			}
			a, q := s.Allocatable[r], s.Requested[r]
			ch <- prometheus.MustNewConstMetric(allocDesc, prometheus.GaugeValue, a.AsApproximateFloat64(), s.Name, string(r), unit)
			ch <- prometheus.MustNewConstMetric(reqDesc, prometheus.GaugeValue, q.AsApproximateFloat64(), s.Name, string(r), unit)
		}
	}
}
