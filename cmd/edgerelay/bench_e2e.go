package main

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// series is one figure measured in each interval of a scenario.
type series []float64

func (s series) median() float64 {
	if len(s) == 0 {
		return 0
	}
	c := slices.Clone(s)
	slices.Sort(c)
	if n := len(c); n%2 == 1 {
		return c[n/2]
	} else {
		return (c[n/2-1] + c[n/2]) / 2
	}
}

// add puts the series' median under key, and its spread beside it: the
// smallest and largest interval, and (max-min)/median in percent.
func (s series) add(r *benchResult, key string) {
	if len(s) == 0 {
		return
	}
	m := s.median()
	r.add(key, m)
	r.add(key+"_min", slices.Min(s))
	r.add(key+"_max", slices.Max(s))
	if m != 0 {
		r.add(key+"_spread_pct", 100*(slices.Max(s)-slices.Min(s))/math.Abs(m))
	}
}

// timedCommits runs raw bbolt group commits for d and returns the events
// per second of commit time.
func timedCommits(op func() (int, error), d time.Duration) (float64, error) {
	var events int
	start := time.Now()
	for time.Since(start) < d {
		n, err := op()
		if err != nil {
			return 0, err
		}
		events += n
	}
	return float64(events) / time.Since(start).Seconds(), nil
}

// e2eContender is one load of the e2e_http rotation.
type e2eContender struct {
	key     string // figure prefix
	proto   string
	clients int
}

// benchE2EHTTP is the whole durable path under load from another process:
// its clients post 500-event bodies to /v1/events (or send them on
// /v1/stream), the agent answers each once it is committed, and the HTTP
// sink (rate budget off, EDGERELAY_HTTP_INFLIGHT requests in flight)
// delivers to the load generator's metrics API. In each of --intervals
// rounds it measures, one after the other on the same disk: raw bbolt
// group commits (the ceiling), 100 HTTP clients, 1,000 HTTP clients and
// 100 WebSocket clients, each for --duration after a short warm-up of its
// own. Ratios are taken within a round and their median reported, so the
// machine's drift cancels out.
func benchE2EHTTP(b *bench, dir string) (*benchResult, error) {
	lg, ag, err := b.startLoaded(dir, nil)
	if err != nil {
		return nil, err
	}
	defer lg.close()
	raw, err := openRawBolt(b, filepath.Join(dir, "raw.db"))
	if err != nil {
		ag.stop()
		return nil, err
	}
	defer raw.close()

	c100 := b.clients100()
	contenders := []e2eContender{{"http_100", "http", c100}, {"http_1000", "http", 10 * c100}, {"ws_100", "ws", c100}}
	warm := min(b.warm, time.Second).Seconds()
	// The whole warm-up: the agent's first requests, the file's growth.
	if _, err := lg.do(loadCmd{Op: "load", URL: ag.base, Proto: "http", Clients: contenders[0].clients, WindowS: b.warm.Seconds()}, nil); err != nil {
		ag.stop()
		return nil, err
	}
	var (
		rawRate                      series
		delivered                    = map[string]series{}
		ingested                     = map[string]series{}
		cpuPerEvent                  = map[string]series{}
		ratioRaw, ratio1000, ratioWS series
		p50, p99                     series
		refused                      int64
	)
	for range b.intervals {
		rr, err := timedCommits(raw.op, b.dur)
		if err != nil {
			ag.stop()
			return nil, err
		}
		rawRate = append(rawRate, rr)
		got := map[string]float64{}
		for _, c := range contenders {
			var cpu0, cpu1 time.Duration
			rep, err := lg.do(loadCmd{Op: "load", URL: ag.base, Proto: c.proto, Clients: c.clients, WarmS: warm, WindowS: b.dur.Seconds()},
				readAtMarks(processCPU, &cpu0, &cpu1))
			if err != nil {
				ag.stop()
				return nil, fmt.Errorf("%s: %w", c.key, err)
			}
			del := float64(rep.ServerEvents) / rep.WindowS
			delivered[c.key] = append(delivered[c.key], del)
			ingested[c.key] = append(ingested[c.key], float64(rep.Accepted)/rep.WindowS)
			if through := float64(rep.Accepted+rep.ServerEvents) / 2; through > 0 && cpu0 >= 0 {
				cpuPerEvent[c.key] = append(cpuPerEvent[c.key], us(cpu1-cpu0)/through)
			}
			refused += rep.RefusedAll
			if c.key == "http_100" {
				p50 = append(p50, rep.P50ms)
				p99 = append(p99, rep.P99ms)
			}
			got[c.key] = del
		}
		ratioRaw = append(ratioRaw, got["http_100"]/rr)
		ratio1000 = append(ratio1000, got["http_1000"]/got["http_100"])
		ratioWS = append(ratioWS, got["ws_100"]/got["http_100"])
	}
	anon, file := rssParts()
	rss := rssBytes()
	rep, err := ag.finish(nil)
	if err != nil {
		return nil, err
	}
	hs := rep.Sinks["http"]
	r := newResult("e2e_http")
	delivered["http_100"].add(r, "events_per_s")
	ingested["http_100"].add(r, "ingested_events_per_s")
	rawRate.add(r, "bbolt_raw_events_per_s")
	ratioRaw.add(r, "ratio_to_bbolt_raw")
	delivered["http_1000"].add(r, "events_per_s_1000_clients")
	ratio1000.add(r, "ratio_1000_to_100")
	delivered["ws_100"].add(r, "ws_events_per_s")
	ratioWS.add(r, "ratio_ws_to_http")
	cpuPerEvent["http_100"].add(r, "cpu_us_per_event")
	r.add("cpu_us_per_event_1000_clients", cpuPerEvent["http_1000"].median())
	r.add("cpu_us_per_event_ws", cpuPerEvent["ws_100"].median())
	r.add("p50_ingest_latency_ms", p50.median())
	r.add("p99_ingest_latency_ms", p99.median())
	r.add("clients", contenders[0].clients)
	r.add("inflight", envSetting("EDGERELAY_HTTP_INFLIGHT"))
	r.add("naap", envSetting("EDGERELAY_NAAP"))
	r.add("refused_events", refused)
	r.add("rss_bytes", rss)
	r.add("rss_anon_bytes", anon)
	r.add("rss_file_bytes", file)
	r.add("backlog_events_end", hs.Pending)
	r.add("sink_dropped", hs.DroppedTotal)
	r.add("balanced", hs.Balanced)
	r.add("ring_dropped", ringDropped(rep))
	r.add("intervals", b.intervals)
	r.add("duration_s", b.dur.Seconds())
	return r, nil
}

// startLoaded starts the load generator and an agent on dir whose HTTP
// sink (rate budget off) delivers to the load generator's metrics API;
// extra settings override the bench's.
func (b *bench) startLoaded(dir string, extra map[string]string) (*loadgen, *benchAgent, error) {
	lg, err := startLoadgen(b.knobs.loadgen, false)
	if err != nil {
		return nil, nil, err
	}
	env := httpSinkEnv(lg.server)
	maps.Copy(env, extra)
	ag, err := b.startAgent(dir, env, nil)
	if err != nil {
		lg.close()
		return nil, nil, err
	}
	return lg, ag, nil
}

// clients100 is the "100 clients" of e2e_http and overload: 100, or the
// knob that replaces it.
func (b *bench) clients100() int {
	if b.knobs.clients100 > 0 {
		return b.knobs.clients100
	}
	return 100
}

// envSetting is a pass-through setting as the bench's agents got it.
func envSetting(k string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return "default"
}

// benchOverload offers twice the measured drain rate and reports what is
// delivered meanwhile. A spool pre-filled with a backlog for the HTTP sink
// keeps the sink busy throughout; each round first measures the unloaded
// drain (no ingest) for a tenth of --duration, then offers twice that
// rate from 100 clients of the load generator for --duration. A round whose
// backlog ran out is not counted (intervals_exhausted). Every event
// the agent refuses is answered 429 or 503 and counted; the figure
// refused_uncounted compares the agent's count with the clients'.
// Here the metrics API answers at once, so the drain is bound by the CPU
// that ingest shares.
func benchOverload(b *bench, dir string) (*benchResult, error) {
	return b.overload(dir, "overload", 0)
}

// remoteSinkRTT is the round trip of overload_remote's metrics API.
const remoteSinkRTT = 20 * time.Millisecond

// benchOverloadRemote is overload with every answer of the metrics API
// held remoteSinkRTT, as from an API across a network: the drain is bound
// by the sink's answers and the lanes in flight, not by the CPU, which is
// how a node meets overload.
func benchOverloadRemote(b *bench, dir string) (*benchResult, error) {
	return b.overload(dir, "overload_remote", remoteSinkRTT)
}

// overload runs the overload rounds with the metrics API's answers held
// rtt, and names the result name.
func (b *bench) overload(dir, name string, rtt time.Duration) (*benchResult, error) {
	rttMS := float64(rtt) / float64(time.Millisecond)
	if err := b.prefill(filepath.Join(dir, "spool.db"), "http", b.knobs.overloadBacklog); err != nil {
		return nil, fmt.Errorf("pre-filling the spool: %w", err)
	}
	// The metrics API runs in a process of its own, apart from the load
	// generator's clients, as a real one does: the load the clients make
	// must not slow the answers delivery waits for. With a round trip it
	// stands for an API on another machine and runs at raised priority
	// where it may (remoteNice).
	api, err := startLoadgen(b.knobs.loadgen, rtt > 0)
	if err != nil {
		return nil, err
	}
	defer api.close()
	// The spool's cap is lifted above what the rounds can fill, so that the
	// backlog grows by ingest − delivery throughout and no eviction of the
	// oldest (spool_full, the cap's rule) takes the writer's time.
	lg, ag, err := b.startLoaded(dir, map[string]string{
		"EDGERELAY_HTTP_URL":        api.server,
		"EDGERELAY_SPOOL_MAX_BYTES": strconv.FormatInt(benchSpoolCap, 10),
	})
	if err != nil {
		return nil, err
	}
	defer lg.close()
	// apiTotal is what the metrics API has received so far, and when.
	apiTotal := func() (int64, time.Time) {
		r, err := api.do(loadCmd{Op: "total", SinkRTTMS: rttMS}, nil)
		if err != nil {
			return -1, time.Now()
		}
		return r.ServerTotal, time.Now()
	}
	pending := func() uint64 { return ag.a.Report().Sinks["http"].Pending }
	refusedByAgent := func() int64 {
		var n uint64
		for _, reasons := range ag.a.Report().Refused {
			for _, v := range reasons {
				n += v
			}
		}
		return int64(n)
	}
	clients := b.clients100()
	// Warm-up: the agent's start and the first batches, not counted.
	if _, err := api.do(loadCmd{Op: "count", WindowS: b.warm.Seconds(), SinkRTTMS: rttMS}, nil); err != nil {
		ag.stop()
		return nil, err
	}
	// The drain interval is short: at several hundred thousand events a
	// second it eats the backlog that the overload intervals need.
	dA := max(b.dur/10, 500*time.Millisecond)
	var (
		drain, delivered, offered, ingested, refusedRate, ratio, growth, inMinusOut series
		exhausted                                                                   int
		refusedAnswered                                                             int64
	)
	for range b.intervals {
		a, err := api.do(loadCmd{Op: "count", WindowS: dA.Seconds(), SinkRTTMS: rttMS}, nil)
		if err != nil {
			ag.stop()
			return nil, err
		}
		if pending() == 0 {
			exhausted++
			break
		}
		dr := float64(a.ServerEvents) / a.WindowS
		var (
			p0, p1 uint64
			n0, n1 int64 // the metrics API's total at the window's marks
			t0, t1 time.Time
		)
		rep, err := lg.do(loadCmd{Op: "load", URL: ag.base, Proto: "http", Clients: clients, Rate: 2 * dr, WarmS: 0.5, WindowS: b.dur.Seconds()},
			func(mark string) {
				if mark == "start" {
					p0 = pending()
					n0, t0 = apiTotal()
				} else {
					p1 = pending()
					n1, t1 = apiTotal()
				}
			})
		if err != nil {
			ag.stop()
			return nil, err
		}
		if n0 < 0 || n1 < 0 {
			ag.stop()
			return nil, errors.New("the metrics API's process did not answer")
		}
		refusedAnswered += rep.RefusedAll
		if p1 == 0 {
			exhausted++ // the backlog ran out: delivery was not under overload throughout
			continue
		}
		del := float64(n1-n0) / t1.Sub(t0).Seconds()
		drain = append(drain, dr)
		delivered = append(delivered, del)
		offered = append(offered, 2*dr)
		ingested = append(ingested, float64(rep.Accepted)/rep.WindowS)
		refusedRate = append(refusedRate, float64(rep.Refused)/rep.WindowS)
		ratio = append(ratio, del/dr)
		growth = append(growth, (float64(p1)-float64(p0))/rep.WindowS)
		inMinusOut = append(inMinusOut, float64(rep.Accepted)/rep.WindowS-del)
	}
	refusedCounted := refusedByAgent()
	rep, err := ag.finish(nil)
	if err != nil {
		return nil, err
	}
	if len(ratio) == 0 {
		return nil, fmt.Errorf("the backlog of %d events ran out before an overload interval completed; raise it", b.knobs.overloadBacklog)
	}
	hs := rep.Sinks["http"]
	r := newResult(name)
	ratio.add(r, "ratio_delivered_to_drain")
	delivered.add(r, "events_per_s")
	drain.add(r, "unloaded_drain_events_per_s")
	offered.add(r, "offered_events_per_s")
	ingested.add(r, "ingested_events_per_s")
	refusedRate.add(r, "refused_events_per_s")
	r.add("backlog_growth_events_per_s", growth.median())
	r.add("ingested_minus_delivered_events_per_s", inMinusOut.median())
	r.add("refused_answered", refusedAnswered)
	r.add("refused_counted", refusedCounted)
	r.add("refused_uncounted", math.Abs(float64(refusedAnswered-refusedCounted)))
	r.add("clients", clients)
	r.add("sink_rtt_ms", rttMS)
	r.add("api_nice", api.nice)
	r.add("backlog_events_start", b.knobs.overloadBacklog)
	r.add("backlog_events_end", hs.Pending)
	r.add("intervals_exhausted", exhausted)
	r.add("sink_dropped", hs.DroppedTotal)
	r.add("balanced", hs.Balanced)
	r.add("ring_dropped", ringDropped(rep))
	r.add("intervals", len(ratio))
	r.add("duration_s", b.dur.Seconds())
	return r, nil
}
