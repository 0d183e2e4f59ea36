package ingest

import (
	"strings"
	"testing"

	"github.com/livepeer/edgerelay/envelope"
)

// TestFramesSplitAsDeepAsParseFrame: /frames takes every frame that
// envelope.ParseFrame (the channel's reader of it) takes, however deep its
// envelope, and events keep their own limit.
func TestFramesSplitAsDeepAsParseFrame(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }
	// An envelope of MaxDepth levels (data at level 2), in a telemetry frame.
	env := `{"id":"a","type":"t","timestamp":"1","data":{"x":` + deep(envelope.MaxDepth-2) + `}}`
	frame := `{"type":"telemetry","event":` + env + `}`
	if _, _, err := envelope.ParseFrame([]byte(frame)); err != nil {
		t.Fatalf("ParseFrame: %v", err)
	}
	if err := envelope.Validate([]byte(env)); err != nil {
		t.Fatalf("the envelope itself is within MaxDepth: %v", err)
	}
	for _, body := range []string{frame, "[" + frame + "," + frame + "]", frame + "\n" + frame} {
		items, err := split([]byte(body), frameRules)
		if err != nil {
			t.Fatalf("split: %v", err)
		}
		for i, it := range items {
			if it.err != nil {
				t.Errorf("%.20s…: frame %d refused: %v", body, i, it.err)
			}
		}
	}
	// The same bytes as an event are one level too deep for the event rules.
	items, err := splitItems([]byte("[" + frame + "]"))
	if err != nil || len(items) != 1 || items[0].err == nil || !strings.Contains(items[0].err.Error(), "nested deeper") {
		t.Errorf("as an event, a frame %d levels deep: %v %+v", envelope.MaxDepth+1, err, items)
	}
}
