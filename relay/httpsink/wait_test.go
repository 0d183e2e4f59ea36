package httpsink

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// These tests run in a synctest bubble: the metrics API (metricsAPI) is
// served over an in-memory network, waits of minutes take no real time, and
// every gap between requests is measured exactly, whatever the machine's
// speed. The forwarder uses its default schedule, as in the agent.

// within reports whether got is at least want and at most 10% + 250 ms more
// (spec/metrics-api.md: the wait is the value given "and not much more").
func within(got, want time.Duration) bool {
	return got >= want && got <= want+want/10+250*time.Millisecond
}

// TestRetryAfterEveryTime: the API answers k throttling answers in a row,
// then takes the batch. With a usable Retry-After every wait is that value,
// the k-th as much as the first (the backoff, which would have grown to
// 8-16 s by the fifth, neither replaces nor lengthens it). Without one, the
// waits are the backoff's, each within relay.MaxBackOff.
func TestRetryAfterEveryTime(t *testing.T) {
	type row struct {
		name string
		code int
		k    int
		rate int // the sink's budget; 0 here means none
		// header returns the Retry-After for a request at now and the wait
		// it means; a zero wait means none usable.
		header func(now time.Time) (string, time.Duration)
	}
	seconds := func(v string, d time.Duration) func(time.Time) (string, time.Duration) {
		return func(time.Time) (string, time.Duration) { return v, d }
	}
	date := func(now time.Time) (string, time.Duration) {
		at := now.Truncate(time.Second).Add(4 * time.Second) // whole seconds: the exact wait is at - now
		return at.Format(http.TimeFormat), at.Sub(now)
	}
	rows := []row{
		{"429 Retry-After 5, once", 429, 1, 30, seconds("5", 5*time.Second)},
		{"429 Retry-After 5, 4 in a row", 429, 4, 30, seconds("5", 5*time.Second)},
		{"429 Retry-After 5, 10 in a row", 429, 10, 30, seconds("5", 5*time.Second)},
		{"429 Retry-After 37, 6 in a row", 429, 6, 30, seconds("37", 37*time.Second)},
		{"429 Retry-After 1, 8 in a row, no budget", 429, 8, -1, seconds("1", time.Second)},
		{"429 HTTP-date, 6 in a row", 429, 6, 30, date},
		{"503 is not throttling: backoff", 503, 8, 30, seconds("5", 0)},
		{"408 without Retry-After, 12 in a row", 408, 12, 30, seconds("", 0)},
		{"429 Retry-After 0, 12 in a row", 429, 12, 30, seconds("0", 0)},
		{"425 Retry-After 900 (the cap), twice", 425, 2, 30, seconds("900", 15*time.Minute)},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				api := newMetricsAPI(t)
				api.override = func(n int, now time.Time) (int, string) {
					if n < r.k {
						v, _ := r.header(now)
						return r.code, v
					}
					return 0, ""
				}
				rate := r.rate
				if rate < 0 {
					rate = 0
				}
				s := mustNew(t, Options{RatePerMinute: rate})
				stop := servePipe(t, s, api)
				rg := startRig(t, s, rigOptions{})
				time.Sleep(1300 * time.Millisecond) // requests land inside a second, for the HTTP-date
				rg.append(envelopes(5))
				waitSettled(t, rg, 2*time.Hour)
				rg.stop()
				stop()

				reqs := api.requests()
				if len(reqs) != r.k+1 {
					t.Fatalf("%d requests, want %d", len(reqs), r.k+1)
				}
				var gaps []time.Duration
				for i := 0; i < r.k; i++ {
					gap := reqs[i+1].at.Sub(reqs[i].at)
					gaps = append(gaps, gap)
					_, want := r.header(reqs[i].at)
					switch {
					case want > 0 && !within(gap, want):
						t.Errorf("wait %d after a %d: %s, Retry-After meant %s", i+1, r.code, gap, want)
					case want == 0 && (gap > relay.MaxBackOff || gap < 2*time.Second):
						t.Errorf("wait %d after a %d without Retry-After: %s, want 2s (the budget) to %s", i+1, r.code, gap, relay.MaxBackOff)
					}
				}
				// Without a usable Retry-After the schedule grows: by the
				// eighth wait its interval is 40 s, the wait at least 20 s
				// (a 0 taken as "now" would leave every wait at the
				// budget's 2 s).
				if _, want := r.header(reqs[0].at); want == 0 && r.k >= 8 && slices.Max(gaps) < 20*time.Second {
					t.Errorf("waits %v without Retry-After: the backoff did not grow", gaps)
				}
				t.Logf("waits: %v", gaps)
				snap, _ := rg.account()
				class := "throttled"
				if r.code >= 500 {
					class = "transient"
				}
				if snap.Delivered != 5 || snap.Retries[class] != uint64(r.k) {
					t.Errorf("delivered %d, retries %v", snap.Delivered, snap.Retries)
				}
			})
		})
	}
}

// TestAPIBudgetRetryAfter: a sink configured without a budget meets the
// API's own (5 requests a minute here). The API answers 429 with the
// seconds until a request leaves its window; the sink waits exactly that,
// every time, and everything arrives once.
func TestAPIBudgetRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newMetricsAPI(t)
		api.perMinute = 5
		s := mustNew(t, Options{MaxEvents: 10, RatePerMinute: 0})
		stop := servePipe(t, s, api)
		rg := startRig(t, s, rigOptions{preloaded: envelopes(120)}) // 12 requests
		waitSettled(t, rg, time.Hour)
		rg.stop()
		stop()

		reqs := api.requests()
		throttled := 0
		for i, r := range reqs {
			if r.code != 429 {
				continue
			}
			throttled++
			if i+1 == len(reqs) {
				t.Fatal("the last request was refused")
			}
			// The window opened at the first request of the minute, so the
			// API asks for the rest of that minute.
			want := reqs[i-5].at.Add(time.Minute).Sub(r.at)
			if gap := reqs[i+1].at.Sub(r.at); !within(gap, want) || reqs[i+1].code != 200 {
				t.Errorf("after the 429 at %d: waited %s, the API asked %s; then %d", i, gap, want, reqs[i+1].code)
			}
		}
		if throttled != 2 || len(reqs) != 14 {
			t.Errorf("%d requests, %d refused; want 14 and 2", len(reqs), throttled)
		}
		written, _ := api.written()
		for i := range 120 {
			if written[idOf(i)] != 1 {
				t.Errorf("%s written %d times", idOf(i), written[idOf(i)])
			}
		}
		snap, _ := rg.account()
		if snap.Delivered != 120 || snap.Retries["throttled"] != 2 {
			t.Errorf("delivered %d, retries %v", snap.Delivered, snap.Retries)
		}
	})
}

// TestRateBudgetMeetsAPI: at the default budget the sink never gets a 429
// from an API that allows 30 requests a minute, through three minutes of
// backlog.
func TestRateBudgetMeetsAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newMetricsAPI(t) // 30 a minute, the API's rule
		s := mustNew(t, Options{MaxEvents: 20, RatePerMinute: DefaultRatePerMinute})
		stop := servePipe(t, s, api)
		rg := startRig(t, s, rigOptions{preloaded: envelopes(2000)}) // 100 requests: over 3 minutes
		time.Sleep(3 * time.Minute)
		rg.stop()
		stop()
		codes := api.codes()
		if codes[429] != 0 || codes[200] < 90 {
			t.Errorf("the API answered %v", codes)
		}
	})
}

// TestTransientWaitsWithinCap: 25 answers of 503 in a row, then success.
// Every gap between requests is within relay.MaxBackOff, and the schedule did
// grow (it is not stuck at the budget's 2 s).
func TestTransientWaitsWithinCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newMetricsAPI(t)
		api.override = func(n int, _ time.Time) (int, string) {
			if n < 25 {
				return 503, ""
			}
			return 0, ""
		}
		s := mustNew(t, Options{RatePerMinute: DefaultRatePerMinute})
		stop := servePipe(t, s, api)
		rg := startRig(t, s, rigOptions{preloaded: envelopes(5)})
		waitSettled(t, rg, time.Hour)
		rg.stop()
		stop()
		reqs := api.requests()
		longest := time.Duration(0)
		for i := 1; i < len(reqs); i++ {
			gap := reqs[i].at.Sub(reqs[i-1].at)
			if gap > relay.MaxBackOff {
				t.Errorf("wait %d: %s, over %s", i, gap, relay.MaxBackOff)
			}
			longest = max(longest, gap)
		}
		if longest < 20*time.Second || len(reqs) != 26 {
			t.Errorf("%d requests, longest wait %s", len(reqs), longest)
		}
	})
}

// TestLearnedLimit: the API takes bodies of at most 10,000 bytes; the sink
// may send 100,000. A batch arrives every 5 minutes for 3 hours. The first
// teaches the limit (a few 413s); later batches go out at the learned size
// without a 413; every ReprobeAfter the sink tries a body a quarter larger,
// and a refused probe costs one 413. After an hour the API's limit goes up
// to 100,000, and the sink climbs back to sending each batch whole.
func TestLearnedLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		api := newMetricsAPI(t)
		api.maxBody = 10_000
		var logs syncBuffer
		s := mustNew(t, Options{MaxBody: 100_000, Logger: newLogger(&logs), RatePerMinute: DefaultRatePerMinute})
		stop := servePipe(t, s, api)
		rg := startRig(t, s, rigOptions{})
		start := time.Now()
		const perBatch, pad = 200, 30 // ~200-byte events: a batch is ~40 KB
		next := 0
		for time.Since(start) < 3*time.Hour {
			if time.Since(start) >= time.Hour && api.maxBody != 100_000 {
				api.mu.Lock()
				api.maxBody = 100_000
				api.mu.Unlock()
			}
			batch := make([][]byte, perBatch)
			for i := range batch {
				batch[i] = testEnvelope(next, false, pad)
				next++
			}
			rg.append(batch)
			time.Sleep(5 * time.Minute)
		}
		waitSettled(t, rg, time.Hour)
		rg.stop()
		stop()

		reqs := api.requests()
		var refusals []time.Duration // when, since start
		for _, r := range reqs {
			if r.code == 413 {
				refusals = append(refusals, r.at.Sub(start))
			}
			if r.code != 200 && r.code != 413 {
				t.Errorf("answer %d at %s", r.code, r.at.Sub(start))
			}
		}
		learning := 0
		for _, at := range refusals {
			if at < time.Minute {
				learning++
			}
		}
		if learning == 0 || learning > 4 {
			t.Errorf("%d refusals while learning, want 1 to 4 (log2 of 40 KB / 10 KB, plus one)", learning)
		}
		later := refusals[learning:]
		for i := 1; i < len(later); i++ {
			if later[i]-later[i-1] < ReprobeAfter {
				t.Errorf("413s at %s and %s: less than %s apart", later[i-1], later[i], ReprobeAfter)
			}
		}
		for _, at := range later {
			if at >= time.Hour+ReprobeAfter {
				t.Errorf("413 at %s, after the API's limit went up", at)
			}
		}
		last := reqs[len(reqs)-1]
		if last.events != perBatch {
			t.Errorf("the last batch went out in requests of %d events, want it whole (%d)", last.events, perBatch)
		}
		written, _ := api.written()
		for i := range next {
			if written[idOf(i)] != 1 {
				t.Fatalf("%s written %d times", idOf(i), written[idOf(i)])
			}
		}
		snap, _ := rg.account()
		if snap.Delivered != uint64(next) || snap.DroppedTotal() != 0 {
			t.Errorf("delivered %d of %d, dropped %v", snap.Delivered, next, snap.Dropped)
		}
		if !strings.Contains(logs.String(), "trying a larger request body") {
			t.Error("no probe logged")
		}
		t.Logf("%d requests; 413s at %v", len(reqs), refusals)
	})
}
