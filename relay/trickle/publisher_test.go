package trickle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/envelope"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

func TestPublisherOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		opts   PublisherOptions
		fields []string // every field the error must name; none means valid
	}{
		{name: "minimal", opts: PublisherOptions{URL: "https://orch:8935/ai/trickle/abc-events"}},
		{name: "trailing slash", opts: PublisherOptions{URL: "http://h/ai/trickle/abc/"}},
		{name: "missing URL", opts: PublisherOptions{}, fields: []string{"URL"}},
		{
			name: "everything wrong",
			opts: PublisherOptions{
				URL: "ftp://h/c?x=1", Framing: "lines", SegmentInterval: -1, SegmentMaxBytes: -1,
				KeepAlive: -time.Second, RequestTimeout: -time.Second,
			},
			fields: []string{"URL: scheme", "URL: a channel URL takes no query", "Framing", "SegmentInterval", "SegmentMaxBytes", "KeepAlive", "RequestTimeout"},
		},
		{name: "no channel", opts: PublisherOptions{URL: "http://h/"}, fields: []string{"URL: no channel"}},
		{name: "no host", opts: PublisherOptions{URL: "http:///c"}, fields: []string{"URL: no host"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if len(tt.fields) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, f := range tt.fields {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("error %q does not name %q", err, f)
				}
			}
			if _, err := NewPublisher(tt.opts); err == nil {
				t.Error("NewPublisher accepted invalid options")
			}
		})
	}
}

// pipeOpts are publisher options against an in-memory fake server, for
// tests inside a synctest bubble.
func pipeOpts(srv *trickletest.Server, name string) PublisherOptions {
	return PublisherOptions{URL: srv.ChannelURL(name), DialContext: srv.DialContext, Wrap: true}
}

// advanceTo posts empty segments until the channel's next write is n.
func advanceTo(t *testing.T, srv *trickletest.Server, name string, n int) {
	t.Helper()
	tr := &http.Transport{DialContext: srv.DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	for i := range n {
		resp, err := c.Post(srv.ChannelURL(name)+"/"+strconv.Itoa(i), "application/jsonl", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
}

func TestPublisherStartPosition(t *testing.T) {
	tests := []struct {
		name     string
		opts     trickletest.Options
		advance  int
		wantGets []string // the seq elements of the GETs before the first POST
		wantSeq  string
	}{
		{name: "next", advance: 7, wantGets: []string{"next"}, wantSeq: "7"},
		{name: "legacy 470 probe", opts: trickletest.Options{Legacy: true}, advance: 7, wantGets: []string{"next", strconv.Itoa(probeSeq)}, wantSeq: "7"},
		{name: "unknown channel, autocreate", opts: trickletest.Options{AutoCreate: true}, advance: -1, wantGets: []string{"next"}, wantSeq: "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tt.opts.InMemory = true
				srv := newFake(t, tt.opts)
				if tt.advance >= 0 {
					srv.CreateChannel("ch")
					advanceTo(t, srv, "ch", tt.advance)
				}
				before := len(srv.Requests())
				cur := newSpool(t)
				env := testEnvelope(0)
				cur.append(t, env)
				_, run := startPublisher(t, pipeOpts(srv, "ch"), cur)
				cur.waitAcked(t, t.Context(), 1)
				run.stop()

				log := srv.Requests()[before:]
				var gets []string
				for _, r := range log {
					if r.Method == http.MethodPost {
						break
					}
					gets = append(gets, r.Seq)
				}
				if strings.Join(gets, ",") != strings.Join(tt.wantGets, ",") {
					t.Fatalf("requests before the first POST: %v, want %v", gets, tt.wantGets)
				}
				first := postsOf(log)[0]
				if first.Seq != tt.wantSeq || first.Status != http.StatusOK {
					t.Fatalf("first POST %+v, want seq %s answered 200", first, tt.wantSeq)
				}
				if !tt.opts.Legacy && !first.Reset {
					t.Fatal("first POST without Lp-Trickle-Reset")
				}
				seq, _ := strconv.Atoi(tt.wantSeq)
				got := srv.Received("ch")[seq]
				if want := string(envelope.WrapTelemetry(nil, env)) + "\n"; string(got) != want {
					t.Fatalf("segment %d = %q, want %q", seq, got, want)
				}
			})
		})
	}
}

// Both framings, read back as their readers read them: jsonl as a
// JSON-lines reader does, gateway framing as go-livepeer's gateway does (one
// {queue_event_type, event} document per segment), its envelopes gathered
// by family and its segments paced.
func TestPublisherFramings(t *testing.T) {
	for _, framing := range []string{FramingJSONL, FramingGateway} {
		t.Run(framing, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newFake(t, trickletest.Options{InMemory: true, KeepSegments: 1000})
				srv.CreateChannel("ch")
				cur := newSpool(t)
				opts := pipeOpts(srv, "ch")
				opts.Framing = framing
				p, run := startPublisher(t, opts, cur)
				// Bursts over 3.5 s, so segments close on the 1 s interval;
				// two families, as a sampler tick's GPUs and host network.
				var envs [][]byte
				for burst := range 7 {
					batch := envelopes(10)
					for i := range 3 {
						batch[i] = bytes.Replace(batch[i], []byte(`"type":"gpu_memory_sample"`), []byte(`"type":"host_network_sample"`), 1)
					}
					envs = append(envs, batch...)
					cur.append(t, batch...)
					if burst < 6 {
						time.Sleep(500 * time.Millisecond)
					}
				}
				cur.waitAcked(t, t.Context(), uint64(len(envs)))
				run.stop()

				segs := srv.Received("ch")
				// The type says what a segment holds: lines, or one document.
				wantType := map[string]string{FramingJSONL: "application/jsonl", FramingGateway: "application/json"}[framing]
				for _, r := range postsOf(srv.Requests()) {
					if r.Type != wantType {
						t.Fatalf("POST seq %s: Content-Type %q, want %q", r.Seq, r.Type, wantType)
					}
				}
				var got [][]byte
				switch framing {
				case FramingJSONL:
					for _, f := range readLines(t, segs) {
						if f.Type != envelope.FrameTelemetry {
							t.Fatalf("frame type %q", f.Type)
						}
						got = append(got, f.Event)
					}
					if len(segs) < 3 || len(segs) > 6 {
						t.Fatalf("%d jsonl segments over 3.5 s with a 1 s interval", len(segs))
					}
				case FramingGateway:
					for _, seq := range sortedSeqs(segs) {
						var w struct {
							QueueEventType string `json:"queue_event_type"`
							Event          struct {
								Type      string            `json:"type"`
								Envelopes []json.RawMessage `json:"envelopes"`
							} `json:"event"`
						}
						if err := json.Unmarshal(segs[seq], &w); err != nil {
							t.Fatalf("segment %d is not one JSON document: %v", seq, err)
						}
						if w.QueueEventType != envelope.QueueEventType || len(w.Event.Envelopes) == 0 {
							t.Fatalf("segment %d: %s", seq, segs[seq])
						}
						for _, e := range w.Event.Envelopes {
							if typ, _ := envelope.TypeOf(e); typ != w.Event.Type {
								t.Fatalf("segment %d of family %s holds a %s", seq, w.Event.Type, typ)
							}
							got = append(got, e)
						}
					}
					// Two families a batch: far fewer segments than envelopes.
					if len(segs) > 10 {
						t.Fatalf("%d gateway segments for %d envelopes in 2 families", len(segs), len(envs))
					}
				}
				if len(got) != len(envs) {
					t.Fatalf("%d envelopes back, want %d", len(got), len(envs))
				}
				want := map[string]bool{}
				for _, e := range envs {
					want[string(e)] = true
				}
				for _, e := range got {
					if !want[string(e)] {
						t.Fatalf("envelope %s was not sent, or changed", e)
					}
					delete(want, string(e))
				}
				st := p.Stats().Snapshot()
				if st.Delivered != uint64(len(envs)) || cur.pending(t) != 0 {
					t.Fatalf("delivered %d, pending %d", st.Delivered, cur.pending(t))
				}
				checkNoRePost(t, srv.Requests())
			})
		})
	}
}

// Gateway segments are never closer than Pace, however large the backlog.
func TestPublisherGatewayPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true, KeepSegments: 1000})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		opts := pipeOpts(srv, "ch")
		opts.Framing = FramingGateway
		opts.SegmentMaxBytes = 4096 // a backlog of many segments
		_, run := startPublisher(t, opts, cur)
		cur.append(t, envelopes(200)...)
		began := time.Now()
		cur.waitAcked(t, t.Context(), 200)
		took := time.Since(began)
		run.stop()
		n := len(srv.Received("ch"))
		if n < 10 {
			t.Fatalf("%d segments: the backlog did not need many", n)
		}
		// n segments, Pace apart.
		if min := time.Duration(n-1) * DefaultGatewayPace; took < min {
			t.Fatalf("%d segments in %s: closer than %s apart", n, took, DefaultGatewayPace)
		}
	})
}

func TestPublisherRotatesAtMaxBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true, KeepSegments: 1000})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		opts := pipeOpts(srv, "ch")
		opts.SegmentMaxBytes = 2000
		opts.SegmentInterval = time.Hour
		big := append(testEnvelope(0)[:0:0], `{"id":"big","type":"t","timestamp":"1","data":{"pad":"`+strings.Repeat("x", 3000)+`"}}`...)
		envs := append(envelopes(40), big)
		cur.append(t, envs...)
		p, _ := startPublisher(t, opts, cur)
		cur.waitAcked(t, t.Context(), uint64(len(envs)))

		segs := srv.Received("ch")
		for seq, body := range segs {
			if len(body) > 2000 && bytes.Count(body, []byte("\n")) > 1 {
				t.Fatalf("segment %d has %d bytes in %d frames", seq, len(body), bytes.Count(body, []byte("\n")))
			}
		}
		// A frame larger than a segment cannot be sent: it is dropped and
		// counted (the agent refuses such events at ingest).
		if frames := readLines(t, segs); len(frames) != len(envs)-1 {
			t.Fatalf("%d frames back, want the %d that fit", len(frames), len(envs)-1)
		}
		if st := p.Stats().Snapshot(); st.Dropped[relay.DropOversize] != 1 {
			t.Fatalf("dropped %v, want 1 oversize", st.Dropped)
		}
	})
}

// A segment cut after some of its bytes left: the publisher DELETEs that
// seq and re-sends its envelopes in the next one; nothing is lost and no seq
// is POSTed twice.
func TestPublisherCutSegmentResentInNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		p, _ := startPublisher(t, pipeOpts(srv, "ch"), cur)
		synctest.Wait() // started: GET /next done

		srv.CutPost("ch", 300)
		envs := envelopes(20)
		cur.append(t, envs...)
		cur.waitAcked(t, t.Context(), uint64(len(envs)))

		log := srv.Requests()
		checkNoRePost(t, log)
		var cut, deleted, resent bool
		for _, r := range log {
			switch {
			case r.Method == http.MethodPost && r.Cut:
				cut = r.Seq == "0" && r.Bytes >= 300
			case r.Method == http.MethodDelete:
				deleted = cut && r.Seq == "0" && r.Status == http.StatusOK
			case r.Method == http.MethodPost && r.Status == http.StatusOK:
				resent = deleted && r.Seq == "1"
			}
		}
		if !cut || !deleted || !resent {
			t.Fatalf("want POST 0 cut, DELETE 0, POST 1 answered 200; log: %+v", log)
		}
		frames := readLines(t, srv.Received("ch"))
		if len(frames) != len(envs) {
			t.Fatalf("%d frames received, want %d", len(frames), len(envs))
		}
		for i, f := range frames {
			if !bytes.Equal(f.Event, envs[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
		st := p.Stats().Snapshot()
		if st.Retries["transient"] != 1 || st.Delivered != uint64(len(envs)) {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A POST that fails before any byte of it left is retried under the same
// seq, after backoff; nothing is DELETEd.
func TestPublisherRetriesSameSeqWhenNothingSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		d := &flakyDialer{dial: srv.DialContext}
		opts := pipeOpts(srv, "ch")
		opts.DialContext = d.DialContext
		p, _ := startPublisher(t, opts, cur)
		synctest.Wait()
		d.breakNext(2)
		synctest.Wait() // the transport sees its idle connection closed
		began := time.Now()
		cur.append(t, testEnvelope(0))
		cur.waitAcked(t, t.Context(), 1)

		// Backoff: 1 s ± 50%, then 2 s ± 50%; then the segment is acked
		// when it closes, 1 s after it opened.
		if took := time.Since(began); took < 2500*time.Millisecond || took > 5500*time.Millisecond {
			t.Fatalf("two retries took %s", took)
		}
		posts := postsOf(srv.Requests())
		if len(posts) != 1 || posts[0].Seq != "0" || posts[0].Status != http.StatusOK {
			t.Fatalf("POSTs %+v, want seq 0 once", posts)
		}
		for _, r := range srv.Requests() {
			if r.Method == http.MethodDelete {
				t.Fatalf("DELETE after a failure with nothing sent: %+v", r)
			}
		}
		st := p.Stats().Snapshot()
		if st.Requests["error"] != 2 || st.Retries["transient"] != 2 || st.Delivered != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A server restart loses the channel: the next POST gets 404 and the
// publisher stops with relay.ErrClosed, keeping the unsent records.
func TestPublisherServerRestartEndsChannel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		p, run := startPublisher(t, pipeOpts(srv, "ch"), cur)
		cur.append(t, envelopes(5)...)
		cur.waitAcked(t, t.Context(), 5)

		srv.Restart()
		cur.append(t, envelopes(3)...)
		if err := run.wait(t, t.Context()); !errors.Is(err, relay.ErrClosed) {
			t.Fatalf("Run = %v, want relay.ErrClosed", err)
		}
		st := p.Stats().Snapshot()
		if st.Requests["404"] == 0 || st.Delivered != 5 {
			t.Fatalf("stats %+v", st)
		}
		if n := cur.pending(t); n != 3 {
			t.Fatalf("%d records pending, want the 3 unsent", n)
		}
	})
}

// Lp-Trickle-Closed on an open segment's POST, or 404 on the next one,
// stops the publisher at once: it does not spin.
func TestPublisherStopsOnClosedChannel(t *testing.T) {
	for _, when := range []string{"segment open", "idle"} {
		t.Run(when, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newFake(t, trickletest.Options{InMemory: true})
				srv.CreateChannel("ch")
				cur := newSpool(t)
				opts := pipeOpts(srv, "ch")
				opts.SegmentInterval = 10 * time.Second
				_, run := startPublisher(t, opts, cur)
				cur.append(t, testEnvelope(0))
				if when == "idle" {
					cur.waitAcked(t, t.Context(), 1)
				}
				synctest.Wait()
				before := len(srv.Requests())
				srv.CloseChannel("ch")
				if when == "idle" {
					cur.append(t, testEnvelope(1))
				}
				began := time.Now()
				if err := run.wait(t, t.Context()); !errors.Is(err, relay.ErrClosed) {
					t.Fatalf("Run = %v, want relay.ErrClosed", err)
				}
				// The partial segment waits its interval, then its POST
				// meets the 404.
				if took := time.Since(began); took > opts.SegmentInterval {
					t.Fatalf("stopping took %s of virtual time", took)
				}
				// At most the GET /next that finds the channel gone (the
				// position is learned with the first segment) and the POST
				// that the 404 ends.
				after := srv.Requests()[before:]
				if len(after) > 2 {
					t.Fatalf("%d requests after the close: %+v", len(after), after)
				}
			})
		})
	}
}

// With nothing to send, a keep-alive segment goes every KeepAlive: one
// frame of the status envelope that every reader parses, never an empty
// segment (which ends the Python ChannelReader).
func TestPublisherKeepAlive(t *testing.T) {
	status := []byte(`{"id":"ka","type":"agent_status","timestamp":"1","gateway":"","data":{"reason":"keepalive"}}`)
	for _, framing := range []string{FramingJSONL, FramingGateway} {
		t.Run(framing, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newFake(t, trickletest.Options{InMemory: true})
				srv.CreateChannel("ch")
				cur := newSpool(t)
				opts := pipeOpts(srv, "ch")
				opts.Framing = framing
				opts.KeepAliveEvent = func() []byte { return status }
				p, _ := startPublisher(t, opts, cur)
				time.Sleep(35 * time.Second)
				synctest.Wait()
				posts := postsOf(srv.Requests())
				if len(posts) != 3 {
					t.Fatalf("%d POSTs in 35 s, want 3 keep-alives: %+v", len(posts), posts)
				}
				for i, r := range posts {
					if r.Seq != strconv.Itoa(i) || r.Status != http.StatusOK {
						t.Fatalf("keep-alive %d: %+v", i, r)
					}
				}
				// Every reader parses a keep-alive: never an empty segment.
				for seq, body := range srv.Received("ch") {
					var env []byte
					if framing == FramingGateway {
						envs, ok := envelope.ParseGatewayFrame(body)
						if !ok || len(envs) != 1 {
							t.Fatalf("keep-alive %d is not a gateway document: %q", seq, body)
						}
						env = envs[0]
					} else {
						typ, ev, err := envelope.ParseFrame(body)
						if err != nil || typ != envelope.FrameTelemetry {
							t.Fatalf("keep-alive %d is not a telemetry frame: %q (%v)", seq, body, err)
						}
						env = ev
					}
					if !bytes.Equal(env, status) {
						t.Fatalf("keep-alive %d carries %s, want the status envelope", seq, env)
					}
				}
				if st := p.Stats().Snapshot(); st.LastSuccess.IsZero() || st.Delivered != 0 {
					t.Fatalf("stats %+v", st)
				}
				cur.append(t, testEnvelope(0))
				cur.waitAcked(t, t.Context(), 1)
				if last := postsOf(srv.Requests())[3]; last.Seq != "3" || last.Bytes == 0 {
					t.Fatalf("first data segment %+v, want seq 3", last)
				}
			})
		})
	}
}

// A draining forwarder (shutdown, session detach) sends a partial jsonl
// segment at once instead of lingering for its interval.
func TestPublisherDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		opts := pipeOpts(srv, "ch")
		opts.SegmentInterval = time.Hour
		opts.KeepAlive = 2 * time.Hour
		_, f := newPublisher(t, opts, cur)
		start(t, f.Run)
		cur.append(t, envelopes(3)...)
		synctest.Wait()
		if len(srv.Received("ch")) != 0 {
			t.Fatal("segment completed before its interval")
		}
		began := time.Now()
		f.Drain()
		cur.waitAcked(t, t.Context(), 3)
		if time.Since(began) != 0 || cur.pending(t) != 0 || len(readLines(t, srv.Received("ch"))) != 3 {
			t.Fatalf("after Drain: pending %d, received %v", cur.pending(t), srv.Received("ch"))
		}
	})
}

// TLS verification is on unless Insecure; the fake presents a self-signed
// certificate. (Over loopback TCP: TLS alerts on synchronous net.Pipe
// connections can block both ends.)
func TestPublisherTLS(t *testing.T) {
	srv := newFake(t, trickletest.Options{TLS: true})
	srv.CreateChannel("ch")
	cur := newSpool(t)
	cur.append(t, testEnvelope(0))

	dials := make(chan struct{}, 10)
	opts := PublisherOptions{
		URL:  srv.ChannelURL("ch"),
		Wrap: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			select {
			case dials <- struct{}{}:
			default:
			}
			return srv.DialContext(ctx, network, addr)
		},
	}
	fast := func(f *relay.Forwarder) { f.NewBackOff = fastBackOff }
	p, run := startPublisher(t, opts, cur, fast)
	<-dials
	<-dials // a second dial: the first attempt failed and was retried
	run.stop()
	if n := len(srv.Requests()); n != 0 || cur.pending(t) != 1 {
		t.Fatalf("verifying publisher reached the server (%d requests) with a self-signed certificate", n)
	}
	if st := p.Stats().Snapshot(); st.Requests["error"] == 0 {
		t.Fatalf("stats %+v", st)
	}

	opts.Insecure = true
	opts.Stats = nil
	startPublisher(t, opts, cur, fast)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	cur.waitAcked(t, ctx, 1)
}

// Records that cannot be one frame line are dropped and counted; a record
// spanning lines is compacted; Wrap off sends records verbatim.
func TestPublisherRecordsToLines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		opts := pipeOpts(srv, "ch")
		opts.Wrap = false
		p, _ := startPublisher(t, opts, cur)
		recs := [][]byte{
			[]byte(`{"type":"runner_ready","event":{"pipeline":"live"}}`),
			[]byte(""),
			[]byte("{\n  \"type\": \"logs\",\n  \"event\": {\"line\": \"a\\nb\"}\n}"),
			[]byte("{\nnot json"),
			envelope.WrapTelemetry(nil, testEnvelope(1)),
		}
		cur.append(t, recs...)
		cur.waitAcked(t, t.Context(), uint64(len(recs)))
		got := string(srv.Received("ch")[0])
		want := string(recs[0]) + "\n" + `{"type":"logs","event":{"line":"a\nb"}}` + "\n" + string(recs[4]) + "\n"
		if got != want {
			t.Fatalf("segment:\n%s\nwant:\n%s", got, want)
		}
		st := p.Stats().Snapshot()
		if st.Delivered != 3 || st.Dropped[relay.DropRejected] != 2 || cur.pending(t) != 0 {
			t.Fatalf("stats %+v, pending %d", st, cur.pending(t))
		}
	})
}

func TestPublisherDeleteChannel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		p, err := NewPublisher(pipeOpts(srv, "ch"))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.DeleteChannel(t.Context()); err != nil {
			t.Fatal(err)
		}
		if _, ok := srv.Next("ch"); ok {
			t.Fatal("channel still there")
		}
		if err := p.DeleteChannel(t.Context()); err != nil {
			t.Fatalf("second delete: %v", err)
		}
	})
}

// TestStatusErrorThrottles: a 429, or a 503 with Retry-After, reaches the
// forwarder as throttling with the server's wait (relay.Classify then waits
// exactly that, as for every sink); any other answer is a plain transient
// error.
func TestStatusErrorThrottles(t *testing.T) {
	for _, tc := range []struct {
		code      int
		ra        string
		throttled bool
		wait      time.Duration
	}{
		{http.StatusTooManyRequests, "2", true, 2 * time.Second},
		{http.StatusTooManyRequests, "", true, 0},
		{http.StatusServiceUnavailable, "7", true, 7 * time.Second},
		{http.StatusServiceUnavailable, "", false, 0},
		{http.StatusInternalServerError, "3", false, 0},
	} {
		h := http.Header{}
		if tc.ra != "" {
			h.Set("Retry-After", tc.ra)
		}
		err := statusError("POST seq 4", tc.code, h)
		var te *relay.ThrottledError
		if got := errors.As(err, &te); got != tc.throttled {
			t.Errorf("%d Retry-After %q: throttled %v, want %v (%v)", tc.code, tc.ra, got, tc.throttled, err)
			continue
		}
		if tc.throttled && te.RetryAfter != tc.wait {
			t.Errorf("%d Retry-After %q: wait %s, want %s", tc.code, tc.ra, te.RetryAfter, tc.wait)
		}
		if !strings.Contains(err.Error(), strconv.Itoa(tc.code)) {
			t.Errorf("%d: the error does not name the status: %v", tc.code, err)
		}
	}
}

// A throttled segment POST (429 with Retry-After, from a proxy in front of
// the server) is sent again after exactly the wait the answer asks, however
// many came in a row: the forwarder's own backoff (30 s here) is not used.
func TestPublisherHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newFake(t, trickletest.Options{InMemory: true})
		srv.CreateChannel("ch")
		cur := newSpool(t)
		p, _ := startPublisher(t, pipeOpts(srv, "ch"), cur, func(f *relay.Forwarder) {
			f.NewBackOff = func() backoff.BackOff { return backoff.NewConstantBackOff(30 * time.Second) }
		})
		synctest.Wait()
		srv.ThrottlePosts(4, "2")
		began := time.Now()
		cur.append(t, testEnvelope(0))
		cur.waitAcked(t, t.Context(), 1)
		// The segment's interval (1 s), then 4 waits of 2 s; the position is
		// learned again before each try, which takes no virtual time.
		if took := time.Since(began); took < 8*time.Second || took > 10*time.Second {
			t.Fatalf("four throttled POSTs, then delivery, took %s; want 4 × 2 s plus the segment's 1 s", took)
		}
		st := p.Stats().Snapshot()
		if st.Requests["429"] != 4 || st.Retries["throttled"] != 4 || st.Delivered != 1 {
			t.Fatalf("stats %+v", st)
		}
		posts := postsOf(srv.Requests())
		if last := posts[len(posts)-1]; last.Status != http.StatusOK {
			t.Fatalf("last POST %+v", last)
		}
	})
}
