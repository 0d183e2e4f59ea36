package naap

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/livepeer/edgerelay/envelope"
)

// FuzzMap: whatever checked envelope comes in, the result is a checked
// envelope with the same id and timestamp, at most Growth bytes longer,
// and mapping it again changes nothing. Seeds are committed under
// testdata/fuzz/FuzzMap/.
func FuzzMap(f *testing.F) {
	m := testMapper()
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := envelope.Check(in)
		if err != nil {
			return
		}
		out := m.Map(in)
		if len(out) > len(in)+m.Growth() {
			t.Fatalf("grew by %d, Growth %d:\n%s\n%s", len(out)-len(in), m.Growth(), in, out)
		}
		c2, err := envelope.Check(out)
		if err != nil {
			t.Fatalf("mapped envelope fails Check: %v\n%s\n%s", err, in, out)
		}
		if c2.ID != c.ID || c2.SessionID != c.SessionID {
			t.Fatalf("id or session changed:\n%s\n%s", in, out)
		}
		var a, b struct{ Timestamp string }
		json.Unmarshal(in, &a)
		json.Unmarshal(out, &b)
		if a.Timestamp != b.Timestamp {
			t.Fatalf("timestamp changed:\n%s\n%s", in, out)
		}
		if again := m.Map(out); !bytes.Equal(again, out) {
			t.Fatalf("not idempotent:\n%s\n%s", out, again)
		}
	})
}
