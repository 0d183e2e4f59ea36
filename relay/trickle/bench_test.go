package trickle

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/envelope"

	"github.com/livepeer/edgerelay/relay/trickle/trickletest"
)

// BenchmarkLoopback measures envelopes/s from a spool through the publisher,
// the fake server on loopback TCP and the subscriber, in each framing. The
// raw-* cases are the baseline of the same run: pre-framed lines written
// and read with bare HTTP requests and no parsing, the ceiling of the
// transport and the fake server. Compare each framing with its raw case.
func BenchmarkLoopback(b *testing.B) {
	b.Run("raw-jsonl", func(b *testing.B) { benchRaw(b, false) })
	b.Run("jsonl", func(b *testing.B) { benchPubSub(b, FramingJSONL) })
	b.Run("raw-segment", func(b *testing.B) { benchRaw(b, true) })
	b.Run("segment", func(b *testing.B) { benchPubSub(b, FramingSegment) })
}

func benchPubSub(b *testing.B, framing string) {
	envs := envelopes(b.N)
	// Segment framing keeps every segment: at full speed the reader falls
	// behind by more than 5 (see TestEndToEnd).
	srv := newFake(b, trickletest.Options{NoRecord: true, KeepSegments: b.N + 10})
	srv.CreateChannel("bench")
	done := make(chan struct{})
	n := 0
	_, subRun := startSubscriber(b, SubscriberOptions{
		URL:          srv.ChannelURL("bench"),
		DedupeWindow: -1,
		OnEnvelope: func([]byte, envelope.Checked) {
			if n++; n == b.N {
				close(done)
			}
		},
	})
	if err := srv.WaitReaders(b.Context(), "bench", 1); err != nil {
		b.Fatal(err)
	}
	cur := newSpool(b)
	cur.append(b, envs...)
	b.ResetTimer()
	began := time.Now()
	_, pubRun := startPublisher(b, PublisherOptions{URL: srv.ChannelURL("bench"), Framing: framing, Wrap: true}, cur)
	<-done
	elapsed := time.Since(began)
	b.StopTimer()
	pubRun.stop()
	subRun.stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "env/s")
}

func benchRaw(b *testing.B, perSegment bool) {
	var lines [][]byte
	for _, e := range envelopes(b.N) {
		lines = append(lines, append(envelope.WrapTelemetry(nil, e), '\n'))
	}
	srv := newFake(b, trickletest.Options{NoRecord: true, KeepSegments: b.N + 10})
	srv.CreateChannel("bench")
	url := srv.ChannelURL("bench")
	tr := &http.Transport{DialContext: srv.DialContext}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()

	read := make(chan int, 1)
	go func() { // the reader: counts lines
		got := 0
		for seq := 0; got < b.N; seq++ {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/"+strconv.Itoa(seq), nil)
			resp, err := c.Do(req)
			if err != nil {
				break
			}
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				got++
			}
			resp.Body.Close()
		}
		read <- got
	}()
	if err := srv.WaitReaders(ctx, "bench", 1); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	began := time.Now()
	var wg sync.WaitGroup
	if perSegment {
		for i, l := range lines {
			resp, err := c.Post(url+"/"+strconv.Itoa(i), "application/json", bytes.NewReader(l))
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	} else {
		pr, pw := io.Pipe()
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/0", pr)
			req.TransferEncoding = []string{"chunked"}
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		for i := 0; i < len(lines); i += readBatch {
			pw.Write(bytes.Join(lines[i:min(i+readBatch, len(lines))], nil))
		}
		pw.Close()
	}
	got := <-read
	elapsed := time.Since(began)
	b.StopTimer()
	wg.Wait()
	if got != b.N {
		b.Fatalf("read %d lines of %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "env/s")
}
