package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestParseFrame(t *testing.T) {
	tests := []struct {
		name      string
		line      string
		typ       string
		event     string
		wantField string // "" means no error
	}{
		{name: "telemetry", line: `{"type":"telemetry","event":{"id":"a"}}`, typ: "telemetry", event: `{"id":"a"}`},
		{name: "spaces and CR", line: " {\"event\" : {\"id\":\"a\"} , \"type\" : \"telemetry\"}\r", typ: "telemetry", event: `{"id":"a"}`},
		{name: "other type without event", line: `{"type":"runner_ready"}`, typ: "runner_ready"},
		{name: "other type, any event", line: `{"type":"logs","event":[1,2]}`, typ: "logs", event: `[1,2]`},
		{name: "escaped type", line: `{"type":"tele\u006detry","event":{}}`, typ: "telemetry", event: `{}`},
		{name: "escaped key", line: `{"\u0074ype":"logs"}`, typ: "logs"},
		{name: "empty", line: "  ", wantField: "frame"},
		{name: "not JSON", line: `{"type":`, wantField: "frame"},
		{name: "trailing garbage", line: `{"type":"x"} {}`, wantField: "frame"},
		{name: "array", line: `[{"type":"x"}]`, wantField: "frame"},
		{name: "string", line: `"telemetry"`, wantField: "frame"},
		{name: "no type", line: `{"event":{}}`, wantField: "type"},
		{name: "type number", line: `{"type":7}`, wantField: "type"},
		{name: "type null", line: `{"type":null}`, wantField: "type"},
		{name: "type empty", line: `{"type":""}`, wantField: "type"},
		{name: "type case folded", line: `{"Type":"telemetry","event":{}}`, wantField: "type"},
		{name: "type repeated", line: `{"type":"logs","type":"telemetry","event":{}}`, wantField: "type"},
		{name: "telemetry without event", line: `{"type":"telemetry"}`, wantField: "event"},
		{name: "telemetry event string", line: `{"type":"telemetry","event":"{}"}`, wantField: "event"},
		{name: "telemetry event null", line: `{"type":"telemetry","event":null}`, wantField: "event"},
		{name: "event repeated", line: `{"type":"telemetry","event":{},"event":{}}`, wantField: "event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, ev, err := ParseFrame([]byte(tt.line))
			if tt.wantField != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("err = %v, want a FieldError on %q", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if typ != tt.typ || string(ev) != tt.event {
				t.Fatalf("got (%q, %q), want (%q, %q)", typ, ev, tt.typ, tt.event)
			}
		})
	}
}

func TestWrapTelemetryParsesBack(t *testing.T) {
	env := []byte(`{"id":"x","type":"t","timestamp":"1","data":{"a":[1,{"b":"}"}]}}`)
	frame := WrapTelemetry([]byte("prefix:"), env)
	if !bytes.HasPrefix(frame, []byte("prefix:")) {
		t.Fatal("dst not kept")
	}
	typ, ev, err := ParseFrame(frame[len("prefix:"):])
	if err != nil || typ != FrameTelemetry || !bytes.Equal(ev, env) {
		t.Fatalf("ParseFrame(WrapTelemetry) = %q, %q, %v", typ, ev, err)
	}
}

func TestAnnotateRelay(t *testing.T) {
	at := time.UnixMilli(1767908945298)
	const ann = `"relayed_via":"trickle","relay_received_timestamp":"1767908945298"`
	tests := []struct {
		name      string
		env       string
		want      string
		wantField string
	}{
		{
			name: "insert after the last member, bytes kept",
			env:  `{"id":"i1","type":"gpu_memory_sample","timestamp":"1767908945000","gateway":"","data":{"type":"gpu_memory_sample", "n":1.50 }}`,
			want: `{"id":"i1","type":"gpu_memory_sample","timestamp":"1767908945000","gateway":"","data":{"type":"gpu_memory_sample", "n":1.50,` + ann + ` }}`,
		},
		{
			name: "data first, members after it kept",
			env:  `{"data":{"k":"v"},"id":"i","type":"t","timestamp":"1","gateway":"g"}`,
			want: `{"data":{"k":"v",` + ann + `},"id":"i","type":"t","timestamp":"1","gateway":"g"}`,
		},
		{
			name: "empty data",
			env:  `{"id":"i","type":"t","timestamp":"1","data":{ }}`,
			want: `{"id":"i","type":"t","timestamp":"1","data":{` + ann + ` }}`,
		},
		{
			name: "relayed twice: annotation replaced",
			env:  `{"id":"i","type":"t","timestamp":"1","data":{"relayed_via":"x","a":1,"relay_received_timestamp":"5"}}`,
			want: `{"id":"i","type":"t","timestamp":"1","data":{"a":1,` + ann + `}}`,
		},
		{name: "not JSON", env: `{"id":`, wantField: "event"},
		{name: "not object", env: `[]`, wantField: "event"},
		{name: "id missing", env: `{"type":"t","timestamp":"1","data":{}}`, wantField: "event.id"},
		{name: "id empty", env: `{"id":"","type":"t","timestamp":"1","data":{}}`, wantField: "event.id"},
		{name: "id number", env: `{"id":5,"type":"t","timestamp":"1","data":{}}`, wantField: "event.id"},
		{name: "id repeated", env: `{"id":"a","id":"b","type":"t","timestamp":"1","data":{}}`, wantField: "event.id"},
		{name: "type missing", env: `{"id":"i","timestamp":"1","data":{}}`, wantField: "event.type"},
		{name: "type empty", env: `{"id":"i","type":"","timestamp":"1","data":{}}`, wantField: "event.type"},
		{name: "timestamp number", env: `{"id":"i","type":"t","timestamp":1,"data":{}}`, wantField: "event.timestamp"},
		{name: "timestamp not digits", env: `{"id":"i","type":"t","timestamp":"2026-01-01","data":{}}`, wantField: "event.timestamp"},
		{name: "timestamp negative", env: `{"id":"i","type":"t","timestamp":"-1","data":{}}`, wantField: "event.timestamp"},
		{name: "timestamp empty", env: `{"id":"i","type":"t","timestamp":"","data":{}}`, wantField: "event.timestamp"},
		{name: "data missing", env: `{"id":"i","type":"t","timestamp":"1"}`, wantField: "event.data"},
		{name: "data array", env: `{"id":"i","type":"t","timestamp":"1","data":[]}`, wantField: "event.data"},
		{name: "data null", env: `{"id":"i","type":"t","timestamp":"1","data":null}`, wantField: "event.data"},
		{name: "unknown top-level member", env: `{"id":"i","type":"t","timestamp":"1","data":{},"extra":[1]}`, wantField: "event.extra"},
		{name: "timestamp too long", env: `{"id":"i","type":"t","timestamp":"12345678901234567890","data":{}}`, wantField: "event.timestamp"},
		{name: "data repeated", env: `{"id":"i","type":"t","timestamp":"1","data":{},"data":{}}`, wantField: "event.data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := AnnotateRelay([]byte(tt.env), at)
			if tt.wantField != "" {
				var fe *FieldError
				if !errors.As(err, &fe) || fe.Field != tt.wantField {
					t.Fatalf("err = %v, want a FieldError on %q", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != tt.want {
				t.Fatalf("got  %s\nwant %s", out, tt.want)
			}
			checkAnnotated(t, []byte(tt.env), out, at)
		})
	}
}

// checkAnnotated asserts the AnnotateRelay contract on decoded values: out
// is valid JSON; every top-level member but data is equal; data is equal
// except for exactly the two relay members, which hold the expected values.
func checkAnnotated(t testing.TB, in, out []byte, at time.Time) {
	t.Helper()
	var a, b map[string]json.RawMessage
	if err := json.Unmarshal(in, &a); err != nil {
		t.Fatalf("input: %v", err)
	}
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("output is not a JSON object: %v\n%s", err, out)
	}
	da, db := decodeData(t, a["data"]), decodeData(t, b["data"])
	delete(a, "data")
	delete(b, "data")
	if !maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return bytes.Equal(x, y) }) {
		t.Fatalf("top-level members changed:\n in %s\nout %s", in, out)
	}
	if db[KeyRelayedVia] != RelayedVia {
		t.Fatalf("data.relayed_via = %v", db[KeyRelayedVia])
	}
	if db[KeyRelayReceivedTS] != strconv.FormatInt(at.UnixMilli(), 10) {
		t.Fatalf("data.relay_received_timestamp = %v", db[KeyRelayReceivedTS])
	}
	delete(da, KeyRelayedVia)
	delete(da, KeyRelayReceivedTS)
	delete(db, KeyRelayedVia)
	delete(db, KeyRelayReceivedTS)
	if !reflect.DeepEqual(da, db) {
		t.Fatalf("data changed beyond the annotation:\n in %s\nout %s", in, out)
	}
}

func decodeData(t testing.TB, raw json.RawMessage) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("data: %v", err)
	}
	return m
}

func FuzzParseFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"telemetry","event":{"id":"a","type":"t","timestamp":"1","data":{}}}`,
		`{"type":"runner_ready"}`,
		`{"type":"tele\u006detry","event":{}}`,
		`{"type":"telemetry","event":{},"event":{}}`,
		`{"Type":"x"}`,
		` {"type" : "logs" , "event" : [ 1 , "]" ] } `,
		`[1]`,
		`{"type":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		typ, ev, err := ParseFrame(line)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("error %v is not a FieldError naming a field", err)
			}
			return
		}
		if typ == "" {
			t.Fatal("accepted an empty type")
		}
		// Agree with encoding/json on what the line says.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("accepted a line encoding/json rejects: %v", err)
		}
		var want string
		if err := json.Unmarshal(m["type"], &want); err != nil || want != typ {
			t.Fatalf("type %q, encoding/json says %q (%v)", typ, want, err)
		}
		if ev == nil {
			if _, ok := m["event"]; ok {
				t.Fatal("event present but not returned")
			}
		} else if !bytes.Equal(ev, m["event"]) {
			t.Fatalf("event %q, encoding/json says %q", ev, m["event"])
		}
		if typ == FrameTelemetry && (len(ev) == 0 || ev[0] != '{') {
			t.Fatalf("telemetry event %q is not an object", ev)
		}
	})
}

func FuzzAnnotateRelay(f *testing.F) {
	for _, s := range []string{
		`{"id":"i1","type":"gpu_memory_sample","timestamp":"1767908945000","gateway":"","data":{"type":"gpu_memory_sample","n":1}}`,
		`{"data":{},"id":"i","type":"t","timestamp":"0"}`,
		`{"id":"i","type":"t","timestamp":"1","data":{"relayed_via":"x","relay_received_timestamp":"2","k":[{"a":"}"}]}}`,
		`{"id":"\u0069","type":"t","timestamp":"\u0031","data":{"\u0072elayed_via":1}}`,
		`{"id":"i","type":"t","timestamp":"1x","data":{}}`,
		`{"id":"i","id":"j","type":"t","timestamp":"1","data":{}}`,
		`{"id":"i","type":"t","timestamp":"1","data":[]}`,
	} {
		f.Add([]byte(s), int64(1767908945298))
	}
	f.Fuzz(func(t *testing.T, env []byte, ms int64) {
		at := time.UnixMilli(ms)
		out, _, err := AnnotateRelay(env, at)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("error %v is not a FieldError naming a field", err)
			}
			return
		}
		var e struct {
			ID        *string         `json:"id"`
			Type      *string         `json:"type"`
			Timestamp *string         `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(out, &e); err != nil {
			t.Fatalf("output is not JSON: %v\n%s", err, out)
		}
		checkAnnotated(t, env, out, at)
		// The output is itself acceptable, and annotating again changes
		// nothing but the annotation.
		again, _, err := AnnotateRelay(out, at)
		if err != nil {
			t.Fatalf("annotated envelope rejected: %v", err)
		}
		checkAnnotated(t, out, again, at)
	})
}

func TestGatewayFrame(t *testing.T) {
	envs := [][]byte{
		[]byte(`{"id":"a","type":"gpu_memory_sample","timestamp":"1","gateway":"","data":{"gpu_id":"GPU-1"}}`),
		[]byte(`{"id":"b","type":"gpu_memory_sample","timestamp":"2","gateway":"","data":{"gpu_id":"GPU-2"}}`),
	}
	frame := AppendGatewayFrame(nil, "gpu_memory_sample", envs)
	if len(frame) != GatewayFrameLen("gpu_memory_sample", len(envs), len(envs[0])+len(envs[1])) {
		t.Fatalf("GatewayFrameLen is %d, the frame %d", GatewayFrameLen("gpu_memory_sample", 2, len(envs[0])+len(envs[1])), len(frame))
	}
	// The go-livepeer gateway's parse: {queue_event_type, event} into a map.
	var w struct {
		QueueEventType string         `json:"queue_event_type"`
		Event          map[string]any `json:"event"`
	}
	if err := json.Unmarshal(frame, &w); err != nil {
		t.Fatal(err)
	}
	if w.QueueEventType != QueueEventType || w.Event["type"] != "gpu_memory_sample" || len(w.Event["envelopes"].([]any)) != 2 {
		t.Fatalf("gateway reads %+v", w)
	}
	got, ok := ParseGatewayFrame(frame)
	if !ok || len(got) != 2 || !bytes.Equal(got[0], envs[0]) || !bytes.Equal(got[1], envs[1]) {
		t.Fatalf("ParseGatewayFrame = %q, %v", got, ok)
	}
	for _, doc := range []string{`{"type":"telemetry","event":{}}`, `{"queue_event_type":"x","event":{"type":"status"}}`, `[]`} {
		if _, ok := ParseGatewayFrame([]byte(doc)); ok {
			t.Errorf("%s taken for a gateway frame", doc)
		}
	}
	if typ, ok := TypeOf(envs[1]); !ok || typ != "gpu_memory_sample" {
		t.Errorf("TypeOf = %q, %v", typ, ok)
	}
}
