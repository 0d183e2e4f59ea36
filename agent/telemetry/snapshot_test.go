package telemetry

import (
	"encoding/json"
	"testing"
)

func TestDecodeSnapshot(t *testing.T) {
	t.Run("valid", func(t *testing.T) {
		s, err := DecodeSnapshot([]byte(`{"pid":4242,"gpu_uuid":"GPU-a","device_index":1,"session_id":"s",
			"stats":{"allocated_bytes.all.current":9007199254740993,"reserved_bytes.all.current":2,"num_ooms":0},
			"env":{"RANK":"0","PIPELINE":"live-video-to-video"}}`))
		if err != nil {
			t.Fatal(err)
		}
		if *s.PID != 4242 || s.GPUUUID != "GPU-a" || *s.DeviceIndex != 1 || s.SessionID != "s" ||
			s.Stats[StatAllocated] != "9007199254740993" || s.Stats["num_ooms"] != "0" || s.Env["PIPELINE"] != "live-video-to-video" {
			t.Fatalf("snapshot %+v", s)
		}
	})
	t.Run("minimal by index", func(t *testing.T) {
		s, err := DecodeSnapshot([]byte(`{"device_index":0,"stats":{"allocated_bytes.all.current":1,"reserved_bytes.all.current":2},"pid":null,"env":null}`))
		if err != nil {
			t.Fatal(err)
		}
		if s.PID != nil || s.GPUUUID != "" || *s.DeviceIndex != 0 || s.Env != nil {
			t.Fatalf("snapshot %+v", s)
		}
	})
	const stats = `"stats":{"allocated_bytes.all.current":1,"reserved_bytes.all.current":2}`
	cases := []struct{ name, body, err string }{
		{"unknown fields sorted", `{"gpu_uuid":"g",` + stats + `,"zz":1,"aa":2}`, "unknown fields: aa, zz"},
		{"pid zero", `{"pid":0,"gpu_uuid":"g",` + stats + `}`, "pid: must be >= 1, got 0"},
		{"pid boolean", `{"pid":true,"gpu_uuid":"g",` + stats + `}`, "pid: must be an integer, got a boolean"},
		{"pid fraction", `{"pid":1.5,"gpu_uuid":"g",` + stats + `}`, "pid: must be an integer, got a number with a fraction or exponent (1.5)"},
		{"device_index negative", `{"device_index":-1,` + stats + `}`, "device_index: must be >= 0, got -1"},
		{"no gpu", `{` + stats + `}`, "gpu_uuid, device_index: one of them is required"},
		{"gpu_uuid blank", `{"gpu_uuid":" ",` + stats + `}`, `gpu_uuid: must be a non-empty string, got " "`},
		{"session number", `{"gpu_uuid":"g","session_id":1,` + stats + `}`, `session_id: must be a non-empty string, got 1`},
		{"no stats", `{"gpu_uuid":"g"}`, "stats: required, an object of torch.cuda.memory_stats() values"},
		{"stats array", `{"gpu_uuid":"g","stats":[]}`, "stats: must be an object, got an array"},
		{"stats missing keys", `{"gpu_uuid":"g","stats":{"num_ooms":1}}`, "stats.allocated_bytes.all.current: required; stats.reserved_bytes.all.current: required"},
		{"stats float", `{"gpu_uuid":"g","stats":{"allocated_bytes.all.current":1.5,"reserved_bytes.all.current":2}}`, "stats.allocated_bytes.all.current: must be an integer, got a number with a fraction or exponent (1.5)"},
		{"stats boolean", `{"gpu_uuid":"g","stats":{"allocated_bytes.all.current":1,"reserved_bytes.all.current":2,"x":false}}`, "stats.x: must be an integer, got a boolean"},
		{"stats negative", `{"gpu_uuid":"g","stats":{"allocated_bytes.all.current":-1,"reserved_bytes.all.current":2}}`, "stats.allocated_bytes.all.current: must be >= 0, got -1"},
		{"env not strings", `{"gpu_uuid":"g",` + stats + `,"env":{"WORLD_SIZE":2,"RANK":true}}`, "env.RANK: must be a string, got a boolean; env.WORLD_SIZE: must be a string, got a number"},
		{"env array", `{"gpu_uuid":"g",` + stats + `,"env":[]}`, "env: must be an object of strings, got an array"},
		{"not an object", `[1]`, "snapshot: record must be a JSON object, got an array"},
		{"trailing data", `{"gpu_uuid":"g",` + stats + `} 1`, "snapshot: invalid JSON: invalid character '1' after the value at byte 90"},
		{"several", `{"pid":-3,"stats":{},"x":1}`, "unknown fields: x; pid: must be >= 1, got -3; gpu_uuid, device_index: one of them is required; stats.allocated_bytes.all.current: required; stats.reserved_bytes.all.current: required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeSnapshot([]byte(tc.body))
			if err == nil || err.Error() != tc.err {
				t.Fatalf("err = %v\nwant %s", err, tc.err)
			}
		})
	}
	var _ = json.Number("")
}
