//go:build linux

package agent

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/hostnet/netnstest"
	"github.com/livepeer/edgerelay/agent/naap/naaptest"
)

const (
	testOrchAddr = "0x9727b492c4af6c4a8caf4cc1ba6fbb332206d794"
	testOrchURL  = "https://orch.example.net:8935"
)

// TestStreamBandwidth: two runners, each in a real network namespace of its
// own, carry known traffic; each session's stream_bandwidth_samples add up
// to within 5% of what it sent and received, and carry the session's
// dimensions in a shape the analytics pipeline ingests.
func TestStreamBandwidth(t *testing.T) {
	nsA, nsB := netnstest.New(t, 3), netnstest.New(t, 4)
	r := startAgent(t, testEnv(t, map[string]string{
		"EDGERELAY_SAMPLE_INTERVAL": "100ms", "EDGERELAY_PROCESS_INTERVAL": "100ms",
		"EDGERELAY_NAAP": "on", "EDGERELAY_ORCHESTRATOR_ADDRESS": "0x9727B492c4af6c4a8caf4cc1ba6fbb332206d794",
		"EDGERELAY_ORCHESTRATOR_URL": testOrchURL,
	}))
	sessions := []struct {
		id       string
		ns       *netnstest.NS
		up, down int
	}{{"sess-a", nsA, 6 << 20, 2 << 20}, {"sess-b", nsB, 1 << 20, 5 << 20}}
	for i, s := range sessions {
		body := fmt.Sprintf(`{"session_id":%q,"stream_id":"stream-%d","request_id":"req-%d","pipeline":"live-video-to-video","model_id":"streamdiffusion","gpu_id":"GPU-5e1d0000-0000-4000-8000-00000000000%d","pid":%d}`, s.id, i, i, i, s.ns.PID)
		if code, _ := r.post(t, "/v1/sessions", body); code != http.StatusCreated {
			t.Fatalf("attach %s: %d", s.id, code)
		}
	}
	type sample struct {
		at       int64
		up, down uint64
		data     map[string]any
		raw      []byte
		session  string
	}
	samples := func() map[string][]sample {
		out := map[string][]sample{}
		for _, l := range r.out.Lines() {
			var e struct {
				Timestamp string
				Data      map[string]any
			}
			json.Unmarshal([]byte(l), &e)
			if e.Data["type"] != "stream_bandwidth_sample" {
				continue
			}
			at, _ := strconv.ParseInt(e.Timestamp, 10, 64)
			sid, _ := e.Data["session_id"].(string)
			up, _ := e.Data["up_bytes"].(float64)
			down, _ := e.Data["down_bytes"].(float64)
			out[sid] = append(out[sid], sample{at: at, up: uint64(up), down: uint64(down), data: e.Data, raw: []byte(l), session: sid})
		}
		return out
	}
	// A first sample of each session: its baseline was read before the traffic.
	waitUntil(t, "a first stream_bandwidth_sample of each session", func() bool {
		s := samples()
		return len(s["sess-a"]) > 0 && len(s["sess-b"]) > 0
	})
	for _, s := range sessions {
		s.ns.Exchange(t, s.up, s.down)
	}
	done := time.Now().UnixMilli()
	// Two samples stamped after the traffic: the second was read after it.
	waitUntil(t, "two samples of each session after the traffic", func() bool {
		all := samples()
		for _, s := range sessions {
			n := 0
			for _, x := range all[s.id] {
				if x.at > done {
					n++
				}
			}
			if n < 2 {
				return false
			}
		}
		return true
	})
	ingest := naaptest.NewIngest()
	all := samples()
	for i, s := range sessions {
		var up, down uint64
		for _, x := range all[s.id] {
			up += x.up
			down += x.down
			rec, why := ingest.Take(x.raw)
			if why != "" {
				t.Fatalf("the pipeline would not take it (%s): %s", why, x.raw)
			}
			if rec.Family != "ai_stream_events" || rec.Subtype != "stream_bandwidth_sample" {
				t.Errorf("recorded as %s/%s", rec.Family, rec.Subtype)
			}
			if p := naaptest.Dimensions(rec.Data, true, true); len(p) > 0 {
				t.Errorf("%s: %v", s.id, p)
			}
			if x.data["stream_id"] != fmt.Sprintf("stream-%d", i) || x.data["request_id"] != fmt.Sprintf("req-%d", i) ||
				x.data["gpu_id"] != fmt.Sprintf("GPU-5e1d0000-0000-4000-8000-00000000000%d", i) || x.data["orchestrator_address"] != testOrchAddr {
				t.Errorf("%s: dimensions %v", s.id, x.data)
			}
		}
		t.Logf("%s: %d samples; up %d bytes for %d sent (%+.2f%%), down %d bytes for %d sent (%+.2f%%)", s.id, len(all[s.id]),
			up, s.up, 100*(float64(up)/float64(s.up)-1), down, s.down, 100*(float64(down)/float64(s.down)-1))
		if e := math.Abs(float64(up)/float64(s.up) - 1); e > 0.05 {
			t.Errorf("%s: up off by %.1f%%", s.id, 100*e)
		}
		if e := math.Abs(float64(down)/float64(s.down) - 1); e > 0.05 {
			t.Errorf("%s: down off by %.1f%%", s.id, 100*e)
		}
	}
}
