package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/livepeer/edgerelay/agent"
	"github.com/livepeer/edgerelay/agent/sampler"
	"github.com/livepeer/edgerelay/nvml"
	"github.com/livepeer/edgerelay/spool"
)

// benchSpoolCap is the spool cap of spool_append: large enough that a long
// --duration measures appends, not evictions at the cap.
const benchSpoolCap = 64 << 30

// benchBoltRaw is the ceiling: bbolt alone inserting the same records in
// groups of the spool's size, one fsynced transaction per group, with the
// spool's settings (map freelist, FillPercent 1.0). When spool_append runs
// too, the two alternate group by group (see bench.loop) and this call
// measures both.
func benchBoltRaw(b *bench, dir string) (*benchResult, error) {
	raw, err := openRawBolt(b, filepath.Join(dir, "raw.db"))
	if err != nil {
		return nil, err
	}
	defer raw.close()
	if !b.storagePair {
		st, err := b.loop(raw.op)
		if err != nil {
			return nil, err
		}
		return raw.result(b, st[0]), nil
	}
	sp, err := openSpoolAppend(b, filepath.Join(dir, agent.SpoolFile))
	if err != nil {
		return nil, err
	}
	defer sp.close()
	st, err := b.loop(raw.op, sp.op)
	if err != nil {
		return nil, err
	}
	r := raw.result(b, st[0])
	r.add("interleaved_with", "spool_append")
	b.spoolResult = sp.result(b, st[1])
	b.spoolResult.add("interleaved_with", "bbolt_raw")
	return r, nil
}

// benchSpoolAppend appends the same groups through spool.Append, the call
// the agent's spool writer makes once per group, with one sink registered
// that never acks (so every record is kept, as in bbolt_raw).
func benchSpoolAppend(b *bench, dir string) (*benchResult, error) {
	if b.spoolResult != nil {
		return b.spoolResult, nil // measured with bbolt_raw
	}
	sp, err := openSpoolAppend(b, filepath.Join(dir, agent.SpoolFile))
	if err != nil {
		return nil, err
	}
	defer sp.close()
	st, err := b.loop(sp.op)
	if err != nil {
		return nil, err
	}
	return sp.result(b, st[0]), nil
}

// storageSide is one contender of the storage scenarios.
type storageSide struct {
	name  string
	op    func() (int, error) // commits one group
	bytes func() int64        // the file's size in use
	close func()
}

func (s *storageSide) result(b *bench, st loopStats) *benchResult {
	r := newResult(s.name)
	r.add("events_per_s", float64(st.events)/st.busy.Seconds())
	r.addLatencies("commit", st.lats)
	r.add("group_events", b.group)
	r.add("record_bytes", b.recBytes/len(b.records))
	r.add("commits", len(st.lats))
	r.add("file_bytes", s.bytes())
	r.add("duration_s", st.busy.Seconds())
	return r
}

func openRawBolt(b *bench, path string) (*storageSide, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType, Timeout: time.Second})
	if err != nil {
		return nil, err
	}
	bucket := []byte("records")
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket(bucket); return err }); err != nil {
		db.Close()
		return nil, err
	}
	var seq uint64
	op := func() (int, error) {
		err := db.Update(func(tx *bolt.Tx) error {
			rb := tx.Bucket(bucket)
			rb.FillPercent = 1.0
			keys := make([]byte, 8*len(b.records)) // bbolt keeps keys until commit
			for i, d := range b.records {
				seq++
				k := keys[8*i : 8*i+8]
				binary.BigEndian.PutUint64(k, seq)
				if err := rb.Put(k, d); err != nil {
					return err
				}
			}
			return nil
		})
		return len(b.records), err
	}
	size := func() int64 {
		var n int64
		db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
		return n
	}
	return &storageSide{name: "bbolt_raw", op: op, bytes: size, close: func() { db.Close() }}, nil
}

func openSpoolAppend(b *bench, path string) (*storageSide, error) {
	s, err := spool.Open(spool.Options{Path: path, MaxBytes: benchSpoolCap, Logger: b.log})
	if err != nil {
		return nil, err
	}
	if err := s.AddSink("bench"); err != nil {
		s.Close()
		return nil, err
	}
	return &storageSide{
		name:  "spool_append",
		op:    func() (int, error) { return len(b.records), s.Append(b.records) },
		bytes: func() int64 { return s.Stat().Bytes },
		close: func() { s.Close() },
	}, nil
}

// benchIngestDurable posts to /v1/events from 4 keep-alive clients, 500
// {type, data} events a request; the agent stamps them and answers 202 once
// they are committed to the spool. A stdout sink writing to nowhere keeps
// the spool drained (with no sink the spool keeps nothing and commits
// nothing, which would not be durable ingest).
func benchIngestDurable(b *bench, dir string) (*benchResult, error) {
	ag, err := b.startAgent(dir, map[string]string{"EDGERELAY_STDOUT": "on"}, nil)
	if err != nil {
		return nil, err
	}
	const clients = 4
	c := newIngestClient(ag.base, clients, b.knobs.clientWait)
	defer c.close()
	from := time.Now().Add(b.warm)
	until := from.Add(b.dur)
	st, err := b.runClients(c, clients, from, until, 0)
	rep, err := ag.finish(err)
	if err != nil {
		return nil, err
	}
	r := newResult("ingest_durable")
	r.add("events_per_s", float64(st.events)/b.dur.Seconds())
	r.addLatencies("latency", st.lats)
	r.add("clients", clients)
	r.add("events_per_request", benchPerRequest)
	r.add("requests", len(st.lats))
	r.add("ring_dropped", ringDropped(rep))
	r.add("duration_s", b.dur.Seconds())
	return r, nil
}

// httpSinkEnv configures the HTTP sink to url with the rate budget off.
func httpSinkEnv(url string) map[string]string {
	return map[string]string{
		"EDGERELAY_HTTP_URL":     url,
		"EDGERELAY_HTTP_API_KEY": "bench",
		"EDGERELAY_HTTP_RATE":    "0",
		"EDGERELAY_HTTP_LINGER":  "5ms",
	}
}

func ringDropped(rep agent.Report) uint64 {
	var n uint64
	for _, m := range rep.Dropped["ring"] {
		n += m
	}
	return n
}

// benchDrain pre-fills a spool with drainWarm+drainEvents records for the
// HTTP sink, starts an agent on it, and times the drainEvents records the
// loopback server receives after the first drainWarm.
func benchDrain(b *bench, dir string) (*benchResult, error) {
	total := b.knobs.drainWarm + b.knobs.drainEvents
	fillStart := time.Now()
	if err := b.prefill(filepath.Join(dir, agent.SpoolFile), "http", total); err != nil {
		return nil, fmt.Errorf("pre-filling the spool: %w", err)
	}
	fillTook := time.Since(fillStart)
	srv, err := startSinkServer()
	if err != nil {
		return nil, err
	}
	defer srv.close()
	warmAt := srv.reached(int64(b.knobs.drainWarm))
	doneAt := srv.reached(int64(total))
	startAt := time.Now()
	ag, err := b.startAgent(dir, httpSinkEnv(srv.url), nil)
	if err != nil {
		return nil, err
	}
	readyTook := time.Since(startAt)
	timeout := time.After(5 * time.Minute)
	var t0, t1 time.Time
	select {
	case t0 = <-warmAt:
	case <-timeout:
	}
	if !t0.IsZero() {
		select {
		case t1 = <-doneAt:
		case <-timeout:
		}
	}
	// The server has every event; the acknowledgements of the last
	// batches in flight may still be on their way to the counters.
	rep := ag.a.Report()
	for settle := time.Now().Add(30 * time.Second); !t1.IsZero() && rep.Sinks["http"].Delivered < uint64(total) && time.Now().Before(settle); {
		time.Sleep(10 * time.Millisecond)
		rep = ag.a.Report()
	}
	serr := ag.stop()
	if t1.IsZero() {
		return nil, fmt.Errorf("the backlog did not drain in 5 minutes (%d of %d delivered)", srv.events.Load(), total)
	}
	if serr != nil {
		return nil, serr
	}
	hs := rep.Sinks["http"]
	r := newResult("drain")
	r.add("events_per_s", float64(b.knobs.drainEvents)/t1.Sub(t0).Seconds())
	r.add("backlog_events", b.knobs.drainEvents)
	r.add("warmup_events", b.knobs.drainWarm)
	r.add("prefill_s", fillTook.Seconds())
	r.add("agent_start_s", readyTook.Seconds())
	r.add("sink_requests", srv.requests.Load())
	r.add("delivered", hs.Delivered)
	r.add("balanced", hs.Balanced)
	r.add("duration_s", t1.Sub(t0).Seconds())
	return r, nil
}

// prefill writes n records for sink into a new spool at path, in groups of
// the spool's size, and closes it.
func (b *bench) prefill(path, sink string, n int) error {
	s, err := spool.Open(spool.Options{Path: path, MaxBytes: benchSpoolCap, Logger: b.log})
	if err != nil {
		return err
	}
	if err := s.AddSink(sink); err != nil {
		s.Close()
		return err
	}
	for done := 0; done < n; {
		g := b.records[:min(len(b.records), n-done)]
		if err := s.Append(g); err != nil {
			s.Close()
			return err
		}
		done += len(g)
	}
	return s.Close()
}

// benchOutageMemory ingests at 5,000 events/s (one client, one 500-event
// request every 100 ms) while the HTTP sink's server is down (connection
// refused), so everything stays in the spool. RSS is read after the warm-up
// and at the end of the window without forcing a GC, so it is what an
// operator would see; heap and spool bytes show where growth goes.
func benchOutageMemory(b *bench, dir string) (*benchResult, error) {
	dead, err := deadURL()
	if err != nil {
		return nil, err
	}
	ag, err := b.startAgent(dir, httpSinkEnv(dead), nil)
	if err != nil {
		return nil, err
	}
	window := b.knobs.outage
	if window <= 0 {
		window = outageWindow(b.dur)
	}
	const pace = 100 * time.Millisecond // 500 events each: 5,000 events/s
	c := newIngestClient(ag.base, 1, b.knobs.clientWait)
	defer c.close()
	from := time.Now().Add(b.warm)
	until := from.Add(window)

	type reading struct {
		rss, anon, file, heap, spool int64
	}
	read := func() reading {
		anon, file := rssParts()
		return reading{rss: rssBytes(), anon: anon, file: file, heap: heapInuse(), spool: ag.a.Report().SpoolBytes}
	}
	var (
		wg         sync.WaitGroup
		start, end reading
		peak       int64
	)
	wg.Go(func() {
		time.Sleep(time.Until(from))
		start = read()
		peak = start.rss
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for now := range tick.C {
			if !now.Before(until) {
				break
			}
			peak = max(peak, rssBytes())
		}
		time.Sleep(time.Until(until))
		end = read()
		peak = max(peak, end.rss)
	})
	st, err := b.runClients(c, 1, from, until, pace)
	wg.Wait()
	rep, err := ag.finish(err)
	if err != nil {
		return nil, err
	}
	hs := rep.Sinks["http"]
	r := newResult("outage_memory")
	r.add("ingested_events_per_s", float64(st.events)/window.Seconds())
	r.add("rss_start_bytes", start.rss)
	r.add("rss_end_bytes", end.rss)
	r.add("rss_peak_bytes", peak)
	if start.rss > 0 {
		r.add("rss_growth_pct", 100*float64(end.rss-start.rss)/float64(start.rss))
		r.add("rss_peak_growth_pct", 100*float64(peak-start.rss)/float64(start.rss))
	}
	r.add("rss_anon_start_bytes", start.anon)
	r.add("rss_anon_end_bytes", end.anon)
	r.add("rss_file_start_bytes", start.file)
	r.add("rss_file_end_bytes", end.file)
	r.add("heap_inuse_start_bytes", start.heap)
	r.add("heap_inuse_end_bytes", end.heap)
	r.add("spool_bytes_start", start.spool)
	r.add("spool_bytes_end", end.spool)
	r.add("pending_events_end", hs.Pending)
	r.add("sink_dropped", hs.DroppedTotal)
	r.add("ring_dropped", ringDropped(rep))
	r.add("balanced", hs.Balanced)
	r.add("duration_s", window.Seconds())
	return r, nil
}

// rssParts returns RssAnon and RssFile: bbolt's memory map counts in the
// second.
func rssParts() (anon, file int64) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "RssAnon" && k != "RssFile") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			continue
		}
		if k == "RssAnon" {
			anon = kb << 10
		} else {
			file = kb << 10
		}
	}
	return anon, file
}

// benchSamplerTick runs the GPU sampler on 8 simulated GPUs at its shortest
// interval (100 ms) and times each tick through the exported API: the clock
// starts when the sampler asks for GPU 0's reading and stops when it emits
// the 8th gpu_memory_sample. The tick itself is unexported; this is the
// same code BenchmarkTick runs, less the loop (and at a real cadence, so
// with cold caches). Emit does nothing, as in BenchmarkTick's "tick".
// Ticks alternate: one is timed (wall clock and the thread's CPU clock, the
// figure judged, since wall time on a shared machine includes waiting for
// a core), the next counts allocations (ReadMemStats stops the world).
func benchSamplerTick(b *bench, dir string) (*benchResult, error) {
	backend, err := nvml.Open(nvml.Options{Mode: nvml.ModeSim, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("simulated GPUs: %w", err)
	}
	defer backend.Close()
	p := &tickProbe{Backend: backend, gpus: backend.Count()}
	if p.gpus == 0 {
		return nil, errors.New("the simulation has no GPUs")
	}
	s, err := sampler.New(sampler.Options{
		GPUs:     p,
		Emit:     p.emit,
		Host:     "bench-host",
		Interval: sampler.MinInterval,
		ProcRoot: dir,
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return nil, err
	}
	p.from = time.Now().Add(b.warm)
	until := p.from.Add(b.dur)
	ctx, cancel := context.WithDeadline(context.Background(), until)
	defer cancel()
	// The sampler runs its NVML calls on one locked thread, so that the
	// thread's CPU clock is the tick's.
	if err := s.Run(ctx); err != nil {
		return nil, err
	}
	if len(p.wall) == 0 {
		return nil, errors.New("no tick measured")
	}
	n := len(p.wall)
	r := newResult("sampler_tick")
	if len(p.cpu) == n {
		var sum time.Duration
		for _, d := range p.cpu {
			sum += d
		}
		r.add("tick_us", us(percentile(p.cpu, 0.5)))
		r.add("tick_measure", "thread_cpu_p50")
		r.add("cpu_mean_tick_us", us(sum/time.Duration(n)))
	} else {
		r.add("tick_us", us(percentile(p.wall, 0.5)))
		r.add("tick_measure", "wall_p50")
	}
	r.add("wall_p50_tick_us", us(percentile(p.wall, 0.5)))
	r.add("wall_p99_tick_us", us(percentile(p.wall, 0.99)))
	if p.counted > 0 {
		r.add("allocs_per_tick", float64(p.allocs)/float64(p.counted))
		r.add("bytes_per_tick", float64(p.bytes)/float64(p.counted))
	}
	r.add("gpus", p.gpus)
	r.add("ticks", n)
	r.add("interval_ms", sampler.MinInterval.Milliseconds())
	r.add("duration_s", b.dur.Seconds())
	return r, nil
}

// tickProbe wraps the simulated GPUs to see where a tick starts; its emit
// sees where it ends. Both run on the sampler's NVML goroutine.
type tickProbe struct {
	*nvml.Backend
	gpus int
	from time.Time // ticks starting earlier are the warm-up

	seen    int  // gpu_memory_samples of the current tick
	n       int  // ticks started
	count   bool // this tick counts allocations (every other one): ReadMemStats stops the world, so timed ticks do not call it
	t0      time.Time
	cpu0    time.Duration
	m0, m1  runtime.MemStats
	wall    []time.Duration // of the timed ticks
	cpu     []time.Duration // of the timed ticks, where the thread's clock reads
	counted int             // ticks whose allocations were counted
	allocs  uint64
	bytes   uint64
}

func (p *tickProbe) Sample(slot int, s *nvml.Sample) error {
	if slot == 0 {
		p.seen = 0
		p.n++
		p.count = p.n%2 == 0
		if p.count {
			runtime.ReadMemStats(&p.m0)
		}
		p.cpu0 = threadCPU()
		p.t0 = time.Now()
	}
	return p.Backend.Sample(slot, s)
}

func (p *tickProbe) emit(typ string, _ map[string]any) {
	if typ != sampler.TypeMemory {
		return
	}
	p.seen++
	if p.seen != p.gpus || p.t0.IsZero() {
		return
	}
	t1 := time.Now()
	cpu1 := threadCPU()
	if p.count {
		runtime.ReadMemStats(&p.m1)
	}
	if p.t0.Before(p.from) {
		return
	}
	if p.count {
		p.counted++
		p.allocs += p.m1.Mallocs - p.m0.Mallocs
		p.bytes += p.m1.TotalAlloc - p.m0.TotalAlloc
	} else {
		p.wall = append(p.wall, t1.Sub(p.t0))
		if p.cpu0 >= 0 && cpu1 >= 0 {
			p.cpu = append(p.cpu, cpu1-p.cpu0)
		}
	}
}
