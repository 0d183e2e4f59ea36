package nvml

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Attribution is what the host knows about a process that uses a GPU.
// Empty strings are unknown.
type Attribution struct {
	ContainerID string // 64 lowercase hex digits
	Cgroup      string // the cgroup path the id was found in (else the process's v2 path)
	Pipeline    string // PIPELINE from the process environment (Livepeer runners)
	ModelID     string // MODEL_ID from the process environment
	Comm        string // the kernel's short command name
}

// maxEnviron caps how much of /proc/<pid>/environ is read.
const maxEnviron = 4 << 20

// Attributor maps host pids (as NVML reports them) to their container and
// Livepeer identity by reading <procRoot>/<pid>/{cgroup,environ,comm}.
// It needs the host pid namespace (--pid=host, or systemd on the host): in
// another namespace the same pid names another process.
//
// Results are cached per pid until Retain no longer lists the pid. A pid
// reused by a new process while the old one was still listed would keep
// the old answer; NVML lists only live processes, so that needs the old
// process to exit and a new one to take its pid and a GPU within one
// process interval.
//
// Attributor is safe for concurrent use.
type Attributor struct {
	root string

	mu    sync.Mutex // guards cache
	cache map[int]Attribution
}

// NewAttributor reads processes under procRoot ("" means "/proc"; tests
// point it at a directory of their own).
func NewAttributor(procRoot string) *Attributor {
	if procRoot == "" {
		procRoot = "/proc"
	}
	return &Attributor{root: procRoot, cache: make(map[int]Attribution)}
}

// Lookup returns what is known about pid. ok is false when the process
// cannot be read at all (gone, or not visible from this pid namespace);
// nothing is cached then. An unreadable environ (another user's process,
// without root) leaves Pipeline and ModelID empty.
func (a *Attributor) Lookup(pid int) (Attribution, bool) {
	a.mu.Lock()
	at, ok := a.cache[pid]
	a.mu.Unlock()
	if ok {
		return at, true
	}
	dir := filepath.Join(a.root, strconv.Itoa(pid))
	cg, err := os.ReadFile(filepath.Join(dir, "cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return Attribution{}, false
	}
	if err == nil {
		at.ContainerID, at.Cgroup = ParseCgroup(cg)
	}
	if comm, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		at.Comm = strings.TrimSpace(string(comm))
	}
	if env, err := readCapped(filepath.Join(dir, "environ"), maxEnviron); err == nil {
		at.Pipeline = EnvironValue(env, "PIPELINE")
		at.ModelID = EnvironValue(env, "MODEL_ID")
	}
	a.mu.Lock()
	a.cache[pid] = at
	a.mu.Unlock()
	return at, true
}

// Retain forgets every cached pid not in pids (the processes NVML lists
// now), so that a pid that went is read afresh if it is ever reused.
func (a *Attributor) Retain(pids []int) {
	keep := make(map[int]struct{}, len(pids))
	for _, p := range pids {
		keep[p] = struct{}{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for p := range a.cache {
		if _, ok := keep[p]; !ok {
			delete(a.cache, p)
		}
	}
}

// Len is the number of cached pids.
func (a *Attributor) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.cache)
}

func readCapped(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// ParseCgroup finds the container id in the contents of /proc/<pid>/cgroup.
// The id is a run of exactly 64 lowercase hex digits anywhere in a cgroup
// path (spec/nvml.md lists the shapes: docker-<id>.scope, /docker/<id>,
// cri-containerd-<id>.scope, crio-<id>.scope, /kubepods/<qos>/pod<uid>/<id>,
// cgroup v1 lines, relative paths); the last such run of a path wins, so the
// innermost container of nested ones is named. The cgroup v2 line ("0::")
// is searched first, then the v1 lines in order. path is the cgroup path
// the id was found in; without an id it is the v2 path (else the first
// line's), so a process outside containers still reports its unit.
func ParseCgroup(data []byte) (id, path string) {
	var fallback string
	var v1 []string
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		line = bytes.TrimRight(line, "\r")
		hier, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		ctrl, p, ok := bytes.Cut(rest, []byte{':'})
		if !ok || len(p) == 0 {
			continue
		}
		if string(hier) == "0" && len(ctrl) == 0 {
			if cid := containerID(p); cid != "" {
				return cid, string(p)
			}
			fallback = string(p)
			continue
		}
		v1 = append(v1, string(p))
	}
	for _, p := range v1 {
		if cid := containerID([]byte(p)); cid != "" {
			return cid, p
		}
	}
	if fallback == "" && len(v1) > 0 {
		fallback = v1[0]
	}
	return "", fallback
}

// containerID returns the last run of exactly 64 lowercase hex digits in p.
func containerID(p []byte) string {
	var id []byte
	run := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && isLowerHex(p[i]) {
			run++
			continue
		}
		if run == 64 {
			id = p[i-64 : i]
		}
		run = 0
	}
	return string(id)
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// EnvironValue returns the value of key in the contents of
// /proc/<pid>/environ (NUL-separated KEY=VALUE entries); the first entry
// wins, as for getenv. It returns "" when the key is absent.
func EnvironValue(environ []byte, key string) string {
	for kv := range bytes.SplitSeq(environ, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if ok && string(k) == key {
			return string(v)
		}
	}
	return ""
}
