package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// recordingSink delivers only while up, and records what it delivered.
type recordingSink struct {
	mu  sync.Mutex
	up  bool
	ids []string
}

func (s *recordingSink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.up {
		return relay.Result{Err: errors.New("sink down")}
	}
	for _, r := range recs {
		var e struct{ ID string }
		json.Unmarshal(r.Data, &e)
		s.ids = append(s.ids, e.ID)
	}
	return relay.Done(len(recs))
}

func (s *recordingSink) set(up bool) { s.mu.Lock(); s.up = up; s.mu.Unlock() }
func (s *recordingSink) delivered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ids...)
}

var padding = strings.Repeat("p", 150)

func postIDs(t *testing.T, r *running, prefix string, from, n int) (durable bool) {
	t.Helper()
	var b strings.Builder
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "{\"id\":\"%s%06d\",\"type\":\"o\",\"timestamp\":\"1\",\"data\":{\"pad\":%q}}\n", prefix, i, padding)
	}
	code, ans := r.post(t, "/v1/events", b.String())
	if code != 202 || ans.Accepted != n {
		t.Fatalf("post: %d %+v", code, ans)
	}
	return ans.Durable != nil && *ans.Durable
}

// TestOutageBeyondTheCap: the sink is down while far more than the spool's
// cap arrives. The cap holds, exactly the oldest are dropped (spool_full),
// the counters add up, and everything retained arrives in order.
func TestOutageBeyondTheCap(t *testing.T) {
	sink := &recordingSink{}
	env := testEnv(t, map[string]string{"EDGERELAY_STDOUT": "off", "EDGERELAY_SPOOL_MAX_BYTES": "1048576"})
	a, err := New(loadConfig(t, env), Options{extraSink: sink, newBackOff: fastBackOff})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, &syncBuffer{})
	const total = 20000 // ~4.4 MB of envelopes against a 1 MiB cap
	for i := 0; i < total; i += 500 {
		postIDs(t, r, "o", i, 500)
		if b := a.Report().SpoolBytes; b > 1048576+512*1024 {
			t.Fatalf("spool holds %d bytes, cap 1 MiB (+ one commit group)", b)
		}
	}
	rep := a.Report()
	s := rep.Sinks["test"]
	if !s.Balanced || s.Dropped["spool_full"] == 0 || s.Received != total {
		t.Fatalf("during the outage: %+v", s)
	}
	sink.set(true)
	waitUntil(t, "the retained backlog to arrive", func() bool { return a.Report().Sinks["test"].Pending == 0 })
	got := sink.delivered()
	s = a.Report().Sinks["test"]
	if uint64(len(got)) != s.Delivered || s.Delivered+s.Dropped["spool_full"] != total || !s.Balanced {
		t.Fatalf("after recovery: delivered %d, sink %+v", len(got), s)
	}
	// Exactly the oldest were dropped: what arrived is the newest suffix, in order.
	first := total - len(got)
	for i, id := range got {
		if want := fmt.Sprintf("o%06d", first+i); id != want {
			t.Fatalf("delivery %d is %s, want %s (in order, oldest dropped)", i, id, want)
		}
	}
	t.Logf("cap 1 MiB: %d of %d retained and delivered, %d dropped as spool_full", len(got), total, s.Dropped["spool_full"])
}

// TestCorruptSpoolIsQuarantined damages the spool file three ways; each time
// the agent starts, moves the file aside, reports it, and works.
func TestCorruptSpoolIsQuarantined(t *testing.T) {
	damage := map[string]func(path string) error{
		"truncated": func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Truncate(p, fi.Size()/3)
		},
		"random bytes in the middle": func(p string) error {
			// On a page the tree uses: junk on a free page is no damage,
			// and the spool rightly keeps such a file.
			off, size, err := leafPageNearMiddle(p)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			junk := make([]byte, size)
			for i := range junk {
				junk[i] = byte(rand.IntN(256))
			}
			_, err = f.WriteAt(junk, off)
			return err
		},
		"zero length": func(p string) error { return os.Truncate(p, 0) },
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			// A first run leaves 2000 undelivered events in the file.
			env := testEnv(t, map[string]string{"EDGERELAY_STDOUT": "off", "EDGERELAY_SHUTDOWN_GRACE": "50ms"})
			down := &recordingSink{}
			a, err := New(loadConfig(t, env), Options{extraSink: down})
			if err != nil {
				t.Fatal(err)
			}
			r := runAgent(t, a, &syncBuffer{})
			for i := 0; i < 2000; i += 500 {
				postIDs(t, r, "c", i, 500)
			}
			r.stop(t)
			env["EDGERELAY_STDOUT"] = "on"
			path := filepath.Join(env["EDGERELAY_STATE_DIR"], SpoolFile)
			if err := fn(path); err != nil {
				t.Fatal(err)
			}
			r2 := startAgent(t, env)
			rep := r2.a.Report()
			if rep.Quarantined != 1 || !rep.Durable {
				t.Fatalf("after restart: quarantined %d durable %v", rep.Quarantined, rep.Durable)
			}
			moved, _ := filepath.Glob(path + ".corrupt-*")
			if len(moved) != 1 {
				t.Fatalf("quarantined files: %v", moved)
			}
			resp, err := testClient.Get(r2.base + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !strings.Contains(string(body), "edgerelay_spool_quarantined_total 1") {
				t.Error("/metrics does not report the quarantine")
			}
			postIDs(t, r2, "after", 0, 10)
			lines := r2.waitLines(t, 10)
			if !strings.Contains(lines[len(lines)-1], "after000009") {
				t.Errorf("the fresh spool does not deliver: %s", lines[len(lines)-1])
			}
		})
	}
}

// leafPageNearMiddle returns the offset and size of the leaf page nearest
// the middle of the bbolt file at path that the tree uses (not free).
func leafPageNearMiddle(path string) (off int64, size int, err error) {
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		return 0, 0, err
	}
	defer db.Close()
	size = db.Info().PageSize
	err = db.View(func(tx *bolt.Tx) error {
		mid := int(tx.Size()) / size / 2
		for d := 0; d <= mid; d++ {
			for _, id := range []int{mid + d, mid - d} {
				if pi, err := tx.Page(id); err == nil && pi != nil && pi.Type == "leaf" {
					off = int64(id) * int64(size)
					return nil
				}
			}
		}
		return errors.New("no leaf page in use")
	})
	return off, size, err
}

// TestDiskFull puts the spool on a 1 MiB tmpfs and fills it: the agent keeps
// accepting into memory, says so (durable false, degraded), and when space
// returns moves the held events to disk and delivers everything.
func TestDiskFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "small")
	os.MkdirAll(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mounting a tmpfs (CI runs as root): %v %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (needs root): %v %s; the spool's own tests inject ENOSPC", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	sink := &recordingSink{}
	env := testEnv(t, map[string]string{"EDGERELAY_STDOUT": "off", "EDGERELAY_STATE_DIR": dir})
	a, err := New(loadConfig(t, env), Options{extraSink: sink, newBackOff: fastBackOff})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, &syncBuffer{})
	filler := filepath.Join(dir, "filler")
	os.WriteFile(filler, make([]byte, 700<<10), 0o600)

	sent, durableFalse := 0, false
	for sent < 20000 && !durableFalse {
		durableFalse = !postIDs(t, r, "d", sent, 200)
		sent += 200
	}
	if !durableFalse {
		t.Fatal("the spool never reported a failed write")
	}
	for range 5 { // keep accepting while degraded
		if postIDs(t, r, "d", sent, 200) {
			break
		}
		sent += 200
	}
	rep := r.a.Report()
	if !rep.Degraded || rep.Durable {
		t.Fatalf("degraded %v durable %v", rep.Degraded, rep.Durable)
	}
	os.Remove(filler)
	sink.set(true)
	waitUntil(t, "recovery to disk", func() bool {
		postIDs(t, r, "probe", 0, 1) // appends retry the disk
		return !a.Report().Degraded
	})
	waitUntil(t, "delivery", func() bool { return a.Report().Sinks["test"].Pending == 0 })
	got := map[string]bool{}
	for _, id := range sink.delivered() {
		got[id] = true
	}
	for i := range sent {
		if id := fmt.Sprintf("d%06d", i); !got[id] {
			t.Fatalf("accepted event %s lost across the disk-full episode", id)
		}
	}
	t.Logf("%d events accepted while the disk filled; all delivered after recovery", sent)
}

// gatedStore blocks Append until released, to hold the spool writer back.
type gatedStore struct {
	Spool
	entered chan struct{}
	release chan struct{}
}

func (g *gatedStore) Append(data [][]byte) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	return g.Spool.Append(data)
}

// TestRingOverflowAccounting fills the agent's ring far past its caps while
// the spool writer is held back, and checks that the oldest were dropped,
// the counts are exact, and the per-sink identity still holds.
func TestRingOverflowAccounting(t *testing.T) {
	gate := &gatedStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	env := testEnv(t, map[string]string{"EDGERELAY_RING_MAX_EVENTS": "100"})
	cfg := loadConfig(t, env)
	out := &syncBuffer{}
	a, err := New(cfg, Options{Stdout: out, wrapStore: func(s Spool) Spool { gate.Spool = s; return gate }})
	if err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, a, out)
	env0 := func(i int) []byte { return []byte(fmt.Sprintf(`{"id":"e%d","type":"t","timestamp":"1","data":{}}`, i)) }
	a.pipe.Emit("test", pipeline.Entry{Env: env0(-1), Type: "t"}) // the plug: the writer takes it and blocks
	<-gate.entered
	for i := range 250 {
		a.pipe.Emit("test", pipeline.Entry{Env: env0(i), Type: "t"})
	}
	close(gate.release)
	lines := r.waitLines(t, 101)
	if lines[0] != string(env0(-1)) || lines[1] != string(env0(150)) || lines[100] != string(env0(249)) {
		t.Errorf("delivered %s, %s ... %s; want e-1, e150 ... e249 (the 150 oldest dropped)", lines[0], lines[1], lines[100])
	}
	rep := a.Report()
	if rep.Dropped["ring"]["ring_full"] != 150 {
		t.Errorf("ring_full = %d, want 150", rep.Dropped["ring"]["ring_full"])
	}
	s := rep.Sinks["stdout"]
	if !s.Balanced || s.Received != 101 || s.Delivered+s.Pending != 101 {
		t.Errorf("sink %+v", s)
	}
	if got := rep.Received["test"]; got != 251 || got != rep.Dropped["ring"]["ring_full"]+s.Received {
		t.Errorf("received %d != ring drops %d + stored %d", got, rep.Dropped["ring"]["ring_full"], s.Received)
	}
}
