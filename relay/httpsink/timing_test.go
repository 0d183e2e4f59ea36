package httpsink

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// These tests run in a synctest bubble over an in-memory network, so waits
// of seconds and minutes take no real time and are measured exactly.

// waitSettled advances virtual time until nothing is pending.
func waitSettled(t *testing.T, rg *rig, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !rg.settled() {
		if time.Now().After(deadline) {
			snap, st := rg.account()
			t.Fatalf("not settled after %s: %+v %+v", within, snap, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRetryAfterHonoured: after a 429 the next attempt comes no earlier
// than Retry-After and no later than 10% + 250 ms after it, for both forms.
func TestRetryAfterHonoured(t *testing.T) {
	cases := []struct {
		name string
		// header returns the Retry-After value for a request at now, and the
		// wait it means.
		header func(now time.Time) (string, time.Duration)
	}{
		{"delta-seconds", func(time.Time) (string, time.Duration) { return "2", 2 * time.Second }},
		{"http-date", func(now time.Time) (string, time.Duration) {
			// An HTTP-date has whole seconds: the date is 3 s after the
			// start of the request's second, so the exact wait is that
			// date minus now.
			at := now.Truncate(time.Second).Add(3 * time.Second)
			return at.Format(http.TimeFormat), at.Sub(now)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPeer(t, func(i int, r *seen, w http.ResponseWriter) int {
					if i == 0 {
						v, _ := c.header(r.at)
						w.Header().Set("Retry-After", v)
						return reply(w, http.StatusTooManyRequests)
					}
					return reply(w, 200)
				})
				s := mustNew(t, Options{})
				stop := servePipe(t, s, p)
				// A backoff far below Retry-After, so the wait is the header's.
				rg := startRig(t, s, rigOptions{backoff: 100 * time.Millisecond})
				time.Sleep(1300 * time.Millisecond) // the first request lands inside a second
				rg.append(envelopes(5))
				waitSettled(t, rg, time.Minute)
				rg.stop()
				stop()

				reqs := p.requests()
				if len(reqs) != 2 {
					t.Fatalf("%d requests, want 2", len(reqs))
				}
				_, want := c.header(reqs[0].at)
				gap := reqs[1].at.Sub(reqs[0].at)
				if gap < want || gap > want+want/10+250*time.Millisecond {
					t.Errorf("retry after %s, Retry-After meant %s", gap, want)
				}
				t.Logf("Retry-After %s: retried after %s", want, gap)
				snap, _ := rg.account()
				if snap.Delivered != 5 || snap.Retries["throttled"] != 1 {
					t.Errorf("delivered %d, retries %v", snap.Delivered, snap.Retries)
				}
			})
		})
	}
}

// TestRateBudget: three minutes with a growing backlog under the default
// budget. The peer never sees more than 30 requests in any rolling minute
// plus one, every request after the first carries 500 events, and the
// budget is used in full.
func TestRateBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A peer that counts events without decoding them: 45,000 decodes
		// under -race would dominate the test's run time.
		var mu sync.Mutex
		var reqs []*seen
		s := mustNew(t, Options{RatePerMinute: DefaultRatePerMinute}) // 30 requests a minute
		stop := servePipe(t, s, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(r.Body)
			if err != nil {
				return // cut off when the test stops the forwarder
			}
			mu.Lock()
			reqs = append(reqs, &seen{at: time.Now(), ids: make([]string, bytes.Count(body, []byte(`{"id":"ev-`)))})
			mu.Unlock()
			reply(w, 200)
		}))
		const backlog = 2000
		rg := startRig(t, s, rigOptions{linger: 2 * time.Second, preloaded: envelopes(backlog)})
		start := time.Now()
		// Producers outpace the 250 events/s the budget can carry: 300/s.
		next := backlog
		for time.Since(start) < 3*time.Minute {
			batch := make([][]byte, 300)
			for i := range batch {
				batch[i] = testEnvelope(next, false, 0)
				next++
			}
			rg.append(batch)
			time.Sleep(time.Second)
		}
		rg.stop()
		stop()

		mu.Lock()
		defer mu.Unlock()
		for i, r := range reqs {
			inWindow := 0
			for _, q := range reqs[i:] {
				if q.at.Sub(r.at) < time.Minute {
					inWindow++
				}
			}
			if inWindow > 31 {
				t.Errorf("%d requests in the minute from %s", inWindow, r.at.Sub(start))
			}
			if i > 0 && len(r.ids) != 500 {
				t.Errorf("request %d at %s carried %d events", i, r.at.Sub(start), len(r.ids))
			}
			if i > 0 && r.at.Sub(reqs[i-1].at) < 2*time.Second {
				t.Errorf("requests %d and %d %s apart", i-1, i, r.at.Sub(reqs[i-1].at))
			}
		}
		// 3 minutes at one request per 2 s: 90, plus the one at the start.
		if len(reqs) < 90 {
			t.Errorf("%d requests in 3 minutes: the budget was not used", len(reqs))
		}
		snap, st := rg.account()
		t.Logf("3 min, %d events produced: %d requests, %d delivered (%.0f events/s), %d pending",
			next, len(reqs), snap.Delivered, float64(snap.Delivered)/180, st.Pending)
	})
}

// TestUnauthorizedKeyFile: the peer answers 401 to everything until the key
// file holds the right key. The sink pauses without losing anything, does
// not hammer the peer, and resumes within 2 s of the file change (noticed by
// WatchKey) or of Reload; every event spooled meanwhile is delivered.
func TestUnauthorizedKeyFile(t *testing.T) {
	cases := []struct {
		name  string
		watch bool          // WatchKey notices the change, else Reload is called
		after time.Duration // the change comes this long after the refused request
	}{
		{"file change", true, 77300 * time.Millisecond},
		// The worst case: a change just after a request waits for the next
		// token too (2 s at the default budget).
		{"file change just after the refusal", true, 100 * time.Millisecond},
		{"Reload", false, 77300 * time.Millisecond},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "api-key")
				if err := os.WriteFile(path, []byte("sk-wrong-0000\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				p := newPeer(t, func(_ int, r *seen, w http.ResponseWriter) int {
					if r.auth != "Bearer "+testKey {
						return reply(w, http.StatusUnauthorized)
					}
					return reply(w, 200)
				})
				var logs syncBuffer
				s := mustNew(t, Options{APIKeyFile: path, RatePerMinute: DefaultRatePerMinute, Logger: newLogger(&logs)}) // the API's rate
				stop := servePipe(t, s, p)
				rg := startRig(t, s, rigOptions{
					linger:    2 * time.Second,
					watchKey:  c.watch,
					logger:    newLogger(&logs),
					preloaded: envelopes(10),
					// probe: the default 5 min, so only the key change can end the pause
				})
				start := time.Now()
				time.Sleep(2*time.Second + 50*time.Millisecond) // the partial batch lingers 2 s
				synctest.Wait()
				if snap, _ := rg.account(); snap.Paused != PauseUnauthorized {
					t.Fatalf("paused %q after a 401", snap.Paused)
				}
				more := make([][]byte, 20)
				for i := range more {
					more[i] = testEnvelope(10+i, false, 0)
				}
				rg.append(more) // spooled while paused
				time.Sleep(time.Until(start.Add(2*time.Second + c.after)))

				changedAt := time.Now()
				if reqs := p.requests(); len(reqs) != 1 || changedAt.Sub(reqs[0].at) != c.after {
					t.Fatalf("%d requests before the change, the last %s before it", len(reqs), changedAt.Sub(reqs[len(reqs)-1].at))
				}
				if err := os.WriteFile(path, []byte(testKey+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
				if !c.watch {
					if err := s.Reload(); err != nil {
						t.Fatal(err)
					}
				}
				waitSettled(t, rg, time.Minute)
				rg.stop()
				stop()

				reqs := p.requests()
				var first200 time.Time
				refused := 0
				for _, r := range reqs {
					if r.code == 200 && first200.IsZero() {
						first200 = r.at
					}
					if r.code == 401 {
						refused++
					}
				}
				if d := first200.Sub(changedAt); d < 0 || d > 2*time.Second {
					t.Errorf("first accepted request %s after the key change, want within 2s", d)
				}
				if refused != 1 {
					t.Errorf("%d refused requests during a pause with a 5 min probe, want 1", refused)
				}
				snap, st := rg.account()
				if snap.Delivered != 30 || snap.DroppedTotal() != 0 || st.Pending != 0 || snap.Paused != "" {
					t.Errorf("delivered %d, dropped %v, pending %d, paused %q", snap.Delivered, snap.Dropped, st.Pending, snap.Paused)
				}
				if got := p.accepted(); len(got) != 30 || got[0] != idOf(0) || got[29] != idOf(29) {
					t.Errorf("accepted %v", got)
				}
				t.Logf("%s: resumed %s after the change; %d requests in all", c.name, first200.Sub(changedAt), len(reqs))
				if snap.Requests["401"] != 1 || snap.Retries["paused"] != 1 {
					t.Errorf("requests %v retries %v", snap.Requests, snap.Retries)
				}
			})
		})
	}
}
