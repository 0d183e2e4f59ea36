package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/livepeer/edgerelay/agent/ingest"
)

// pythonUnix is the prelude of the Python clients below: urllib over the
// agent's unix socket, with the standard library only.
const pythonUnix = `
import http.client, json, os, socket, sys, urllib.error, urllib.request

class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("agent", timeout=timeout)
        self.socket_path = path
    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.socket_path)
        self.sock = s

class UnixHandler(urllib.request.AbstractHTTPHandler):
    def __init__(self, path):
        super().__init__()
        self.path = path
    def unix_open(self, req):
        return self.do_open(lambda host, timeout=None, **kw: UnixConnection(self.path, timeout), req)
    unix_request = urllib.request.AbstractHTTPHandler.do_request_

def post(base, sock, path, body):
    """POST with urllib: the whole body is written before the answer is read."""
    if base.startswith("unix:"):
        opener = urllib.request.build_opener(UnixHandler(sock))
        url = "unix://agent" + path
    else:
        opener = urllib.request.build_opener()
        url = base + path
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with opener.open(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
`

// runPython runs a Python client with the agent's addresses as arguments
// and returns its standard output; without python3 the test is skipped,
// loudly.
func runPython(t *testing.T, script string, args ...string) []byte {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("SKIPPED, NOT CHECKED with a real Python client: python3 is not installed")
	}
	cmd := exec.Command(py, append([]string{"-c", pythonUnix + script}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	timer := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, stderr.Bytes())
	}
	return out
}

// TestPythonClientReadsThe413: Python's urllib (which writes the whole body
// before it reads) gets the 413 and its message for bodies over the limit,
// on loopback and through the unix socket, up to 64 MiB, instead of
// "connection reset by peer".
func TestPythonClientReadsThe413(t *testing.T) {
	env := testEnv(t, nil)
	r := startAgent(t, env)
	out := runPython(t, `
base, sock = sys.argv[1], sys.argv[2]
events = b"".join(b'{"type":"runner_metric","data":{"i":%d,"pad":"%s"}}\n' % (i, b"p" * 60) for i in range(70000))
for transport in (base, "unix:"):
    for name, body in (("70,000 events", events), ("64 MiB", b"x" * (64 << 20))):
        try:
            status, text = post(transport, sock, "/v1/events", body)
            print(json.dumps({"case": transport[:5] + " " + name, "bytes": len(body), "status": status, "answer": json.loads(text)}))
        except Exception as e:
            print(json.dumps({"case": transport[:5] + " " + name, "bytes": len(body), "error": repr(e)}))
`, r.base, env["EDGERELAY_SOCKET"])
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 4 {
		t.Fatalf("python printed:\n%s", out)
	}
	for _, l := range lines {
		var res struct {
			Case   string
			Bytes  int
			Status int
			Answer ingest.Answer
			Error  string
		}
		if err := json.Unmarshal([]byte(l), &res); err != nil {
			t.Fatalf("%v: %s", err, l)
		}
		t.Logf("%s (%d bytes): %d %s", res.Case, res.Bytes, res.Status, res.Answer.Error)
		if res.Error != "" || res.Status != 413 || res.Answer.Limit == nil || res.Answer.Limit.Max != 4<<20 ||
			res.Answer.Limit.Got != int64(res.Bytes) || !strings.Contains(res.Answer.Error, "EDGERELAY_MAX_BODY_BYTES") {
			t.Errorf("%s: %s", res.Case, l)
		}
	}
}

// TestSocketPIDIsTheKernels: over the unix socket, an allocator snapshot is
// attributed to the pid the kernel gives (SO_PEERCRED), here a real python3
// process; a "pid" that differs is kept as metadata.claimed_pid only. Over
// TCP the pid is taken as sent.
func TestSocketPIDIsTheKernels(t *testing.T) {
	env := testEnv(t, nil)
	r := startAgent(t, env)
	out := runPython(t, `
base, sock = sys.argv[1], sys.argv[2]
snap = {"device_index": 0, "stats": {"allocated_bytes.all.current": 10, "reserved_bytes.all.current": 20}}
print(os.getpid())
for transport, pid in (("unix:", 999999), ("unix:", None), ("unix:", os.getpid()), (base, 999999)):
    s = dict(snap)
    if pid is not None:
        s["pid"] = pid
    status, text = post(transport, sock, "/v1/allocator", json.dumps(s).encode())
    assert status == 202, (status, text)
`, r.base, env["EDGERELAY_SOCKET"])
	var pyPID int
	if _, err := fmt.Sscan(string(out), &pyPID); err != nil || pyPID <= 0 {
		t.Fatalf("python printed %q", out)
	}
	want := []struct {
		pid     int
		claimed string // metadata.claimed_pid, "" when absent
	}{{pyPID, "999999"}, {pyPID, ""}, {pyPID, ""}, {999999, ""}}
	lines := r.waitLines(t, len(want))
	for i, w := range want {
		var e struct {
			Data struct {
				PID      int
				Metadata map[string]json.RawMessage
			}
		}
		if err := json.Unmarshal([]byte(lines[i]), &e); err != nil {
			t.Fatal(err)
		}
		if e.Data.PID != w.pid || string(e.Data.Metadata["claimed_pid"]) != w.claimed {
			t.Errorf("snapshot %d: pid %d, claimed_pid %s; want %d, %q\n%s", i, e.Data.PID, e.Data.Metadata["claimed_pid"], w.pid, w.claimed, lines[i])
		}
	}
}
