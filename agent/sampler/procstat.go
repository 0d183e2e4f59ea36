package sampler

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
)

// maxLineage bounds how many ancestors of a GPU process are looked at.
const maxLineage = 32

// ParsePPID returns the parent pid from the contents of /proc/<pid>/stat:
// "pid (comm) state ppid …". comm may hold spaces and parentheses, so the
// fields are counted from the last ')'.
func ParsePPID(stat []byte) (int, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' closing the command name")
	}
	f := bytes.Fields(stat[i+1:])
	if len(f) < 2 {
		return 0, errors.New("stat: no parent pid after the state")
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil || ppid < 0 {
		return 0, errors.New("stat: the parent pid is not a number")
	}
	return ppid, nil
}

// lineage returns pid and its ancestors, nearest first, up to but not
// including pid 1 (init, or a container's init that every process of the
// container descends from) and pid 0, as <ProcRoot>/<pid>/stat tells. A
// process that cannot be read ends the chain (it exited, or the agent does
// not see the host's pid namespace).
func (s *Sampler) lineage(pid int) []int {
	out := []int{pid}
	for len(out) < maxLineage {
		b, err := os.ReadFile(filepath.Join(s.opts.ProcRoot, strconv.Itoa(pid), "stat"))
		if err != nil {
			break
		}
		ppid, err := ParsePPID(b)
		if err != nil || ppid <= 1 || ppid == pid {
			break
		}
		out = append(out, ppid)
		pid = ppid
	}
	return out
}
