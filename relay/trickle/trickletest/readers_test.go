package trickletest

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// startReader runs a reader until the test ends.
func startReader(t *testing.T, srv *Server, kind ReaderKind, name string) *Reader {
	t.Helper()
	r := srv.NewReader(kind, name)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// The gateway reader gives up on an error that follows more than 5 in a
// row: seven 470s (a publisher more than 5 segments ahead, again and
// again) stop it.
func TestGatewayReaderStopsAfterFiveErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newClient(t, srv)
		r := startReader(t, srv, GatewayReader, "ch")
		synctest.Wait() // waiting at the live edge, seq 0
		doc := `{"queue_event_type":"ai_stream_events","event":{"type":"x"}}`
		post(t, c, srv.ChannelURL("ch")+"/0", doc)
		synctest.Wait()
		// Every GET takes 100 ms, so the reader is behind each round
		// whatever the scheduler does (the posts take no virtual time).
		srv.SetLatency(http.MethodGet, 100*time.Millisecond)
		// Each round: 8 segments while the reader pauses 300 ms after the
		// 470 of the previous round.
		for seq := 1; seq < 2000 && r.Stats().Stopped == ""; {
			for range 8 {
				post(t, c, srv.ChannelURL("ch")+"/"+strconv.Itoa(seq), doc)
				seq++
			}
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
		}
		st := r.Stats()
		if !strings.Contains(st.Stopped, "too many errors") || st.MaxInRow != GatewayMaxRetries+2 || st.Jumps == 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// The gateway reader stops a stream that sends no parsable event for 30 s;
// a document it cannot parse does not count as one.
func TestGatewayReaderLiveness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newClient(t, srv)
		r := startReader(t, srv, GatewayReader, "ch")
		synctest.Wait()
		for seq := range 4 {
			post(t, c, srv.ChannelURL("ch")+"/"+strconv.Itoa(seq), "not json")
			time.Sleep(10 * time.Second)
			synctest.Wait()
		}
		if st := r.Stats(); st.Stopped != "timeout waiting for events" || st.Unparsed != 4 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// The python readers end on what the real ones raise on: a segment over
// 1 MiB (JSONL), an empty segment (ChannelReader), a document that is not
// one JSON object.
func TestPythonReadersGiveUp(t *testing.T) {
	for _, tc := range []struct {
		kind ReaderKind
		body string
		want string
	}{
		{JSONLReader, strings.Repeat(`{"a":"`+strings.Repeat("x", 1000)+`"}`+"\n", 1050), "over the reader's"},
		{JSONLReader, "{\"a\":1}\nnot json\n", "JSONL decode failed"},
		{ChannelReader, "", "was empty"},
		{ChannelReader, "{\"a\":1}\n{\"b\":2}\n", "JSON decode failed"},
	} {
		t.Run(tc.kind.String()+"/"+tc.want, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := newServer(t, Options{InMemory: true})
				srv.CreateChannel("ch")
				c := newClient(t, srv)
				r := startReader(t, srv, tc.kind, "ch")
				synctest.Wait()
				wantCode(t, "post", post(t, c, srv.ChannelURL("ch")+"/0", tc.body), http.StatusOK)
				synctest.Wait()
				if st := r.Stats(); !strings.Contains(st.Stopped, tc.want) {
					t.Fatalf("stats %+v, want stopped for %q", st, tc.want)
				}
			})
		})
	}
	// What they take.
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newClient(t, srv)
		j := startReader(t, srv, JSONLReader, "ch")
		synctest.Wait()
		post(t, c, srv.ChannelURL("ch")+"/0", "")
		post(t, c, srv.ChannelURL("ch")+"/1", "{\"a\":1}\n{\"b\":2}\n")
		synctest.Wait()
		if st := j.Stats(); st.Stopped != "" || len(st.Events) != 2 || st.Empty != 1 {
			t.Fatalf("jsonl stats %+v", st)
		}
	})
}
