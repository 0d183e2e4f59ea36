package trickletest

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newServer(t *testing.T, opts Options) *Server {
	t.Helper()
	srv, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func newClient(t *testing.T, srv *Server) *http.Client {
	t.Helper()
	tr := &http.Transport{DialContext: srv.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type answer struct {
	code int
	h    http.Header
	body string
}

func do(t *testing.T, c *http.Client, method, url string, body io.Reader, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func post(t *testing.T, c *http.Client, url, body string, hdr ...string) answer {
	t.Helper()
	return do(t, c, http.MethodPost, url, strings.NewReader(body), hdr...)
}

func get(t *testing.T, c *http.Client, url string) answer {
	t.Helper()
	return do(t, c, http.MethodGet, url, nil)
}

func wantCode(t *testing.T, what string, a answer, code int) {
	t.Helper()
	if a.code != code {
		t.Fatalf("%s: status %d (%q), want %d", what, a.code, a.body, code)
	}
}

func wantHeader(t *testing.T, what string, a answer, name, value string) {
	t.Helper()
	if got := a.h.Get(name); got != value {
		t.Fatalf("%s: %s = %q, want %q", what, name, got, value)
	}
}

// readFirst GETs url and reads n bytes of the body: the segment's first
// bytes reached the server. The caller reads the rest.
func readFirst(t *testing.T, c *http.Client, url string, n int) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		resp.Body.Close()
		t.Fatalf("GET %s: %d, %v", url, resp.StatusCode, err)
	}
	return resp, string(buf)
}

func TestChannelCreation(t *testing.T) {
	t.Run("orchestrator", func(t *testing.T) {
		srv := newServer(t, Options{})
		c := newClient(t, srv)
		u := srv.ChannelURL("abc-events")
		wantCode(t, "POST seq on unknown channel", post(t, c, u+"/0", "x"), http.StatusNotFound)
		wantCode(t, "GET on unknown channel", get(t, c, u+"/0"), http.StatusNotFound)
		wantCode(t, "next on unknown channel", get(t, c, u+"/next"), http.StatusNotFound)
		wantCode(t, "client create", post(t, c, u, "", "Expect-Content", "application/jsonl"), http.StatusNotFound)
		srv.CreateChannel("abc-events")
		a := get(t, c, u+"/next")
		wantCode(t, "next", a, http.StatusOK)
		wantHeader(t, "next", a, HeaderLatest, "0")
		if a.body != "0" {
			t.Fatalf("next body %q, want 0", a.body)
		}
		a = post(t, c, u+"/0", "hello\n")
		wantCode(t, "POST 0", a, http.StatusOK)
		wantHeader(t, "POST 0", a, HeaderSeq, "0")
	})
	t.Run("autocreate", func(t *testing.T) {
		srv := newServer(t, Options{AutoCreate: true})
		c := newClient(t, srv)
		u := srv.ChannelURL("auto")
		wantCode(t, "GET before create", get(t, c, u+"/0"), http.StatusNotFound)
		wantCode(t, "POST creates", post(t, c, u+"/0", "a\n"), http.StatusOK)
		a := get(t, c, u+"/0")
		wantCode(t, "GET 0", a, http.StatusOK)
		if a.body != "a\n" {
			t.Fatalf("GET 0 body %q", a.body)
		}
		wantCode(t, "explicit create", post(t, c, srv.ChannelURL("other"), ""), http.StatusOK)
		if _, ok := srv.Next("other"); !ok {
			t.Fatal("POST <chan> did not create the channel")
		}
	})
}

// A reader sees a segment's bytes while its POST is still streaming.
func TestReadersSeeSegmentWhileWritten(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")

	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	var postAnswer answer
	go func() {
		defer wg.Done()
		postAnswer = do(t, c, http.MethodPost, u+"/0", pr)
	}()
	if _, err := pw.Write([]byte("first\n")); err != nil {
		t.Fatal(err)
	}

	resp, err := c.Get(u + "/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get(HeaderSeq) != "0" {
		t.Fatalf("GET 0: %d seq %q", resp.StatusCode, resp.Header.Get(HeaderSeq))
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(resp.Body, buf, len("first\n"))
	if err != nil || string(buf[:n]) != "first\n" {
		t.Fatalf("read while written: %q, %v", buf[:n], err)
	}
	pw.Write([]byte("second\n"))
	pw.Close()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("rest: %q, %v", rest, err)
	}
	wg.Wait()
	wantCode(t, "POST", postAnswer, http.StatusOK)
	if got := string(srv.Received("ch")[0]); got != "first\nsecond\n" {
		t.Fatalf("Received %q", got)
	}
}

func TestKeepsLastSegmentsAnd470(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	for i := range 7 {
		wantCode(t, "POST", post(t, c, u+"/"+strconv.Itoa(i), "s"+strconv.Itoa(i)), http.StatusOK)
	}
	for _, seq := range []int{0, 1, 9} {
		a := get(t, c, u+"/"+strconv.Itoa(seq))
		wantCode(t, "GET "+strconv.Itoa(seq), a, StatusNotHeld)
		wantHeader(t, "GET "+strconv.Itoa(seq), a, HeaderLatest, "7")
	}
	for seq := 2; seq < 7; seq++ {
		a := get(t, c, u+"/"+strconv.Itoa(seq))
		wantCode(t, "GET held", a, http.StatusOK)
		wantHeader(t, "GET held", a, HeaderLatest, "7")
		if a.body != "s"+strconv.Itoa(seq) {
			t.Fatalf("GET %d: %q", seq, a.body)
		}
	}
	a := get(t, c, u+"/-2")
	wantCode(t, "GET -2", a, http.StatusOK)
	wantHeader(t, "GET -2", a, HeaderSeq, "6")
	wantCode(t, "GET bad seq", get(t, c, u+"/x"), http.StatusBadRequest)

	// GET -1 waits for the next write.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	var live answer
	go func() {
		defer wg.Done()
		live = get(t, c, u+"/-1")
	}()
	if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
		t.Fatal(err)
	}
	wantCode(t, "POST 7", post(t, c, u+"/7", "live"), http.StatusOK)
	wg.Wait()
	wantCode(t, "GET -1", live, http.StatusOK)
	wantHeader(t, "GET -1", live, HeaderSeq, "7")
	// As the real server: no Lp-Trickle-Latest when the seq served was
	// the next write.
	wantHeader(t, "GET -1", live, HeaderLatest, "")
	if live.body != "live" {
		t.Fatalf("GET -1 body %q", live.body)
	}
}

func TestLegacy(t *testing.T) {
	srv := newServer(t, Options{Legacy: true})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	wantCode(t, "next", get(t, c, u+"/next"), http.StatusBadRequest)
	a := post(t, c, u+"/3", "x", HeaderReset, "1")
	wantCode(t, "POST", a, http.StatusOK)
	if _, ok := a.h[HeaderSeq]; ok {
		t.Fatal("legacy POST answer carries Lp-Trickle-Seq")
	}
	a = get(t, c, u+"/1000")
	wantCode(t, "probe", a, StatusNotHeld)
	wantHeader(t, "probe", a, HeaderLatest, "4")
	for _, r := range srv.Requests() {
		if r.Reset {
			t.Fatal("legacy server honoured Lp-Trickle-Reset")
		}
	}
}

// The spec's bite: re-POSTing a completed seq answers 200, drops the data
// and moves the write position back.
func TestRePostOfCompletedSeqIsDropped(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	for i := range 3 {
		post(t, c, u+"/"+strconv.Itoa(i), "orig"+strconv.Itoa(i))
	}
	a := post(t, c, u+"/1", "again")
	wantCode(t, "re-POST", a, http.StatusOK)
	if got := string(srv.Received("ch")[1]); got != "orig1" {
		t.Fatalf("seq 1 now %q", got)
	}
	if b := get(t, c, u+"/1").body; b != "orig1" {
		t.Fatalf("GET 1 %q", b)
	}
	if next, _ := srv.Next("ch"); next != 2 {
		t.Fatalf("next = %d, want 2 (moved back)", next)
	}
	log := srv.Requests()
	if last := log[len(log)-2]; !last.Dropped || last.Seq != "1" {
		t.Fatalf("log entry %+v, want a dropped POST 1", last)
	}
}

func TestDelete(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	wantCode(t, "DELETE seq not held", do(t, c, http.MethodDelete, u+"/4", nil), http.StatusBadRequest)

	// A half-written segment: its reader waits until DELETE ends it.
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer pw.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequest(http.MethodPost, u+"/0", pr)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("half"))
	resp, first := readFirst(t, c, u+"/0", 4)
	defer resp.Body.Close()
	wantCode(t, "DELETE seq", do(t, c, http.MethodDelete, u+"/0", nil), http.StatusOK)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || first+string(rest) != "half" {
		t.Fatalf("reader of deleted segment: %q, %v", first+string(rest), err)
	}
	pw.CloseWithError(errors.New("publisher gone"))
	wg.Wait()
	if _, ok := srv.Received("ch")[0]; ok {
		t.Fatal("an aborted segment counted as received")
	}

	wantCode(t, "DELETE channel", do(t, c, http.MethodDelete, u, nil), http.StatusOK)
	wantCode(t, "DELETE unknown channel", do(t, c, http.MethodDelete, u, nil), http.StatusBadRequest)
	wantCode(t, "GET deleted", get(t, c, u+"/1"), http.StatusNotFound)
}

// Closing a channel answers waiting readers with Lp-Trickle-Closed; later
// requests get 404.
func TestCloseChannel(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	done := make(chan answer, 1)
	go func() { done <- get(t, c, u+"/0") }()
	if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
		t.Fatal(err)
	}
	if !srv.CloseChannel("ch") {
		t.Fatal("CloseChannel: unknown")
	}
	a := <-done
	wantCode(t, "waiting reader", a, http.StatusOK)
	wantHeader(t, "waiting reader", a, HeaderClosed, "terminated")
	wantCode(t, "POST after close", post(t, c, u+"/0", "x"), http.StatusNotFound)
	if srv.CloseChannel("ch") {
		t.Fatal("CloseChannel of a closed channel reported it")
	}
}

func TestCloseAnswersWaitingPost(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	pr, pw := io.Pipe()
	defer pw.Close()
	done := make(chan answer, 1)
	go func() { done <- do(t, c, http.MethodPost, u+"/0", pr) }()
	pw.Write([]byte("some"))
	// Once a reader sees its bytes, the POST is waiting for more.
	resp, err := c.Get(u + "/0")
	if err != nil {
		t.Fatal(err)
	}
	io.ReadFull(resp.Body, make([]byte, 4))
	srv.CloseChannel("ch")
	resp.Body.Close()
	a := <-done
	wantCode(t, "waiting POST", a, http.StatusOK)
	wantHeader(t, "waiting POST", a, HeaderClosed, "terminated")
}

func TestResetEndsOlderOpenSegments(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	pr, pw := io.Pipe()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer pw.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequest(http.MethodPost, u+"/0", pr)
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	pw.Write([]byte("stale"))
	resp, first := readFirst(t, c, u+"/0", 5)
	defer resp.Body.Close()
	wantCode(t, "POST with reset", post(t, c, u+"/1", "fresh", HeaderReset, "1"), http.StatusOK)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || first+string(rest) != "stale" {
		t.Fatalf("reader of the reset segment: %q, %v", first+string(rest), err)
	}
	pw.CloseWithError(errors.New("old publisher gone"))
	wg.Wait()
}

func TestRestartLosesChannels(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	post(t, c, u+"/0", "x")
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get(u + "/1")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = errors.New("answered " + resp.Status)
			}
		}
		errc <- err
	}()
	if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
		t.Fatal(err)
	}
	before := srv.URL()
	srv.Restart()
	if err := <-errc; err == nil {
		t.Fatal("a waiting reader survived the restart")
	}
	if srv.URL() != before {
		t.Fatal("address changed")
	}
	wantCode(t, "GET after restart", get(t, c, u+"/0"), http.StatusNotFound)
	wantCode(t, "POST after restart", post(t, c, u+"/1", "y"), http.StatusNotFound)
	if len(srv.Received("ch")) != 1 {
		t.Fatal("Received was not kept for assertions")
	}
}

func TestCutPost(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	srv.CutPost("ch", 10)
	wantCode(t, "small POST", post(t, c, u+"/0", "tiny"), http.StatusOK)
	req, _ := http.NewRequest(http.MethodPost, u+"/1", strings.NewReader(strings.Repeat("y", 100)))
	if resp, err := c.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("cut POST answered %s", resp.Status)
	}
	log := srv.Requests()
	if last := log[len(log)-1]; !last.Cut || last.Seq != "1" || last.Bytes < 10 {
		t.Fatalf("log %+v, want the cut POST 1", last)
	}
	if _, ok := srv.Received("ch")[1]; ok {
		t.Fatal("cut segment counted as received")
	}
	// The cut segment stays open, as on the real server, until DELETEd.
	wantCode(t, "DELETE cut seq", do(t, c, http.MethodDelete, u+"/1", nil), http.StatusOK)
	if a := get(t, c, u+"/1"); a.code != http.StatusOK || len(a.body) < 10 {
		t.Fatalf("GET cut seq: %d %q", a.code, a.body)
	}
}

func TestCutReaders(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Get(srv.ChannelURL("ch") + "/0")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
		t.Fatal(err)
	}
	if n := srv.CutReaders("ch"); n != 1 {
		t.Fatalf("CutReaders = %d", n)
	}
	if err := <-errc; err == nil {
		t.Fatal("cut reader got an answer")
	}
}

// The idle sweep runs in virtual time over the in-memory listener.
func TestIdleSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, Options{InMemory: true})
		srv.CreateChannel("idle")
		srv.CreateChannel("busy")
		c := newClient(t, srv)
		for i := range 6 {
			time.Sleep(time.Minute)
			post(t, c, srv.ChannelURL("busy")+"/"+strconv.Itoa(i), "x")
		}
		synctest.Wait()
		wantCode(t, "idle channel after 6 min", get(t, c, srv.ChannelURL("idle")+"/next"), http.StatusNotFound)
		wantCode(t, "busy channel", get(t, c, srv.ChannelURL("busy")+"/next"), http.StatusOK)
	})
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, Options{InMemory: true, IdleSweep: 10 * time.Second})
		srv.CreateChannel("ch")
		c := newClient(t, srv)
		time.Sleep(9 * time.Second)
		wantCode(t, "before the sweep", get(t, c, srv.ChannelURL("ch")+"/next"), http.StatusOK)
		time.Sleep(5 * time.Second)
		wantCode(t, "after the sweep", get(t, c, srv.ChannelURL("ch")+"/next"), http.StatusNotFound)
	})
}

func TestTLS(t *testing.T) {
	srv := newServer(t, Options{TLS: true})
	srv.CreateChannel("ch")
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL %s", srv.URL())
	}
	wantCode(t, "insecure client", get(t, newClient(t, srv), srv.ChannelURL("ch")+"/next"), http.StatusOK)
	strict := &http.Transport{DialContext: srv.DialContext}
	defer strict.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.ChannelURL("ch")+"/next", nil)
	if resp, err := (&http.Client{Transport: strict}).Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a verifying client accepted the self-signed certificate")
	}
}

func TestStopIsIdempotent(t *testing.T) {
	srv, err := NewServer(Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	srv.Stop()
}

// A reader waiting on a segment that ends before its first byte (DELETE,
// Lp-Trickle-Reset, a POST taking its slot) gets what the real server
// sends: 200 with no body, never a 470. That ends a ChannelReader.
func TestSegmentEndedBeforeAnyByteIsEmpty(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, c *http.Client, u string)
	}{
		{"DELETE", func(t *testing.T, c *http.Client, u string) {
			wantCode(t, "DELETE", do(t, c, http.MethodDelete, u+"/0", nil), http.StatusOK)
		}},
		{"reset", func(t *testing.T, c *http.Client, u string) {
			wantCode(t, "POST 1", post(t, c, u+"/1", "x", HeaderReset, "1"), http.StatusOK)
		}},
		{"slot taken", func(t *testing.T, c *http.Client, u string) {
			wantCode(t, "POST 5", post(t, c, u+"/5", "x"), http.StatusOK)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, Options{})
			srv.CreateChannel("ch")
			c := newClient(t, srv)
			u := srv.ChannelURL("ch")
			done := make(chan answer, 1)
			go func() { done <- get(t, c, u+"/0") }()
			if err := srv.WaitReaders(t.Context(), "ch", 1); err != nil {
				t.Fatal(err)
			}
			tc.end(t, c, u)
			a := <-done
			wantCode(t, "waiting reader", a, http.StatusOK)
			wantHeader(t, "waiting reader", a, HeaderSeq, "0")
			if a.body != "" {
				t.Fatalf("waiting reader got %q", a.body)
			}
		})
	}
	synctest.Test(t, func(t *testing.T) {
		srv := newServer(t, Options{InMemory: true})
		srv.CreateChannel("ch")
		c := newClient(t, srv)
		r := startReader(t, srv, ChannelReader, "ch")
		synctest.Wait() // waiting on seq 0
		wantCode(t, "DELETE", do(t, c, http.MethodDelete, srv.ChannelURL("ch")+"/0", nil), http.StatusOK)
		synctest.Wait()
		if st := r.Stats(); !strings.Contains(st.Stopped, "was empty") {
			t.Fatalf("ChannelReader after its segment was abandoned: %+v", st)
		}
	})
}

// The real server closes the connection after a POST that brought no
// byte and after a 404: the publisher's next request dials.
func TestPostsWithoutDataCloseTheConnection(t *testing.T) {
	srv := newServer(t, Options{})
	srv.CreateChannel("ch")
	c := newClient(t, srv)
	u := srv.ChannelURL("ch")
	post(t, c, u+"/0", "data")
	for _, tc := range []struct{ what, url, body string }{
		{"empty", u + "/1", ""},
		{"re-POST", u + "/0", "again"},
		{"404", srv.ChannelURL("nope") + "/0", "x"},
	} {
		req, _ := http.NewRequest(http.MethodPost, tc.url, strings.NewReader(tc.body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !resp.Close {
			t.Errorf("%s POST: connection kept", tc.what)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, u+"/2", strings.NewReader("x"))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Close {
		t.Error("a POST with data closed the connection")
	}
}
