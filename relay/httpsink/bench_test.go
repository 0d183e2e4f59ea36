package httpsink

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Benchmarks report figures to be read as ratios against the baseline
// measured in the same run:
//
//	BenchmarkSend500 vs BenchmarkPostBaseline500: the sink's cost over a
//	bare POST of the same bytes with a plain client.
//	BenchmarkBody500 vs BenchmarkBodyCopyBaseline500 (a plain copy of the
//	envelope bytes, the floor) and BenchmarkBodyMarshal500 (json.Marshal of
//	the wrapper with raw events, the obvious alternative).
//
// On a shared machine separate benchmarks drift apart with the load, so
// BenchmarkRatio interleaves candidate and baseline in one loop and reports
// the ratio of their summed times directly.

// benchBatch is 500 envelopes of about 570 bytes, a gpu_memory_sample's size.
func benchBatch() [][]byte {
	data := make([][]byte, 500)
	for i := range data {
		data[i] = testEnvelope(i, false, 400)
	}
	return data
}

// discardServer answers 200 without parsing the body.
func discardServer(b *testing.B) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(srv.Close)
	return srv
}

func benchSend(b *testing.B, gz bool) {
	srv := discardServer(b)
	s := mustNew(b, Options{URL: srv.URL, Gzip: gz})
	defer s.Close()
	recs := records(benchBatch())
	bytesPer := 0
	for _, r := range recs {
		bytesPer += len(r.Data)
	}
	b.SetBytes(int64(bytesPer))
	b.ReportAllocs()
	for b.Loop() {
		if res := s.Send(context.Background(), recs); res.Err != nil || res.Settled != len(recs) {
			b.Fatalf("%+v", res)
		}
	}
	b.ReportMetric(float64(b.N*len(recs))/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkSend500(b *testing.B)     { benchSend(b, false) }
func BenchmarkSend500Gzip(b *testing.B) { benchSend(b, true) }

func BenchmarkPostBaseline500(b *testing.B) {
	srv := discardServer(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	defer client.CloseIdleConnections()
	body := appendBody(nil, bodyPrefix("edgerelay", "bench"), records(benchBatch()))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	b.ReportMetric(float64(b.N*500)/b.Elapsed().Seconds(), "events/s")
}

func BenchmarkBody500(b *testing.B) {
	recs := records(benchBatch())
	prefix := bodyPrefix("edgerelay", "bench")
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = appendBody(buf[:0], prefix, recs)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkBodyCopyBaseline500(b *testing.B) {
	recs := records(benchBatch())
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = buf[:0]
		for _, r := range recs {
			buf = append(buf, r.Data...)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkBodyMarshal500(b *testing.B) {
	data := benchBatch()
	type wrapper struct {
		App    string            `json:"app"`
		Host   string            `json:"host"`
		Events []json.RawMessage `json:"events"`
	}
	w := wrapper{App: "edgerelay", Host: "bench", Events: make([]json.RawMessage, len(data))}
	for i, d := range data {
		w.Events[i] = d
	}
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		out, _ = json.Marshal(w)
	}
	b.SetBytes(int64(len(out)))
}

// BenchmarkRatio reports candidate/baseline time ratios measured
// alternately in the same loop.
func BenchmarkRatio(b *testing.B) {
	data := benchBatch()
	recs := records(data)
	srv := discardServer(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}}
	defer client.CloseIdleConnections()
	prefix := bodyPrefix("edgerelay", "bench")
	body := appendBody(nil, prefix, recs)
	post := func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	ratio := func(b *testing.B, candidate, baseline func(), unit string) {
		var tc, tb time.Duration
		for b.Loop() {
			t0 := time.Now()
			candidate()
			t1 := time.Now()
			baseline()
			tc, tb = tc+t1.Sub(t0), tb+time.Since(t1)
		}
		b.ReportMetric(float64(tc)/float64(tb), unit)
	}
	for _, gz := range []bool{false, true} {
		name := "send-vs-post"
		if gz {
			name = "send-gzip-vs-post"
		}
		b.Run(name, func(b *testing.B) {
			s := mustNew(b, Options{URL: srv.URL, Gzip: gz})
			defer s.Close()
			ratio(b, func() {
				if res := s.Send(context.Background(), recs); res.Err != nil {
					b.Fatal(res.Err)
				}
			}, post, "x_post")
		})
	}
	var buf, cp []byte
	b.Run("body-vs-copy", func(b *testing.B) {
		ratio(b, func() { buf = appendBody(buf[:0], prefix, recs) }, func() {
			cp = cp[:0]
			for _, r := range recs {
				cp = append(cp, r.Data...)
			}
		}, "x_copy")
	})
	b.Run("marshal-vs-body", func(b *testing.B) {
		w := struct {
			App    string            `json:"app"`
			Host   string            `json:"host"`
			Events []json.RawMessage `json:"events"`
		}{App: "edgerelay", Host: "bench", Events: make([]json.RawMessage, len(data))}
		for i, d := range data {
			w.Events[i] = d
		}
		ratio(b, func() { json.Marshal(w) }, func() { buf = appendBody(buf[:0], prefix, recs) }, "x_body")
	})
}
