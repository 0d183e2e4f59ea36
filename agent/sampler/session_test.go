//go:build linux && cgo

package sampler

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/livepeer/edgerelay/agent/session"
	"github.com/livepeer/edgerelay/nvml"
)

// writeStat writes <root>/<pid>/stat for a process whose parent is ppid.
func writeStat(t *testing.T, root string, pid, ppid int, comm string) {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194560 100 0 0 0 5 1 0 0 20 0 1 0 100 1000 10 18446744073709551615\n", pid, comm, ppid, ppid, ppid)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestGPUSessions: every sample of a GPU that serves a session carries the
// session (the agent adds its identity from session_id) and gpu_idle false;
// a GPU without one says gpu_idle true. A GPU serves a session when it was
// attached with the GPU's UUID, or when one of the GPU's processes is the
// session's runner or descends from it; the session then takes the GPU as
// its gpu_id.
func TestGPUSessions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		proc := t.TempDir()
		// GPU 0: the sim's process 10000 is a worker of runner 500
		// (500 -> 400 -> 1). GPU 1: process 10001 of no session. GPU 2:
		// attached by UUID. GPU 3: process 10003 is runner 600 itself.
		writeStat(t, proc, 10000, 500, "python3 (worker) x")
		writeStat(t, proc, 500, 400, "python3")
		writeStat(t, proc, 400, 1, "containerd-shim")
		writeStat(t, proc, 10001, 1, "other")
		writeStat(t, proc, 10003, 42, "runner")
		reg := session.New(session.Options{})
		attach := func(s *session.Session) {
			s.Attached = time.Now()
			if err := reg.Attach(s); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond) // distinct attach times
		}
		attach(&session.Session{SessionID: "by-pid", PID: 500, StreamID: "st-a"})
		attach(&session.Session{SessionID: "by-uuid", GPUID: nvml.SimUUID(2), StreamID: "st-b"})
		attach(&session.Session{SessionID: "runner-itself", PID: 10003})
		attach(&session.Session{SessionID: "elsewhere", PID: 999})
		sessionFor := func(uuid string, pids []int) string {
			if s, ok := reg.ForGPU(uuid, pids); ok {
				return s.SessionID
			}
			return ""
		}
		h := start(t, Options{ProcRoot: proc, SessionFor: sessionFor})
		defer h.stop()
		// The first tick comes before the first process list (in the agent,
		// before any session can attach): only GPU 2's session is known.
		var firstTick, procSamples []map[string]any
		for _, e := range h.rec.all() {
			switch e.typ {
			case TypeMemory:
				firstTick = append(firstTick, e.data)
			case TypeProcess:
				procSamples = append(procSamples, e.data)
			}
		}
		first := byGPU(firstTick)
		if first[nvml.SimUUID(2)]["session_id"] != "by-uuid" || first[nvml.SimUUID(2)]["gpu_idle"] != false {
			t.Errorf("first tick, GPU 2: %v %v", first[nvml.SimUUID(2)]["session_id"], first[nvml.SimUUID(2)]["gpu_idle"])
		}
		h.after(3 * time.Second)
		want := map[string]string{nvml.SimUUID(0): "by-pid", nvml.SimUUID(2): "by-uuid", nvml.SimUUID(3): "runner-itself"}
		samples := h.rec.take(TypeMemory)
		if len(samples) != 24 {
			t.Fatalf("%d samples over 3 ticks, want 24", len(samples))
		}
		runID := ""
		for _, d := range samples {
			gpu := d["gpu_id"].(string)
			sid, _ := d["session_id"].(string)
			if w, ok := want[gpu]; ok {
				if sid != w || d["gpu_idle"] != false {
					t.Errorf("GPU %s: session_id %q gpu_idle %v, want %q and false", gpu, sid, d["gpu_idle"], w)
				}
				continue
			}
			if d["gpu_idle"] != true {
				t.Errorf("GPU %s with no session: gpu_idle %v", gpu, d["gpu_idle"])
			}
			if runID == "" {
				runID = sid
			}
			if sid != runID || reg.Identity(sid) != nil {
				t.Errorf("idle GPU %s: session_id %q, want the sampler's own %q", gpu, sid, runID)
			}
		}
		if g := reg.Identity("by-pid")["gpu_id"]; g != nvml.SimUUID(0) {
			t.Errorf("session by-pid learned gpu_id %q, want %s", g, nvml.SimUUID(0))
		}
		if g := reg.Identity("elsewhere")["gpu_id"]; g != "" {
			t.Errorf("session elsewhere got gpu_id %q", g)
		}
		procs := map[int]map[string]any{}
		for _, d := range procSamples {
			procs[d["pid"].(int)] = d
		}
		if procs[10000]["session_id"] != "by-pid" || procs[10003]["session_id"] != "runner-itself" {
			t.Errorf("process samples: 10000 %v, 10003 %v", procs[10000]["session_id"], procs[10003]["session_id"])
		}
		if _, ok := procs[10001]["session_id"]; ok {
			t.Errorf("process 10001 of no session has session_id %v", procs[10001]["session_id"])
		}

		// The runner's session ends: its GPU is idle from the next tick.
		reg.Detach("by-pid")
		h.after(time.Second)
		if d := byGPU(h.rec.take(TypeMemory))[nvml.SimUUID(0)]; d["gpu_idle"] != true {
			t.Errorf("after detach: GPU 0 gpu_idle %v session %v", d["gpu_idle"], d["session_id"])
		}
		// A session attached later is seen at the next tick, from the
		// processes already known.
		attach(&session.Session{SessionID: "late", PID: 400})
		h.after(time.Second)
		if d := byGPU(h.rec.take(TypeMemory))[nvml.SimUUID(0)]; d["session_id"] != "late" || d["gpu_idle"] != false {
			t.Errorf("late attach: GPU 0 session %v gpu_idle %v", d["session_id"], d["gpu_idle"])
		}
	})
}

func TestParsePPID(t *testing.T) {
	for _, tc := range []struct {
		stat string
		ppid int
		ok   bool
	}{
		{"1234 (python3) S 42 1234 1234 0 -1", 42, true},
		{"1234 (a) b (c) R 7 1 1", 7, true},
		{"1234 (x\n) S 9 1", 9, true},
		{"1 (systemd) S 0 1 1", 0, true},
		{"1234 (python3 S 42", 0, false},
		{"1234 (python3) S", 0, false},
		{"1234 (python3) S -5 1", 0, false},
		{"", 0, false},
	} {
		ppid, err := ParsePPID([]byte(tc.stat))
		if (err == nil) != tc.ok || ppid != tc.ppid {
			t.Errorf("%q: %d, %v; want %d ok=%v", tc.stat, ppid, err, tc.ppid, tc.ok)
		}
	}
}
