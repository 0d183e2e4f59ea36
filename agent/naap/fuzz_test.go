package naap

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	"github.com/livepeer/edgerelay/agent/naap/naaptest"
	"github.com/livepeer/edgerelay/envelope"
)

// FuzzStampMapped: whatever item Prepare accepts in NAAP mode, a prebuilt
// envelope comes out byte for byte (compacted onto one line), and a stamped
// event comes out as the general path (Stamp) writes it, whatever path
// Prepare took: an envelope that passes Check, under an accepted family,
// with its native family as Prepared.Type, a lower-case address and an
// orchestrator_info that names it; the pipeline's ingest refuses it only for
// what the producer put in data. Seeds are committed under
// testdata/fuzz/FuzzStampMapped/.
func FuzzStampMapped(f *testing.F) {
	o := testOptions(Options{OrchestratorAddress: testAddr, OrchestratorURL: testURL, Region: "eu-west"})
	s := envelope.NewStamper(o)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if envelope.Validate(raw) != nil {
			return
		}
		p, err := s.Prepare(raw)
		if err != nil {
			return
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(raw, &top); err != nil {
			t.Fatalf("Prepare accepted what is not an object: %s", raw)
		}
		if _, ok := top["id"]; ok {
			want := raw
			if bytes.ContainsAny(raw, "\n\r") {
				var b bytes.Buffer
				json.Compact(&b, raw)
				want = b.Bytes()
			}
			if !bytes.Equal(p.Env, want) {
				t.Fatalf("a prebuilt envelope changed:\n%s\n%s", raw, p.Env)
			}
			return
		}

		// The general path: Stamp of the decoded event, as prepareSlow
		// calls it.
		var typ, sid string
		var data map[string]json.RawMessage
		if json.Unmarshal(top["type"], &typ) != nil || json.Unmarshal(top["data"], &data) != nil {
			t.Fatalf("Prepare stamped an event without a type and data: %s", raw)
		}
		fields := make(map[string]any, len(data))
		for k, v := range data {
			fields[k] = v
		}
		json.Unmarshal(data["session_id"], &sid)
		var sess envelope.Identity
		if sid != "" {
			sess = o.Session(sid)
		}
		gen, err := s.Stamp(typ, fields, sess)
		if err != nil {
			t.Fatalf("Stamp refuses what Prepare stamped: %v\n%s", err, raw)
		}
		if afterID(p.Env) != afterID(gen) {
			t.Fatalf("Prepare and Stamp differ:\nprepare %s\nstamp   %s", p.Env, gen)
		}

		if _, err := envelope.Check(p.Env); err != nil {
			t.Fatalf("mapped envelope fails Check: %v\n%s", err, p.Env)
		}
		if p.Type != typ {
			t.Fatalf("Prepared.Type %q, want the native family %q", p.Type, typ)
		}
		rec, why := naaptest.NewIngest().Take(p.Env)
		switch why {
		case "", naaptest.BadVersion: // data.version is the producer's
		case naaptest.TraceNonCoreApp, naaptest.TraceScopeNoise, naaptest.TraceUnsupportedType, naaptest.Malformed:
			if typ != "stream_trace" { // a stream_trace's subtype and ids are the producer's
				t.Fatalf("the pipeline refuses it (%s): %s", why, p.Env)
			}
			return
		default:
			t.Fatalf("the pipeline refuses it (%s): %s", why, p.Env)
		}
		if why != "" {
			return
		}
		if Accepted(typ) != (rec.Family == typ) || !Accepted(rec.Family) {
			t.Fatalf("family %q recorded as %q", typ, rec.Family)
		}
		var out env
		if err := json.Unmarshal(p.Env, &out); err != nil {
			t.Fatal(err)
		}
		var addr string
		if json.Unmarshal(out.Data["orchestrator_address"], &addr) == nil && addr != "" {
			if slices.ContainsFunc([]byte(string(out.Data["orchestrator_address"])), func(c byte) bool { return 'A' <= c && c <= 'Z' }) {
				t.Fatalf("orchestrator_address not lower-cased: %s", p.Env)
			}
		}
		if _, own := data["orchestrator_info"]; own {
			return
		}
		var info struct{ Address, URL *string }
		if raw, ok := out.Data["orchestrator_info"]; ok {
			if err := json.Unmarshal(raw, &info); err != nil {
				t.Fatalf("orchestrator_info %s: %v", raw, err)
			}
		}
		if info.Address != nil && *info.Address != addr {
			t.Fatalf("orchestrator_info.address %q, orchestrator_address %q: %s", *info.Address, addr, p.Env)
		}
		if info.URL != nil && (*info.URL != testURL || (info.Address != nil && *info.Address != lowAddr)) {
			t.Fatalf("the node's url with another address: %s", p.Env)
		}
	})
}
