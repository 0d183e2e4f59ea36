package trickle

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/envelope"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

// collector is an OnEnvelope that keeps what it gets; gate, when set, makes
// each call wait for a value.
type collector struct {
	gate chan struct{}

	mu   sync.Mutex
	envs [][]byte
	wake chan struct{}
}

func newCollector() *collector { return &collector{wake: make(chan struct{})} }

func (c *collector) on(env []byte, _ envelope.Checked) {
	if c.gate != nil {
		<-c.gate
	}
	c.mu.Lock()
	c.envs = append(c.envs, env)
	close(c.wake)
	c.wake = make(chan struct{})
	c.mu.Unlock()
}

func (c *collector) got() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.envs)
}

func (c *collector) waitN(t testing.TB, ctx context.Context, n int) [][]byte {
	t.Helper()
	for {
		c.mu.Lock()
		have, wake := len(c.envs), c.wake
		c.mu.Unlock()
		if have >= n {
			return c.got()
		}
		select {
		case <-wake:
		case <-ctx.Done():
			t.Fatalf("%d envelopes relayed, want %d", have, n)
		}
	}
}

var relayTime = time.UnixMilli(1767908999999)

func subOpts(srv *trickletest.Server, name string, c *collector) SubscriberOptions {
	return SubscriberOptions{
		URL:         srv.ChannelURL(name),
		DialContext: srv.DialContext,
		OnEnvelope:  c.on,
		Now:         func() time.Time { return relayTime },
	}
}

func startSubscriber(t testing.TB, opts SubscriberOptions) (*Subscriber, *running) {
	t.Helper()
	s, err := NewSubscriber(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s, start(t, s.Run)
}

// writer posts segments to the fake server as a test's publisher.
type writer struct {
	t   testing.TB
	srv *trickletest.Server
	c   *http.Client
	url string
}

func newWriter(t testing.TB, srv *trickletest.Server, name string) *writer {
	tr := &http.Transport{DialContext: srv.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &writer{t: t, srv: srv, c: &http.Client{Transport: tr}, url: srv.ChannelURL(name)}
}

func (w *writer) post(seq int, body string) {
	w.t.Helper()
	resp, err := w.c.Post(w.url+"/"+strconv.Itoa(seq), "application/jsonl", strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.t.Fatalf("POST %d: %s", seq, resp.Status)
	}
}

func line(env []byte) string { return string(envelope.WrapTelemetry(nil, env)) + "\n" }

func TestSubscriberOptionsValidate(t *testing.T) {
	err := SubscriberOptions{URL: "x://", IdleTimeout: -1, MaxFrameBytes: -1}.Validate()
	for _, f := range []string{"URL", "OnEnvelope", "IdleTimeout", "MaxFrameBytes"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("error %v does not name %s", err, f)
		}
	}
	if err := (SubscriberOptions{URL: "https://o/ai/trickle/c", OnEnvelope: func([]byte, envelope.Checked) {}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// Both framings and their variants; other frame types counted and ignored;
// malformed frames counted by reason without stopping.
func TestSubscriberFrames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The writer may run ahead of the reader: keep every segment.
		srv := newFake(t, trickletest.Options{InMemory: true, KeepSegments: 100})
		srv.CreateChannel("ch")
		c := newCollector()
		opts := subOpts(srv, "ch", c)
		opts.MaxFrameBytes = 2048
		s, _ := startSubscriber(t, opts)
		if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
			t.Fatal(err)
		}
		envs := envelopes(7)
		w := newWriter(t, srv, "ch")
		badID := strings.Replace(string(envs[0]), `"id":"`, `"id":5,"x":"`, 1)
		w.post(0, line(envs[0])+`{"type":"runner_ready","event":{"ok":true}}`+"\n\n\r\nnot json\n"+
			`{"type":"telemetry","event":`+badID+"}\n"+`{"type":"logs","event":{"x":1}}`+"\n"+line(envs[1]))
		w.post(1, line(envs[2]))                                                          // segment framing
		w.post(2, strings.TrimSuffix(line(envs[3]), "\n"))                                // one document, no newline
		w.post(3, "{\n  \"type\": \"telemetry\",\n  \"event\": "+string(envs[4])+"\n}\n") // pretty-printed
		w.post(4, line(envs[5])+`{"type":"telemetry","event":{"id":"cut`)                 // truncated last frame
		w.post(5, `{"type":"telemetry","event":{"pad":"`+strings.Repeat("x", 3000)+"\"}}\n"+line(envs[6]))
		w.post(6, line(envs[0])) // a duplicate
		synctest.Wait()

		got := c.got()
		if len(got) != len(envs) {
			t.Fatalf("%d envelopes relayed, want %d; stats %+v; log %+v", len(got), len(envs), s.Stats(), srv.Requests())
		}
		for i := range envs {
			want, _, err := envelope.AnnotateRelay(envs[i], relayTime)
			if err != nil || !bytes.Equal(got[i], want) {
				t.Fatalf("envelope %d relayed as\n%s\nwant\n%s (%v)", i, got[i], want, err)
			}
		}
		st := s.Stats()
		wantMalformed := map[string]uint64{"frame": 1, "event.id": 1, MalformedTruncated: 1, MalformedOversize: 1}
		wantFrames := map[string]uint64{envelope.FrameTelemetry: 9, "runner_ready": 1, "logs": 1}
		if !mapsEqual(st.Malformed, wantMalformed) || !mapsEqual(st.Frames, wantFrames) ||
			st.Relayed != 7 || st.Duplicates != 1 || st.Segments != 7 || st.Jumps != 0 || st.Reconnects != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A reader more than KeepSegments behind gets 470 and jumps to
// Lp-Trickle-Latest.
func TestSubscriberJumpsOn470(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newCollector()
		c.gate = make(chan struct{})
		var logs bytes.Buffer // read after synctest.Wait: the bubble is idle
		opts := subOpts(srv, "ch", c)
		opts.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		s, _ := startSubscriber(t, opts)
		if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
			t.Fatal(err)
		}
		envs := envelopes(10)
		w := newWriter(t, srv, "ch")
		w.post(0, line(envs[0]))
		synctest.Wait() // the subscriber is stuck in OnEnvelope
		for seq := 1; seq <= 8; seq++ {
			w.post(seq, line(envs[seq]))
		}
		close(c.gate)
		synctest.Wait() // 470 for seq 1: jumped to 9, waiting there
		w.post(9, line(envs[9]))
		got := c.waitN(t, t.Context(), 2)
		for i, want := range [][]byte{envs[0], envs[9]} {
			if want, _, _ = envelope.AnnotateRelay(want, relayTime); !bytes.Equal(got[i], want) {
				t.Fatalf("relayed %s, want %s", got[i], want)
			}
		}
		synctest.Wait() // Relayed is counted once OnEnvelope returns
		if st := s.Stats(); st.Jumps != 1 || st.Skipped != 8 || st.Requests["470"] != 1 || st.Relayed != 2 {
			t.Fatalf("stats %+v", st)
		}
		// The loss is said once, naming the channel and the seq range.
		for _, want := range []string{"level=WARN", "trickle reader fell behind; segments skipped are lost",
			"channel=" + srv.ChannelURL("ch"), "from_seq=1", "to_seq=9", "skipped=8"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logs.String())
			}
		}
	})
}

// 404 (server restart) and Lp-Trickle-Closed end the subscriber; it does
// not spin.
func TestSubscriberEnds(t *testing.T) {
	for _, how := range []string{"closed", "restart"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newFake(t, trickletest.Options{InMemory: true})
				srv.CreateChannel("ch")
				c := newCollector()
				s, run := startSubscriber(t, subOpts(srv, "ch", c))
				if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
					t.Fatal(err)
				}
				newWriter(t, srv, "ch").post(0, line(testEnvelope(0)))
				c.waitN(t, t.Context(), 1)
				synctest.Wait()
				before := len(srv.Requests())
				began := time.Now()
				want := EndedClosed
				if how == "closed" {
					srv.CloseChannel("ch")
				} else {
					srv.Restart()
					want = EndedNotFound
				}
				if err := run.wait(t, t.Context()); !errors.Is(err, relay.ErrClosed) {
					t.Fatalf("Run = %v, want relay.ErrClosed", err)
				}
				st := s.Stats()
				if st.Ended != want {
					t.Fatalf("Ended = %q, want %q", st.Ended, want)
				}
				// Restart cuts the waiting GET: one reconnect after backoff
				// (at most 1.5 s), answered 404.
				if took := time.Since(began); took > 1500*time.Millisecond {
					t.Fatalf("ending took %s", took)
				}
				if after := len(srv.Requests()) - before; after > 2 || st.Reconnects > 1 {
					t.Fatalf("%d requests after the end, stats %+v", after, st)
				}
			})
		})
	}
}

// A GET cut mid-segment reconnects after backoff and resumes the segment
// where it stopped: with de-duplication off, nothing is seen twice.
func TestSubscriberResumesCutSegment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newCollector()
		opts := subOpts(srv, "ch", c)
		opts.DedupeWindow = -1
		s, _ := startSubscriber(t, opts)
		if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
			t.Fatal(err)
		}
		envs := envelopes(4)
		w := newWriter(t, srv, "ch")
		pr, pw := io.Pipe()
		var wg sync.WaitGroup
		defer wg.Wait()
		defer pw.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := w.c.Post(w.url+"/0", "application/jsonl", pr)
			if err == nil {
				resp.Body.Close()
			}
		}()
		third := line(envs[2])
		pw.Write([]byte(line(envs[0]) + line(envs[1]) + third[:40]))
		c.waitN(t, t.Context(), 2)
		synctest.Wait()
		if n := srv.CutReaders("ch"); n != 1 {
			t.Fatalf("cut %d readers", n)
		}
		synctest.Wait() // the subscriber saw the cut and backs off
		began := time.Now()
		if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(began); took < 500*time.Millisecond || took > 1500*time.Millisecond {
			t.Fatalf("reconnected after %s, want the 1 s ± 50%% backoff", took)
		}
		pw.Write([]byte(third[40:] + line(envs[3])))
		pw.Close()
		got := c.waitN(t, t.Context(), 4)
		synctest.Wait()
		if len(c.got()) != 4 {
			t.Fatalf("%d envelopes, want 4", len(c.got()))
		}
		for i := range envs {
			want, _, err := envelope.AnnotateRelay(envs[i], relayTime)
			if err != nil || !bytes.Equal(got[i], want) {
				t.Fatalf("envelope %d relayed as\n%s\nwant\n%s (%v)", i, got[i], want, err)
			}
		}
		if st := s.Stats(); st.Reconnects != 1 || st.MalformedTotal() != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A GET that brings nothing for IdleTimeout is abandoned and asked again.
func TestSubscriberIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newCollector()
		opts := subOpts(srv, "ch", c)
		opts.IdleTimeout = 5 * time.Second
		s, _ := startSubscriber(t, opts)
		time.Sleep(7 * time.Second)
		synctest.Wait()
		if st := s.Stats(); st.Reconnects != 1 {
			t.Fatalf("stats %+v", st)
		}
		env := testEnvelope(0)
		newWriter(t, srv, "ch").post(0, line(env))
		want, _, _ := envelope.AnnotateRelay(env, relayTime)
		if got := c.waitN(t, t.Context(), 1)[0]; !bytes.Equal(got, want) {
			t.Fatalf("relayed %s, want %s", got, want)
		}
	})
}

// The same after a segment was read: the server answers 200 with no body
// for the abandoned seq and 470 naming it for the next; the reader waits
// (with backoff) for the next seq instead of reading the channel again
// from its oldest segment, round and round.
func TestSubscriberSkipsDeadSeqLater(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newCollector()
		s, _ := startSubscriber(t, subOpts(srv, "ch", c))
		if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
			t.Fatal(err)
		}
		w := newWriter(t, srv, "ch")
		w.post(0, line(testEnvelope(0)))
		c.waitN(t, t.Context(), 1)
		synctest.Wait() // waiting on seq 1
		req, _ := http.NewRequest(http.MethodDelete, w.url+"/1", nil)
		resp, err := w.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE 1: %s", resp.Status)
		}
		// The reader polls seq 2 with backoff. (Without it, it would
		// never block and the bubble's clock would never reach 3 s.)
		time.Sleep(3 * time.Second)
		if next, _ := srv.Next("ch"); next != 1 {
			t.Fatalf("write position %d, want still 1", next)
		}
		if n := len(srv.Requests()); n > 20 { // a few backoff rounds
			t.Fatalf("%d requests in 3 s: the reader spins", n)
		}
		env := testEnvelope(1)
		w.post(2, line(env))
		want, _, _ := envelope.AnnotateRelay(env, relayTime)
		if got := c.waitN(t, t.Context(), 2)[1]; !bytes.Equal(got, want) {
			t.Fatalf("relayed %s, want %s", got, want)
		}
		synctest.Wait() // Relayed is counted once OnEnvelope returns
		if st := s.Stats(); st.Jumps != 0 || st.Relayed != 2 {
			t.Fatalf("stats %+v", st)
		}
	})
}
