package promptio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pair dials a loopback TCP connection through Dial and returns the
// watched client side and the server side.
func pair(t *testing.T) (*conn, net.Conn) {
	t.Helper()
	if !supported {
		t.Skip("connections are watched on Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	d := Dial((&net.Dialer{}).DialContext)
	c, err := d(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	w, ok := c.(*conn)
	if !ok {
		t.Fatalf("Dial returned %T, want a watched connection", c)
	}
	t.Cleanup(func() { w.Close(); srv.Close() })
	return w, srv
}

// waitReadable spins until the kernel holds bytes for c: a loopback write
// is there at once, but nothing here assumes it.
func waitReadable(t *testing.T, c *conn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !c.answered(); {
		if time.Now().After(deadline) {
			t.Fatal("the answer never became readable")
		}
		runtime.Gosched()
	}
}

// A request out, then a wake-up before the reader reads: the reader gets
// the answer, never the wake-up's deadline error, and the connection is no
// longer awaiting.
func TestWakeUpIsNotAnError(t *testing.T) {
	c, srv := pair(t)
	before := awaiting.Load()
	if _, err := c.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	if got := awaiting.Load() - before; got != 1 {
		t.Fatalf("awaiting +%d after a request, want +1", got)
	}
	if !c.kick() {
		t.Fatal("kick on an awaiting connection did nothing")
	}
	if c.kick() {
		t.Fatal("a second kick before the reader woke did something")
	}
	srv.Write([]byte("answer"))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("Read = %q, %v; want the answer", buf[:n], err)
	}
	if got := awaiting.Load() - before; got != 0 {
		t.Fatalf("awaiting +%d after the answer, want +0", got)
	}
	if c.kick() {
		t.Fatal("kick on a connection with its answer read did something")
	}
}

// A reader woken before its answer has come reads again and waits for it.
func TestWakeUpBeforeTheAnswer(t *testing.T) {
	c, srv := pair(t)
	c.Write([]byte("request"))
	c.kick()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	srv.Write([]byte("late answer"))
	if s := <-got; s != "late answer" {
		t.Fatalf("Read = %q, want the late answer", s)
	}
}

// The caller's read deadline is its own: one that has passed is reported
// even when a wake-up came too, one set while a wake-up is under way is
// put back afterwards, and clearing it lets the read go on.
func TestCallerDeadlineKept(t *testing.T) {
	c, srv := pair(t)
	c.Write([]byte("request"))
	c.SetReadDeadline(time.Now().Add(-time.Second))
	c.kick()
	buf := make([]byte, 16)
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the caller's deadline = %v, want a deadline error", err)
	}

	c.SetReadDeadline(time.Time{})
	c.kick()
	far := time.Now().Add(time.Hour)
	c.SetReadDeadline(far) // while the wake-up is pending
	srv.Write([]byte("answer"))
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("Read = %q, %v; want the answer", buf[:n], err)
	}
	if c.deadline != far || c.kicked {
		t.Fatalf("deadline %v kicked %v after the read; want the caller's %v, false", c.deadline, c.kicked, far)
	}
	// The caller's deadline is back on the socket: a read with nothing to
	// read and a deadline just past ends with the deadline error.
	c.SetReadDeadline(time.Now().Add(-time.Millisecond))
	if _, err := c.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read = %v, want a deadline error", err)
	}
}

// Bytes cross a watched connection whole and in order however many
// wake-ups fall between the reads.
func TestStreamWholeUnderWakeUps(t *testing.T) {
	c, srv := pair(t)
	const total = 1 << 20
	go io.Copy(io.Discard, srv) // the requests below, read so none resets the connection
	go func() {
		chunk := make([]byte, 4096)
		for i := 0; i < total; i += len(chunk) {
			for j := range chunk {
				chunk[j] = byte(i + j)
			}
			srv.Write(chunk)
		}
		srv.(*net.TCPConn).CloseWrite() // the end of the stream
	}()
	var stop atomic.Bool
	var kicks atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			c.Write([]byte{0}) // keeps it awaiting
			if c.kick() {
				kicks.Add(1)
			}
			runtime.Gosched()
		}
	}()
	got, err := io.ReadAll(c)
	stop.Store(true)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if kicks.Load() == 0 {
		t.Fatal("no wake-up fell between the reads; the test proved nothing")
	}
	if len(got) != total {
		t.Fatalf("read %d bytes, want %d", len(got), total)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d is %d, want %d", i, b, byte(i))
		}
	}
}

// Close stops watching: the connection leaves the registry and no longer
// counts as awaiting.
func TestCloseStopsWatching(t *testing.T) {
	c, _ := pair(t)
	before := awaiting.Load()
	c.Write([]byte("request"))
	c.Close()
	if got := awaiting.Load() - before; got != 0 {
		t.Fatalf("awaiting +%d after Close, want +0", got)
	}
	watched.mu.Lock()
	_, in := watched.conns[c]
	watched.mu.Unlock()
	if in {
		t.Fatal("a closed connection is still watched")
	}
}

// The point of the package: with one processor kept busy by a goroutine
// that never blocks, the runtime does not poll the network, and a reader
// whose answer has come stays parked. One wake and a yield later it has
// read the answer, before the busy goroutine goes on.
func TestYieldRunsTheAnsweredReader(t *testing.T) {
	c, srv := pair(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	c.Write([]byte("request"))
	var read atomic.Value
	parked := make(chan struct{})
	go func() {
		close(parked)
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			read.Store(err.Error())
			return
		}
		read.Store(string(buf[:n]))
	}()
	<-parked
	runtime.Gosched() // the reader reaches its Read and parks
	srv.Write([]byte("answer"))
	waitReadable(t, c)
	woke := watched.wake()
	runtime.Gosched()
	if got, _ := read.Load().(string); got != "answer" {
		t.Fatalf("after the wake (%d woken) and one yield the reader has %q; want the answer", woke, got)
	}
}

// Yield does nothing while no watched connection awaits an answer, and at
// most one poll per Interval in the process.
func TestYieldRateLimited(t *testing.T) {
	c, srv := pair(t)
	if Yield() {
		t.Fatal("Yield woke a reader with nothing awaited")
	}
	c.Write([]byte("request"))
	srv.Write([]byte("answer"))
	waitReadable(t, c)
	// A poll "just now": dated an hour ahead, so that no pause of this
	// goroutine on a busy machine can let Interval pass before the call.
	lastPoll.Store(int64(time.Since(epoch) + time.Hour))
	if Yield() {
		t.Fatal("Yield polled again within Interval")
	}
	lastPoll.Store(int64(time.Since(epoch)) - int64(Interval))
	if !Yield() {
		t.Fatal("Yield after Interval did not wake the answered reader")
	}
	buf := make([]byte, 16)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("Read = %q, %v; want the answer", buf[:n], err)
	}
}

// Real HTTP over watched connections, HTTP/1.1 in the clear and HTTP/2
// over TLS (the HTTP sink's two cases), with another goroutine waking the
// readers as often as it can: every answer arrives whole and right, and
// the wake-ups did happen.
func TestHTTPUnderWakeUps(t *testing.T) {
	if !supported {
		t.Skip("connections are watched on Linux only")
	}
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2_tls"}[h2], func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				fmt.Fprintf(w, "%s %d %s", r.Proto, len(body), body[:min(len(body), 8)])
			}))
			tr := &http.Transport{DialContext: Dial((&net.Dialer{}).DialContext)}
			if h2 {
				srv.EnableHTTP2 = true
				srv.StartTLS()
				tr.TLSClientConfig = srv.Client().Transport.(*http.Transport).TLSClientConfig
				tr.ForceAttemptHTTP2 = true
			} else {
				srv.Start()
			}
			defer srv.Close()
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}

			var stop atomic.Bool
			var woken atomic.Int64
			done := make(chan struct{})
			go func() {
				defer close(done)
				for !stop.Load() {
					woken.Add(int64(watched.wake()))
					runtime.Gosched()
				}
			}()
			want := "HTTP/1.1"
			if h2 {
				want = "HTTP/2.0"
			}
			for i := range 300 {
				body := fmt.Sprintf("request-%04d-%s", i, strings.Repeat("x", i*50))
				resp, err := client.Post(srv.URL, "text/plain", strings.NewReader(body))
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if w := fmt.Sprintf("%s %d %s", want, len(body), body[:8]); err != nil || string(got) != w {
					t.Fatalf("request %d: answer %q, %v; want %q", i, got, err, w)
				}
			}
			stop.Store(true)
			<-done
			if woken.Load() == 0 {
				t.Fatal("no reader was woken in 300 requests; the test proved nothing")
			}
			t.Logf("%d wake-ups over 300 requests", woken.Load())
		})
	}
}
