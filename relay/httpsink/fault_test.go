package httpsink

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// Secrets the sink URL carries in its query and user info: no log line,
// error or stat may show them.
const (
	querySecret = "q-secret-5d1e7a"
	userSecret  = "pw-secret-93bc40"
)

// secretURL is base (http://host:port) with a path, user info and a query
// that carry secrets.
func secretURL(base string) string {
	return strings.Replace(base, "http://", "http://agent:"+userSecret+"@", 1) + "/v1/metrics?api_key=" + querySecret + "&region=eu"
}

// TestHTTPFaults runs the sink behind a relay.Forwarder over a memory spool
// against a loopback metrics API (metricsAPI, the spec's rules) that
// misbehaves one way per row. Each row checks what the API wrote and how
// often, what the sink counted as delivered, dropped (by reason), requested
// (by code) and retried (by class), and what it logged; and in every row
// the secrets of the URL appear in no log line, error or stat.
func TestHTTPFaults(t *testing.T) {
	type row struct {
		name    string
		n       int                 // events, one batch
		second  int                 // events of a second batch, appended once the first settled
		pad     map[int]int         // event index -> payload bytes
		api     func(*metricsAPI)   // the API's limits and misbehaviour
		opts    Options             // sink options (URL, key, logger set by the test)
		timeout time.Duration       // request timeout; 0: 10 s
		backoff time.Duration       // the forwarder's constant backoff; 0: 1 ms
		twice   int                 // leading events the API wrote twice (an answer broke off, the batch went again)
		dropped map[string][]string // reason -> ids of the trailing records the sink reports dropped
		codes   map[string]uint64   // the sink's request counts, exactly
		retries map[string]uint64   // the forwarder's retries, exactly
		logs    []string            // lines that must be in the log
		check   func(t *testing.T, a *metricsAPI)
	}
	first := func(fault wireFault) func(*metricsAPI) {
		return func(a *metricsAPI) {
			a.wire = func(n int) wireFault {
				if n == 0 {
					return fault
				}
				return wireWhole
			}
		}
	}
	rows := []row{
		{
			name: "whole answer", n: 20, api: func(*metricsAPI) {},
			codes: map[string]uint64{"200": 1}, retries: map[string]uint64{},
		},
		{
			name: "200 shorter than its Content-Length", n: 20, api: first(wireShort), twice: 20,
			codes:   map[string]uint64{"error": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "the 200 answer broke off after 17 bytes", "unexpected EOF"},
		},
		{
			// The reset may reach the client before it read the headers (an
			// error from the request) or after (the answer broke off): the
			// same outcome either way.
			name: "200 reset mid-body", n: 20, api: first(wireReset), twice: 20,
			codes:   map[string]uint64{"error": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "connection reset by peer"},
		},
		{
			name: "200 chunked without its last chunk", n: 20, api: first(wireChunkCut), twice: 20,
			codes:   map[string]uint64{"error": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "the 200 answer broke off after 17 bytes", "unexpected EOF"},
		},
		{
			name: "200 delimited by close, cut short", n: 20, api: first(wireCloseCut), twice: 20,
			codes:   map[string]uint64{"error": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "the 200 answer broke off after 17 bytes", "unexpected EOF"},
		},
		{
			name: "200 stalls mid-body past the timeout", n: 20, api: first(wireStall), twice: 20, timeout: time.Second,
			codes:   map[string]uint64{"timeout": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "the 200 answer broke off after 17 bytes"},
		},
		{
			name: "connection closes before any answer", n: 20, api: first(wireNoAnswer), twice: 20,
			codes:   map[string]uint64{"error": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "EOF"},
		},
		{
			name: "fewer accepted than sent", n: 20,
			api: func(a *metricsAPI) {
				a.notAccepted = func(id string) bool { return id == idOf(3) || id == idOf(11) || id == idOf(17) }
			},
			// The answer says 17 of 20 and not which: the last three records
			// carry the count.
			dropped: map[string][]string{DropNotAccepted: {idOf(17), idOf(18), idOf(19)}},
			codes:   map[string]uint64{"200": 1},
			retries: map[string]uint64{},
			logs:    []string{"metrics API accepted fewer events than sent", "sent=20 accepted=17", "first_id=" + idOf(0), "last_id=" + idOf(19)},
		},
		{
			// 40 events of ~1 KB against an API that takes 8,000 bytes: the
			// first batch teaches the limit (413 at ~21 KB and ~10 KB); the
			// second goes out at the learned size without a 413.
			name: "413 limit learned", n: 20, second: 20, pad: padAll(40, 850),
			api:     func(a *metricsAPI) { a.maxBody = 8000 },
			codes:   map[string]uint64{"413": 2, "200": 8},
			retries: map[string]uint64{},
			logs:    []string{"metrics API refused a request body as too large; later requests are cut to the learned limit", "limit_bytes=5"},
			check: func(t *testing.T, a *metricsAPI) {
				reqs := a.requests()
				for i, r := range reqs {
					if i >= 6 && r.code != 200 {
						t.Errorf("request %d of the second batch answered %d: the limit was not learned", i, r.code)
					}
				}
			},
		},
		{
			name: "event alone over the API's limit", n: 6, pad: map[int]int{2: 9000},
			api:     func(a *metricsAPI) { a.maxBody = 8000 },
			dropped: map[string][]string{relay.DropOversize: {idOf(2)}},
			// 413s for [0:6], [0:3], [1:3] (each smaller than the last
			// refused, so each is tried) and [2] alone.
			codes:   map[string]uint64{"413": 4, "200": 3},
			retries: map[string]uint64{},
			logs:    []string{"event dropped: the metrics API refuses it on its own", "id=" + idOf(2), "status=413"},
		},
		{
			name: "event alone over the sink's MaxBody", n: 6, pad: map[int]int{2: 5000}, opts: Options{MaxBody: 4096},
			api:     func(*metricsAPI) {},
			dropped: map[string][]string{relay.DropOversize: {idOf(2)}},
			codes:   map[string]uint64{"200": 2}, // [0:2] and [3:6]
			retries: map[string]uint64{},
			logs:    []string{"event dropped without sending: larger than the request body limit", "id=" + idOf(2)},
		},
		{
			name: "404 once", n: 20,
			api: func(a *metricsAPI) {
				a.override = func(n int, _ time.Time) (int, string) {
					if n == 0 {
						return 404, ""
					}
					return 0, ""
				}
			},
			codes:   map[string]uint64{"404": 1, "200": 2}, // the probe of one event, then the rest
			retries: map[string]uint64{"paused": 1},
			logs:    []string{"metrics API refuses the URL", "sink paused"},
		},
		{
			// Retry-After replaces the backoff after any number of 429s in a
			// row: each retry comes 1 s after the last answer, never at the
			// backoff's 10 s (nor at once).
			name: "429 five times in a row with Retry-After 1", n: 20, backoff: 10 * time.Second,
			api: func(a *metricsAPI) {
				a.override = func(n int, _ time.Time) (int, string) {
					if n < 5 {
						return 429, "1"
					}
					return 0, ""
				}
			},
			codes:   map[string]uint64{"429": 5, "200": 1},
			retries: map[string]uint64{"throttled": 5},
			logs:    []string{"send failed; retrying", "retry_in=1s"},
			check: func(t *testing.T, a *metricsAPI) {
				reqs := a.requests()
				for i := 1; i < len(reqs); i++ {
					// At least the second asked for (less the answer's way
					// back); well under the backoff's 10 s, however slow the
					// machine.
					if gap := reqs[i].at.Sub(reqs[i-1].at); gap < 950*time.Millisecond || gap > 5*time.Second {
						t.Errorf("request %d came %s after the 429 before it, want 1 s", i, gap)
					}
				}
			},
		},
		{
			name: "503 once", n: 20,
			api: func(a *metricsAPI) {
				a.override = func(n int, _ time.Time) (int, string) {
					if n == 0 {
						return 503, ""
					}
					return 0, ""
				}
			},
			codes:   map[string]uint64{"503": 1, "200": 1},
			retries: map[string]uint64{"transient": 1},
			logs:    []string{"send failed; retrying", "metrics API answered 503"},
		},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			api := newMetricsAPI(t)
			r.api(api)
			srv := httptest.NewServer(api)
			defer srv.Close()

			var logs syncBuffer
			log := newLogger(&logs)
			o := r.opts
			o.URL, o.Logger, o.Timeout = secretURL(srv.URL), log, r.timeout
			if o.Timeout == 0 {
				o.Timeout = 10 * time.Second
			}
			s := mustNew(t, o)
			data := make([][]byte, r.n+r.second)
			for i := range data {
				data[i] = testEnvelope(i, false, r.pad[i])
			}
			bo := r.backoff
			if bo == 0 {
				bo = time.Millisecond
			}
			rg := startRig(t, s, rigOptions{probe: 20 * time.Millisecond, backoff: bo, logger: log, preloaded: data[:r.n]})
			defer rg.stop()
			eventually(t, 10*time.Second, "the first batch settled", rg.settled)
			if r.second > 0 {
				rg.append(data[r.n:])
				eventually(t, 10*time.Second, "the second batch settled", rg.settled)
			}
			rg.stop()

			// Delivered and dropped: the sink's counts, the spool's, and the
			// API's own record agree.
			snap, st := rg.account()
			total := r.n + r.second
			ndrop := 0
			for _, ids := range r.dropped {
				ndrop += len(ids)
			}
			if st.Received != uint64(total) || snap.Delivered != uint64(total-ndrop) || snap.DroppedTotal() != uint64(ndrop) || st.Pending != 0 {
				t.Errorf("received %d, delivered %d, dropped %v, pending %d; want %d, %d, %v, 0", st.Received, snap.Delivered, snap.Dropped, st.Pending, total, total-ndrop, r.dropped)
			}
			var gotDrops []string
			for _, d := range rg.spy.drops() {
				gotDrops = append(gotDrops, d.Reason+":"+d.ID)
			}
			var wantDrops []string
			for reason, ids := range r.dropped {
				for _, id := range ids {
					wantDrops = append(wantDrops, reason+":"+id)
				}
			}
			if fmt.Sprint(gotDrops) != fmt.Sprint(wantDrops) {
				t.Errorf("drops %v, want %v", gotDrops, wantDrops)
			}
			written, order := api.written()
			for i := range total {
				id, want := idOf(i), 1
				if i < r.twice {
					want = 2
				}
				if r.dropped[relay.DropOversize] != nil && strings.Contains(fmt.Sprint(r.dropped[relay.DropOversize]), id) {
					want = 0
				}
				if api.notAccepted != nil && api.notAccepted(id) {
					want = 0
				}
				if written[id] != want {
					t.Errorf("the API wrote %s %d times, want %d", id, written[id], want)
				}
			}
			for i := 1; i < len(order); i++ {
				if order[i] < order[i-1] {
					t.Errorf("written out of order: %s after %s", order[i], order[i-1])
				}
			}
			if !maps.Equal(snap.Requests, r.codes) {
				t.Errorf("requests %v, want %v (the API answered %v)", snap.Requests, r.codes, api.codes())
			}
			if !maps.Equal(snap.Retries, r.retries) {
				t.Errorf("retries %v, want %v", snap.Retries, r.retries)
			}
			logText := logs.String()
			for _, want := range r.logs {
				if !strings.Contains(logText, want) {
					t.Errorf("log lacks %q:\n%s", want, logText)
				}
			}
			if r.check != nil {
				r.check(t, api)
			}
			if testing.Verbose() {
				t.Logf("API wrote %d ids (%d requests, %v); sink: delivered %d, dropped %v, requests %v, retries %v; log:\n%s",
					len(written), len(api.requests()), api.codes(), snap.Delivered, snap.Dropped, snap.Requests, snap.Retries, logText)
			}
			// Redaction: the URL shows as scheme://host/path wherever it shows.
			everything := logText + strings.Join(rg.spy.errs, "\n") + fmt.Sprintf("%+v", snap)
			for _, secret := range []string{querySecret, userSecret, "api_key", testKey} {
				if strings.Contains(everything, secret) {
					t.Errorf("%q leaked into the logs, errors or stats:\n%s", secret, everything)
				}
			}
			if strings.Contains(logText, "url=") && !strings.Contains(logText, "url="+srv.URL+"/v1/metrics ") {
				t.Errorf("the URL is not logged as scheme://host/path:\n%s", logText)
			}
		})
	}
}

func padAll(n, pad int) map[int]int {
	m := make(map[int]int, n)
	for i := range n {
		m[i] = pad
	}
	return m
}

// TestRedactedTransportError: a transport error's text (a *url.Error, which
// http.Client fills with the whole URL, query included) is redacted in what
// Send returns.
func TestRedactedTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL
	srv.Close() // nothing listens there now
	s := mustNew(t, Options{URL: secretURL(base), Timeout: 5 * time.Second})
	defer s.Close()
	res := s.Send(t.Context(), records(envelopes(3)))
	if res.Err == nil || res.Settled != 0 {
		t.Fatalf("result %+v", res)
	}
	msg := res.Err.Error()
	if strings.Contains(msg, querySecret) || strings.Contains(msg, userSecret) || !strings.Contains(msg, base+"/v1/metrics") {
		t.Errorf("error %q", msg)
	}
	if class, _ := relay.Classify(res.Err); class != relay.ClassTransient {
		t.Errorf("class %v", class)
	}
}
