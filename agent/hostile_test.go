package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/livepeer/edgerelay/agent/ingest"
	"github.com/livepeer/edgerelay/envelope"
)

// TestHostileInput: each hostile item of issue 17 is refused at the door,
// over HTTP and in a WebSocket text frame, with an error naming where it is
// and what is wrong; nothing of it reaches a sink, and what was sent beside
// it is accepted.
func TestHostileInput(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	deepData := strings.Repeat(`{"a":`, 9989) + "1" + strings.Repeat("}", 9989) // 9,990 levels with the event
	env := func(id, data string) string {
		return `{"id":"` + id + `","type":"t","timestamp":"1767908945298","data":` + data + `}`
	}
	cases := []struct {
		name string
		item string
		want string // in the rejection
	}{
		{"invalid UTF-8 in an event", "{\"type\":\"a\",\"data\":{\"note\":\"caf\xe9\"}}", "data.note: invalid UTF-8 (byte 0xe9"},
		{"invalid UTF-8 in an envelope", env("u1", "{\"note\":\"\xff\"}"), "data.note: invalid UTF-8 (byte 0xff"},
		{"invalid UTF-8 in a key", "{\"type\":\"a\",\"data\":{\"\xc3\x28\":1}}", "data: invalid UTF-8 (byte 0xc3"},
		{"UTF-8 encoded surrogate", env("u2", "{\"s\":\"\xed\xa0\x80\"}"), "data.s: invalid UTF-8 (byte 0xed"},
		{"lone surrogate escape", `{"type":"a","data":{"s":"\udc00"}}`, `data.s: invalid string: \udc00 is half of a UTF-16 surrogate pair`},
		{"repeated id", `{"id":"a","id":"b","type":"t","timestamp":"1","data":{}}`, "id: repeated"},
		{"repeated id, escaped", `{"id":"a","\u0069d":"b","type":"t","timestamp":"1","data":{}}`, "id: repeated"},
		{"repeated type in an event", `{"type":"a","type":"b","data":{}}`, "type: repeated"},
		{"repeated timestamp", `{"id":"r1","type":"t","timestamp":"1","timestamp":"2","data":{}}`, "timestamp: repeated"},
		{"repeated key deep in an envelope", env("r2", `{"x":[{"k":1,"k":2}]}`), "data.x[0].k: repeated"},
		{"repeated key in event data", `{"type":"a","data":{"k":1,"k":2}}`, "data.k: repeated"},
		{"100,000-digit integer", `{"type":"a","data":{"n":` + strings.Repeat("9", 100000) + `}}`, "data.n: number 9999999999999999… (100000 characters) is out of range"},
		{"1e999999999", env("n1", `{"n":1e999999999}`), "data.n: number 1e999999999 is out of range"},
		{"-1e400 in an event", `{"type":"a","data":{"n":-1e400}}`, "data.n: number -1e400 is out of range"},
		{"9,990 levels", `{"type":"a","data":` + deepData + `}`, "data.a.a.a.a.a.a.a… (64 steps): nested deeper than 64 levels"},
		{"id over 128 bytes", env(strings.Repeat("i", 129), `{}`), "id: 129 bytes is over the limit of 128"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, strings.Replace(r.base, "http", "ws", 1)+"/v1/stream", &websocket.DialOptions{HTTPClient: testClient})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(1 << 20)
	for _, tc := range cases {
		t.Run(tc.name+"/http", func(t *testing.T) {
			code, ans := r.post(t, "/v1/events", tc.item)
			if code != http.StatusBadRequest || len(ans.Rejected) != 1 || !strings.Contains(ans.Rejected[0].Error, tc.want) {
				t.Fatalf("got %d %+v, want 400 with %q", code, ans, tc.want)
			}
			t.Logf("%d %s", code, ans.Rejected[0].Error)
		})
		t.Run(tc.name+"/websocket", func(t *testing.T) {
			if err := ws.Write(ctx, websocket.MessageText, []byte(tc.item)); err != nil {
				t.Fatal(err)
			}
			_, raw, err := ws.Read(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var ans struct {
				Status int `json:"status"`
				ingest.Answer
			}
			json.Unmarshal(raw, &ans)
			if ans.Status != http.StatusBadRequest || len(ans.Rejected) != 1 || !strings.Contains(ans.Rejected[0].Error, tc.want) {
				t.Fatalf("got %s, want 400 with %q", raw, tc.want)
			}
		})
	}
	// One hostile line among good ones rejects itself alone, by its line.
	good := []string{`{"type":"good","data":{"i":1}}`, env("good-2", `{"n":1.5e300,"s":"\ud83d\ude00"}`)}
	code, ans := r.post(t, "/v1/events", good[0]+"\n"+`{"type":"a","data":{"k":1,"k":2}}`+"\n"+good[1])
	if code != http.StatusAccepted || ans.Accepted != 2 || len(ans.Rejected) != 1 || ans.Rejected[0].Index != 1 ||
		!strings.Contains(ans.Rejected[0].Error, "line 2: data.k: repeated") {
		t.Fatalf("mixed body: %d %+v", code, ans)
	}
	// And in an array, by its index.
	code, ans = r.post(t, "/v1/events", `[{"type":"good","data":{"i":3}},`+env("bad", `{"n":1e999}`)+`]`)
	if code != http.StatusAccepted || ans.Accepted != 1 || len(ans.Rejected) != 1 || ans.Rejected[0].Index != 1 ||
		!strings.Contains(ans.Rejected[0].Error, "data.n: number 1e999 is out of range") {
		t.Fatalf("mixed array: %d %+v", code, ans)
	}
	// Only the three good events reached the sink, each valid.
	lines := r.waitLines(t, 3)
	waitUntil(t, "the sink to settle", func() bool { return r.a.Report().Sinks["stdout"].Delivered == 3 })
	if lines = r.out.Lines(); len(lines) != 3 || lines[1] != good[1] {
		t.Fatalf("stdout:\n%s", strings.Join(lines, "\n"))
	}
	for _, l := range lines {
		if err := envelope.Validate([]byte(l)); err != nil {
			t.Errorf("a sink got %s: %v", l, err)
		}
	}
	rep := r.a.Report()
	if rep.Rejected["api"] != uint64(len(cases)+2) || rep.Rejected["stream"] != uint64(len(cases)) {
		t.Errorf("rejected %v, want api %d, stream %d", rep.Rejected, len(cases)+2, len(cases))
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

// TestHostileTelemetry: stormlog records and allocator snapshots are decoded
// and stamped anew, so their bytes never reach a sink; what the decoder
// would read silently otherwise (a repeated key, as its last value) is
// refused the same way, Python's NaN still taken. (The decoder refuses
// invalid UTF-8 itself.)
func TestHostileTelemetry(t *testing.T) {
	r := startAgent(t, testEnv(t, nil))
	rec := `{"schema_version":3,"session_id":"s1","timestamp_ns":1767908945298000000,"event_type":"sample","collector":"stormlog.cuda_tracker","sampling_interval_ms":100,"pid":4242,"host":"runner-a","device_id":0,"allocator_allocated_bytes":1,"allocator_reserved_bytes":2,"allocator_active_bytes":null,"allocator_inactive_bytes":null,"allocator_change_bytes":0,"device_used_bytes":3,"device_free_bytes":null,"device_total_bytes":null,"context":null,"metadata":{"m":NaN},"job_id":null,"rank":0,"local_rank":0,"world_size":1}`
	snap := `{"device_index":0,"pid":5,"stats":{"allocated_bytes.all.current":10,"reserved_bytes.all.current":20}}`
	for _, tc := range []struct {
		name, path, body, want string
	}{
		{"repeated pid in a record", "/v1/telemetry", strings.Replace(rec, `"pid":4242`, `"pid":4242,"pid":7`, 1), "pid: repeated"},
		{"invalid UTF-8 in a record", "/v1/telemetry", strings.Replace(rec, `runner-a`, "runner-\xff", 1), "invalid UTF-8 in a string at byte 184"},
		{"repeated key in metadata", "/v1/telemetry", strings.Replace(rec, `{"m":NaN}`, `{"k":1,"k":2}`, 1), "metadata.k: repeated"},
		{"repeated pid in a snapshot", "/v1/allocator", strings.Replace(snap, `"pid":5`, `"pid":5,"pid":6`, 1), "pid: repeated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, ans := r.post(t, tc.path, tc.body)
			all := ans.Error
			for _, rej := range ans.Rejected {
				all += " | " + rej.Error
			}
			if code != http.StatusBadRequest || !strings.Contains(all, tc.want) {
				t.Fatalf("got %d %+v, want 400 with %q", code, ans, tc.want)
			}
		})
	}
	if code, ans := r.post(t, "/v1/telemetry", rec); code != http.StatusAccepted {
		t.Fatalf("a record with Python's NaN: %d %+v", code, ans)
	}
	lines := r.waitLines(t, 1)
	if len(lines) != 1 || envelope.Validate([]byte(lines[0])) != nil {
		t.Fatalf("stdout: %q", lines)
	}
}
