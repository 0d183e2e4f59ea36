package agent

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/livepeer/edgerelay/agent/ingest"
)

// TestRequestLimitsAgree: on an idle agent, a body that the size limits
// accept is all accepted, or refused whole with 413 naming the limit, never
// partly refused for a full ring.
func TestRequestLimitsAgree(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	// n small events of 55 bytes each: 75,000 of them make 4 MiB.
	body := func(n int) string {
		var b strings.Builder
		for i := range n {
			line := fmt.Sprintf("{\"type\":\"s\",\"data\":{\"i\":%d,\"p\":\"\"}}\n", i)
			line = strings.Replace(line, `""`, `"`+strings.Repeat("p", 55-len(line))+`"`, 1)
			b.WriteString(line)
		}
		return b.String()
	}
	big := body(75000)
	if len(big) > 4<<20 || len(big) < 4<<20-200000 {
		t.Fatalf("the body is %d bytes, not about 4 MiB", len(big))
	}
	code, ans := r.post(t, "/v1/events", big)
	if code != http.StatusRequestEntityTooLarge || ans.Accepted != 0 || ans.Limit == nil ||
		*ans.Limit != (ingest.Limit{Name: "EDGERELAY_RING_MAX_EVENTS", Unit: "events", Max: 25000, Got: 75000}) ||
		!strings.Contains(ans.Error, "75000 events is over the limit of 25000 per request") {
		t.Fatalf("75,000 events: %d %+v", code, ans)
	}
	t.Logf("%d bytes, 75,000 events: %d %s", len(big), code, ans.Error)
	code, ans = r.post(t, "/v1/events", body(25000))
	if code != http.StatusAccepted || ans.Accepted != 25000 || len(ans.Rejected) != 0 {
		t.Fatalf("25,000 events: %d accepted %d, rejected %d (first %+v)", code, ans.Accepted, len(ans.Rejected), ans.Rejected[:min(1, len(ans.Rejected))])
	}
	if got := r.a.Report().Dropped["ring"]["ring_full"]; got != 0 {
		t.Errorf("ring_full %d on an idle agent", got)
	}

	// The ring's byte cap applies the same way, to the events once stamped.
	r = startAgent(t, testEnv(t, map[string]string{"EDGERELAY_RING_MAX_BYTES": "65536"}))
	code, ans = r.post(t, "/v1/events", body(300)) // ~9 KB sent, ~40 KB stamped
	if code != http.StatusRequestEntityTooLarge || ans.Limit == nil || ans.Limit.Name != "EDGERELAY_RING_MAX_BYTES" || ans.Limit.Max != 32768 ||
		!strings.Contains(ans.Error, "bytes once stamped is over the limit of 32768 per request") {
		t.Fatalf("over the ring's bytes: %d %+v", code, ans)
	}
}
