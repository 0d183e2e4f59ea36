package agent

import (
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/livepeer/edgerelay/nvml"
)

// metricsHandler serves /metrics: the Go runtime, the process, the agent's
// Report and the GPU gauges, from a registry of our own.
func (a *Agent) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &collector{a: a})
	if a.sampler != nil {
		reg.MustRegister(a.sampler.Collector(), &memoryCollector{a: a, attr: nvml.NewAttributor("")})
	}
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// pprofHandler serves net/http/pprof's profiles under /debug/pprof/, on a
// mux of our own (importing the package also registers them on
// http.DefaultServeMux, which the agent never serves).
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // the index and every named profile (heap, goroutine, ...)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// collector exposes the agent's Report as Prometheus metrics at scrape time,
// so the numbers on /metrics, /v1/stats and in agent_status are the same
// numbers (one source of truth, no double counting).
type collector struct{ a *Agent }

var (
	descReceived    = prometheus.NewDesc("edgerelay_events_received_total", "Events accepted into the pipeline, by source.", []string{"source"}, nil)
	descRefused     = prometheus.NewDesc("edgerelay_events_refused_total", "Items refused at ingest because the agent was overloaded (429 or 503 with Retry-After), by source and reason; never accepted, the client sends them again.", []string{"source", "reason"}, nil)
	descRejected    = prometheus.NewDesc("edgerelay_events_rejected_total", "Items refused at ingest (invalid), by source; never accepted.", []string{"source"}, nil)
	descDelivered   = prometheus.NewDesc("edgerelay_events_delivered_total", "Events a sink delivered.", []string{"sink"}, nil)
	descDropped     = prometheus.NewDesc("edgerelay_events_dropped_total", "Events dropped, by stage and reason (spool and sink drops are summed over sinks).", []string{"stage", "reason"}, nil)
	descSinkDropped = prometheus.NewDesc("edgerelay_sink_dropped_total", "Events a sink will never deliver, by reason.", []string{"sink", "reason"}, nil)
	descSinkRecv    = prometheus.NewDesc("edgerelay_sink_received_total", "Events a sink had to deliver (received = delivered + dropped + pending).", []string{"sink"}, nil)
	descPending     = prometheus.NewDesc("edgerelay_events_pending", "Events waiting for a sink.", []string{"sink"}, nil)
	descRing        = prometheus.NewDesc("edgerelay_ring_events", "Events in the ring, waiting for the spool writer.", nil, nil)
	descRingBytes   = prometheus.NewDesc("edgerelay_ring_bytes", "Bytes in the ring.", nil, nil)
	descSpoolBytes  = prometheus.NewDesc("edgerelay_spool_bytes", "Bytes held by the spool.", nil, nil)
	descSpoolEvents = prometheus.NewDesc("edgerelay_spool_events", "Events held by the spool.", nil, nil)
	descDurable     = prometheus.NewDesc("edgerelay_spool_durable", "1 when accepted events survive a crash (disk spool writing), 0 in memory-only or degraded mode.", nil, nil)
	descDegraded    = prometheus.NewDesc("edgerelay_spool_degraded", "1 while disk writes fail and events are held in memory.", nil, nil)
	descQuarantine  = prometheus.NewDesc("edgerelay_spool_quarantined_total", "Corrupt spool files moved aside at start.", nil, nil)
	descRequests    = prometheus.NewDesc("edgerelay_sink_requests_total", "Requests to a sink's peer, by outcome code.", []string{"sink", "code"}, nil)
	descRetries     = prometheus.NewDesc("edgerelay_sink_retries_total", "Waits before a retry, by reason.", []string{"sink", "reason"}, nil)
	descPaused      = prometheus.NewDesc("edgerelay_sink_paused", "1 while a sink is paused, with the reason.", []string{"sink", "reason"}, nil)
	descLastSuccess = prometheus.NewDesc("edgerelay_sink_last_success_timestamp_seconds", "When a sink last delivered.", []string{"sink"}, nil)
	descSessions    = prometheus.NewDesc("edgerelay_sessions", "Attached sessions.", nil, nil)
	descSubRelayed  = prometheus.NewDesc("edgerelay_subscriber_relayed_total", "Envelopes relayed from a followed trickle channel (session channels under channel=\"sessions\").", []string{"channel"}, nil)
	descSubDup      = prometheus.NewDesc("edgerelay_subscriber_duplicates_total", "Envelopes a subscriber skipped as already seen.", []string{"channel"}, nil)
	descSubBad      = prometheus.NewDesc("edgerelay_subscriber_malformed_total", "Frames a subscriber rejected, by reason.", []string{"channel", "reason"}, nil)
	descSubReconn   = prometheus.NewDesc("edgerelay_subscriber_reconnects_total", "Reads a subscriber retried after a transport error.", []string{"channel"}, nil)
	descSubJumps    = prometheus.NewDesc("edgerelay_subscriber_jumps_total", "Jumps to the live edge after a 470.", []string{"channel"}, nil)
	descSubSkipped  = prometheus.NewDesc("edgerelay_subscriber_skipped_segments_total", "Segments a subscriber skipped (lost to it).", []string{"channel"}, nil)
	descSubGone     = prometheus.NewDesc("edgerelay_subscriber_gone_total", "Times a followed channel answered 404 or was closed and was probed until back.", []string{"channel"}, nil)
	descBuildInfo   = prometheus.NewDesc("edgerelay_build_info", "Always 1; the labels describe the running binary.", []string{"version", "revision", "goversion"}, nil)
	descTailDropped = prometheus.NewDesc("edgerelay_tail_dropped_total", "Envelopes a slow /v1/tail watcher missed (the pipeline is not affected).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReceived, descRejected, descRefused, descDelivered, descDropped, descSinkDropped, descSinkRecv, descPending, descRing, descRingBytes, descSpoolBytes, descSpoolEvents, descDurable, descDegraded, descQuarantine, descRequests, descRetries, descPaused, descLastSuccess, descSessions, descTailDropped, descSubRelayed, descSubDup, descSubBad, descSubReconn, descSubJumps, descSubSkipped, descSubGone, descBuildInfo} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	r := c.a.Report()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for src, n := range r.Received {
		counter(descReceived, n, src)
	}
	for src, n := range r.Rejected {
		counter(descRejected, n, src)
	}
	for stage, reasons := range r.Dropped {
		for reason, n := range reasons {
			counter(descDropped, n, stage, reason)
		}
	}
	for src, reasons := range r.Refused {
		for reason, n := range reasons {
			counter(descRefused, n, src, reason)
		}
	}
	for name, s := range r.Sinks {
		counter(descDelivered, s.Delivered, name)
		counter(descSinkRecv, s.Received, name)
		gauge(descPending, float64(s.Pending), name)
		for reason, n := range s.Dropped {
			counter(descSinkDropped, n, name, reason)
		}
		for code, n := range s.Requests {
			counter(descRequests, n, name, code)
		}
		for reason, n := range s.Retries {
			counter(descRetries, n, name, reason)
		}
		if s.Paused != "" {
			gauge(descPaused, 1, name, s.Paused)
		}
		if s.LastSuccess != nil {
			gauge(descLastSuccess, float64(s.LastSuccess.UnixNano())/1e9, name)
		}
	}
	for ch, sr := range r.Subscribers {
		counter(descSubRelayed, sr.Relayed, ch)
		counter(descSubDup, sr.Duplicates, ch)
		counter(descSubReconn, sr.Reconnects, ch)
		counter(descSubJumps, sr.Jumps, ch)
		counter(descSubSkipped, sr.Skipped, ch)
		counter(descSubGone, sr.Gone, ch)
		for reason, n := range sr.Malformed {
			counter(descSubBad, n, ch, reason)
		}
	}
	gauge(descRing, float64(r.RingEvents))
	gauge(descRingBytes, float64(r.RingBytes))
	gauge(descSpoolBytes, float64(r.SpoolBytes))
	gauge(descSpoolEvents, float64(r.SpoolEvents))
	gauge(descDurable, b2f(r.Durable))
	gauge(descDegraded, b2f(r.Degraded))
	counter(descQuarantine, uint64(r.Quarantined))
	gauge(descSessions, float64(r.Sessions))
	counter(descTailDropped, r.TailDropped)
	b := c.a.build
	gauge(descBuildInfo, 1, b.Version, b.Revision, b.GoVersion)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
