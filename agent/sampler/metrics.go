package sampler

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livepeer/edgerelay/agent/hostnet"
	"github.com/livepeer/edgerelay/nvml"
)

// collector serves the latest GPU figures as gauges, in base units, so the
// agent doubles as a small GPU exporter. Readings a GPU does not support
// have no series; a lost GPU keeps only edgerelay_gpu_lost 1.
type collector struct {
	s *Sampler

	memUsed, memFree, memTotal, memReserved *prometheus.Desc
	util, memUtil, temp, power, smClock     *prometheus.Desc
	lost, skipped, streamSkipped            *prometheus.Desc
}

func newCollector(s *Sampler) *collector {
	labels := []string{"uuid", "index", "name"}
	g := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("edgerelay_gpu_"+name, help, labels, nil)
	}
	return &collector{
		s:           s,
		memUsed:     g("memory_used_bytes", "GPU memory in use, as NVML reports it (v1 includes driver-reserved memory)."),
		memFree:     g("memory_free_bytes", "GPU memory free."),
		memTotal:    g("memory_total_bytes", "GPU memory in total."),
		memReserved: g("memory_reserved_bytes", "GPU memory reserved by the driver (GetMemoryInfo_v2 only)."),
		util:        g("utilization_ratio", "Fraction of the last sample period in which a kernel ran on the GPU."),
		memUtil:     g("memory_utilization_ratio", "Fraction of the last sample period in which GPU memory was read or written."),
		temp:        g("temperature_celsius", "GPU core temperature."),
		power:       g("power_watts", "GPU board power draw."),
		smClock:     g("sm_clock_hz", "Current SM clock."),
		lost:        g("lost", "1 while the GPU does not answer NVML (ERROR_GPU_IS_LOST and friends), else 0."),
		skipped: prometheus.NewDesc("edgerelay_gpu_samples_skipped_total",
			"GPU ticks that emitted no gpu_memory_sample, by reason (lost, no_memory, error).", []string{"reason"}, nil),
		streamSkipped: prometheus.NewDesc("edgerelay_stream_bandwidth_skipped_total",
			"Readings of a session's runner that gave no stream_bandwidth_sample, by reason (agent_netns, netns_shared, netns_unreadable).", []string{"reason"}, nil),
	}
}

// Collector returns the Prometheus collector of the latest GPU figures:
// edgerelay_gpu_memory_{used,free,total,reserved}_bytes,
// edgerelay_gpu_utilization_ratio, edgerelay_gpu_memory_utilization_ratio,
// edgerelay_gpu_temperature_celsius, edgerelay_gpu_power_watts,
// edgerelay_gpu_sm_clock_hz and edgerelay_gpu_lost, labelled uuid, index
// and name, edgerelay_gpu_samples_skipped_total{reason} and
// edgerelay_stream_bandwidth_skipped_total{reason}. Register it
// once; it is safe for concurrent use.
func (s *Sampler) Collector() prometheus.Collector { return s.coll }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.memUsed, c.memFree, c.memTotal, c.memReserved, c.util, c.memUtil, c.temp, c.power, c.smClock, c.lost, c.skipped, c.streamSkipped} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for i, reason := range skipReasons {
		ch <- prometheus.MustNewConstMetric(c.skipped, prometheus.CounterValue, float64(c.s.skipped[i].Load()), reason)
	}
	for i, reason := range hostnet.SkipReasons {
		ch <- prometheus.MustNewConstMetric(c.streamSkipped, prometheus.CounterValue, float64(c.s.streamSkipped[i].Load()), reason)
	}
	c.s.mu.RLock()
	defer c.s.mu.RUnlock()
	for _, st := range c.s.gpus {
		labels := []string{st.dev.UUID, strconv.Itoa(st.dev.Index), st.dev.Name}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
		}
		if st.lost {
			gauge(c.lost, 1)
			continue
		}
		gauge(c.lost, 0)
		smp := &st.sample
		if smp.Has(nvml.FieldMemory) {
			gauge(c.memUsed, float64(smp.MemUsed))
			gauge(c.memFree, float64(smp.MemFree))
			gauge(c.memTotal, float64(smp.MemTotal))
		}
		if smp.Has(nvml.FieldMemReserved) {
			gauge(c.memReserved, float64(smp.MemReserved))
		}
		if smp.Has(nvml.FieldUtilization) {
			gauge(c.util, float64(smp.UtilGPU)/100)
			gauge(c.memUtil, float64(smp.UtilMem)/100)
		}
		if smp.Has(nvml.FieldTemperature) {
			gauge(c.temp, float64(smp.TempC))
		}
		if smp.Has(nvml.FieldPower) {
			gauge(c.power, float64(smp.PowerMW)/1000)
		}
		if smp.Has(nvml.FieldSMClock) {
			gauge(c.smClock, float64(smp.SMClockMHz)*1e6)
		}
	}
}
