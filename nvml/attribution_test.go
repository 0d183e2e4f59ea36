package nvml

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const cid = "3f4e5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"

func TestParseCgroup(t *testing.T) {
	other := strings.Repeat("ab", 32) // a second, outer id
	for _, tc := range []struct {
		name, in, id, path string
	}{
		{"docker systemd v2", "0::/system.slice/docker-" + cid + ".scope\n", cid, "/system.slice/docker-" + cid + ".scope"},
		{"docker cgroupfs v2", "0::/docker/" + cid + "\n", cid, "/docker/" + cid},
		{"containerd kubepods systemd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice/cri-containerd-" + cid + ".scope\n",
			cid, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1c2d3e4f_5a6b_7c8d_9e0f_1a2b3c4d5e6f.slice/cri-containerd-" + cid + ".scope"},
		{"crio", "0::/kubepods.slice/kubepods-pod0a1b.slice/crio-" + cid + ".scope\n", cid, "/kubepods.slice/kubepods-pod0a1b.slice/crio-" + cid + ".scope"},
		{"kubepods cgroupfs", "0::/kubepods/besteffort/pod1c2d3e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f/" + cid + "\n",
			cid, "/kubepods/besteffort/pod1c2d3e4f-5a6b-7c8d-9e0f-1a2b3c4d5e6f/" + cid},
		{"cgroup v1 lines", "12:pids:/docker/" + cid + "\n11:memory:/docker/" + cid + "\n1:name=systemd:/docker/" + cid + "\n", cid, "/docker/" + cid},
		{"hybrid: v2 root, v1 has the id", "12:devices:/docker/" + cid + "\n0::/\n", cid, "/docker/" + cid},
		{"relative path (cgroup namespace)", "0::/../../system.slice/docker-" + cid + ".scope\n", cid, "/../../system.slice/docker-" + cid + ".scope"},
		{"nested: innermost wins", "0::/docker/" + other + "/docker/" + cid + "\n", cid, "/docker/" + other + "/docker/" + cid},
		{"with init.scope below", "0::/docker/" + cid + "/init.scope\n", cid, "/docker/" + cid + "/init.scope"},
		{"host service", "0::/system.slice/edgerelay.service\n", "", "/system.slice/edgerelay.service"},
		{"host v1 only", "3:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-2.scope\n", "", "/user.slice"},
		{"65 hex is not an id", "0::/docker/" + cid + "a\n", "", "/docker/" + cid + "a"},
		{"63 hex is not an id", "0::/docker/" + cid[1:] + "\n", "", "/docker/" + cid[1:]},
		{"upper-case hex is not an id", "0::/docker/" + strings.ToUpper(cid) + "\n", "", "/docker/" + strings.ToUpper(cid)},
		{"CRLF and blank lines", "\r\n0::/docker/" + cid + "\r\n\r\n", cid, "/docker/" + cid},
		{"empty", "", "", ""},
		{"garbage", "no colons here\n::\n", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, path := ParseCgroup([]byte(tc.in))
			if id != tc.id || path != tc.path {
				t.Errorf("ParseCgroup = (%q, %q), want (%q, %q)", id, path, tc.id, tc.path)
			}
		})
	}
}

func TestEnvironValue(t *testing.T) {
	env := []byte("PATH=/usr/bin\x00PIPELINE=live-video-to-video\x00MODEL_ID=streamdiffusion\x00EMPTY=\x00PIPELINE=second\x00")
	for key, want := range map[string]string{"PIPELINE": "live-video-to-video", "MODEL_ID": "streamdiffusion", "EMPTY": "", "MISSING": "", "PATH": "/usr/bin"} {
		if got := EnvironValue(env, key); got != want {
			t.Errorf("EnvironValue(%s) = %q, want %q", key, got, want)
		}
	}
	if got := EnvironValue([]byte("MODEL_ID=a=b"), "MODEL_ID"); got != "a=b" {
		t.Errorf("value with '=' = %q", got)
	}
}

// writeProc makes <root>/<pid>/{cgroup,environ,comm}.
func writeProc(t *testing.T, root, pid, cgroup, environ, comm string) {
	t.Helper()
	dir := filepath.Join(root, pid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"cgroup": cgroup, "environ": environ, "comm": comm} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAttributor(t *testing.T) {
	root := t.TempDir()
	writeProc(t, root, "4242", "0::/system.slice/docker-"+cid+".scope\n", "HOME=/root\x00PIPELINE=text-to-image\x00MODEL_ID=SG161222/RealVisXL_V4.0_Lightning\x00", "python3\n")
	a := NewAttributor(root)

	want := Attribution{ContainerID: cid, Cgroup: "/system.slice/docker-" + cid + ".scope", Pipeline: "text-to-image", ModelID: "SG161222/RealVisXL_V4.0_Lightning", Comm: "python3"}
	got, ok := a.Lookup(4242)
	if !ok || got != want {
		t.Fatalf("Lookup = %+v %v, want %+v", got, ok, want)
	}

	// Cached: a changed file is not read again while the pid is listed.
	writeProc(t, root, "4242", "0::/system.slice/other.service\n", "", "bash\n")
	if got, _ := a.Lookup(4242); got != want {
		t.Errorf("cached Lookup = %+v, want the first answer", got)
	}
	a.Retain([]int{4242, 7})
	if a.Len() != 1 {
		t.Errorf("Retain of a listed pid dropped it: %d cached", a.Len())
	}
	// The pid went from NVML's list: forgotten, then read afresh.
	a.Retain(nil)
	if a.Len() != 0 {
		t.Errorf("Retain(nil) kept %d pids", a.Len())
	}
	if got, _ := a.Lookup(4242); got.ContainerID != "" || got.Cgroup != "/system.slice/other.service" || got.Comm != "bash" {
		t.Errorf("after Retain the new process reads %+v", got)
	}

	// A vanished process: not found, not cached.
	if got, ok := a.Lookup(99999); ok || got != (Attribution{}) {
		t.Errorf("missing pid = %+v %v", got, ok)
	}
	if a.Len() != 1 {
		t.Errorf("a missing pid was cached: %d cached", a.Len())
	}

	// An unreadable environ (another user's process) leaves pipeline and
	// model empty but still names the container. A directory stands in for
	// the unreadable file, since tests may run as root.
	dir := filepath.Join(root, "5000")
	if err := os.MkdirAll(filepath.Join(dir, "environ"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup"), []byte("0::/docker/"+cid+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, ok := a.Lookup(5000); !ok || got.ContainerID != cid || got.Pipeline != "" || got.ModelID != "" {
		t.Errorf("unreadable environ: %+v %v", got, ok)
	}
}

var hex64 = regexp.MustCompile(`^[0-9a-f]{64}$`)

func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/docker-" + cid + ".scope\n"))
	f.Add([]byte("12:memory:/kubepods/burstable/pod1/" + cid + "\n0::/\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, path := ParseCgroup(data)
		if id != "" && (!hex64.MatchString(id) || !strings.Contains(path, id)) {
			t.Fatalf("id %q path %q", id, path)
		}
		if path != "" && !strings.Contains(string(data), path) {
			t.Fatalf("path %q is not in the input", path)
		}
	})
}

func FuzzEnvironValue(f *testing.F) {
	f.Add([]byte("PIPELINE=a\x00MODEL_ID=b\x00"), "PIPELINE")
	f.Add([]byte("MODEL_ID"), "MODEL_ID")
	f.Fuzz(func(t *testing.T, env []byte, key string) {
		v := EnvironValue(env, key)
		if v != "" && !strings.Contains(string(env), key+"="+v) {
			t.Fatalf("value %q of %q not in input", v, key)
		}
		if strings.ContainsRune(v, 0) {
			t.Fatalf("value %q holds a NUL", v)
		}
	})
}
