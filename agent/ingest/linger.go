package ingest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Answering before the body is read.
//
// Most HTTP clients (Python's urllib, requests, httpx, aiohttp) write the
// whole body before they read the answer. If the server answers early (413,
// 401, 503, 404) and closes while the client is still writing, the kernel
// resets the connection, and the reset also throws away the answer waiting
// in the client's receive buffer: the client sees "connection reset by peer"
// and nothing about why. So every answer sent before the body was read to
// its end goes out with "Connection: close", and then the rest of the body
// is read and thrown away, never buffered, until the client has sent it all
// (then the close is clean and the client reads the answer), or until a
// bound: LingerBytes in all, nothing for lingerIdle, or LingerTime in all,
// whichever comes first, so a hostile client can hold neither the
// connection nor memory. (The time bound is not tighter because some
// clients are slow writers: httpx sends 64 MiB over a unix socket in about
// 7 s, copying what is left of its buffer after each send.)

// Default bounds of the lingering read.
const (
	// defaultLingerFactor times MaxBodyBytes is read and thrown away at most
	// (64 MiB with the default 4 MiB limit).
	defaultLingerFactor = 16
	defaultLingerTime   = 30 * time.Second
	// lingerIdle ends a linger on a client that sends nothing more.
	lingerIdle = 2 * time.Second
)

func (o Options) lingerBytes() int64 {
	if o.LingerBytes > 0 {
		return o.LingerBytes
	}
	return defaultLingerFactor * o.MaxBodyBytes
}

func (o Options) lingerTime() time.Duration {
	if o.LingerTime > 0 {
		return o.LingerTime
	}
	return defaultLingerTime
}

// linger wraps every request that has a body so that an answer written
// before the body was read to its end is followed by a lingering close
// (see above). Handlers need do nothing: any answer, a mux 404 included, is
// covered.
func (s *Server) linger(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		// The server would otherwise read (up to 256 KiB) and close by
		// itself when the answer starts; the read happens below instead.
		_ = rc.EnableFullDuplex()
		body := &trackedBody{ReadCloser: r.Body}
		r.Body = body
		lw := &lingerWriter{ResponseWriter: w, body: body}
		next.ServeHTTP(lw, r)
		if body.eof {
			return
		}
		if !lw.wrote {
			lw.WriteHeader(http.StatusOK)
		}
		if body.reads == 0 && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
			// The client was never told to send the body: it waits for the
			// answer and sends nothing more.
			return
		}
		_ = rc.Flush()
		s.discard(rc, body)
	})
}

// discard reads what is left of a body and throws it away, within the
// linger bounds; the agent stopping ends it at once.
func (s *Server) discard(rc *http.ResponseController, body *trackedBody) {
	left := s.lingerBytes() - body.n
	if left <= 0 {
		return
	}
	end := time.Now().Add(s.lingerTime())
	var stopped atomic.Bool
	if s.Stopping != nil {
		stop := context.AfterFunc(s.Stopping, func() {
			stopped.Store(true)
			rc.SetReadDeadline(time.Now())
		})
		defer stop()
	}
	buf := make([]byte, 32<<10)
	for left > 0 {
		// Each read has lingerIdle, and none goes past the end.
		d := time.Now().Add(lingerIdle)
		if d.After(end) {
			d = end
		}
		if rc.SetReadDeadline(d) != nil || stopped.Load() {
			return
		}
		n, err := body.ReadCloser.Read(buf[:min(int64(len(buf)), left)])
		left -= int64(n)
		if err != nil {
			return
		}
	}
}

// trackedBody notes how much of a body the handler read, and whether to its
// end.
type trackedBody struct {
	io.ReadCloser
	n     int64
	reads int
	eof   bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	b.reads++
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// lingerWriter marks an answer that starts before the body was read to its
// end "Connection: close": the connection cannot be used again once the
// rest of the body is thrown away.
type lingerWriter struct {
	http.ResponseWriter
	body  *trackedBody
	wrote bool
}

func (w *lingerWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.wrote = true
		if !w.body.eof {
			w.Header().Set("Connection", "close")
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *lingerWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *lingerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
