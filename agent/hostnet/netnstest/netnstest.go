//go:build linux

// Package netnstest makes real network namespaces for tests: a namespace
// with a process living in it (a stand-in for a runner in its own
// container), joined by a veth pair to a peer namespace and to nothing
// else, and known traffic between the two. It needs root and iproute2's
// ip; without them the test is skipped with a message saying what is
// missing.
package netnstest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NS is a network namespace with one process in it, linked to a peer
// namespace by a veth pair (MTU 9000, so that headers are under 1% of the
// bytes on the wire).
type NS struct {
	Name, Peer     string // namespace names (ip netns)
	Addr, PeerAddr string // IPv4 addresses on the veth ends
	PID            int    // a process in Name
}

// Require skips t, loudly, unless the test can make namespaces: root and
// ip are needed.
func Require(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		skip(t, "iproute2's ip is not installed (apt-get install iproute2)")
	}
	if os.Geteuid() != 0 {
		skip(t, "making network namespaces needs root")
	}
}

func skip(t testing.TB, why string) {
	t.Helper()
	fmt.Fprintf(os.Stderr, "SKIP %s: %s; the real network namespace test did not run\n", t.Name(), why)
	t.Skip(why)
}

// New makes namespace pair number idx (0..250) for t and removes it when t
// ends. It skips t, loudly, when the system refuses (no privilege to make
// namespaces, as in an unprivileged container).
func New(t testing.TB, idx int) *NS {
	t.Helper()
	Require(t)
	tag := fmt.Sprintf("%d%c", os.Getpid()%100000, 'a'+idx%26)
	ns := &NS{
		Name: "er-" + tag, Peer: "er-" + tag + "p",
		Addr: fmt.Sprintf("10.251.%d.1", idx), PeerAddr: fmt.Sprintf("10.251.%d.2", idx),
	}
	vethA, vethB := "erv"+tag, "erv"+tag+"p"
	// The test's own process must stay where it is: every goroutine that
	// entered a namespace left it (inNS).
	self, _ := os.Readlink("/proc/self/ns/net")
	t.Cleanup(func() {
		if now, _ := os.Readlink("/proc/self/ns/net"); now != self {
			t.Errorf("the test process moved from network namespace %s to %s", self, now)
		}
	})
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		skip(t, fmt.Sprintf("ip netns add: %v: %s", err, strings.TrimSpace(string(out))))
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.Name).Run() })
	run(t, "ip", "netns", "add", ns.Peer)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns.Peer).Run() })
	run(t, "ip", "link", "add", vethA, "netns", ns.Name, "type", "veth", "peer", "name", vethB, "netns", ns.Peer)
	for _, c := range [][]string{
		{"-n", ns.Name, "addr", "add", ns.Addr + "/30", "dev", vethA},
		{"-n", ns.Peer, "addr", "add", ns.PeerAddr + "/30", "dev", vethB},
		{"-n", ns.Name, "link", "set", vethA, "mtu", "9000", "up"},
		{"-n", ns.Peer, "link", "set", vethB, "mtu", "9000", "up"},
		{"-n", ns.Name, "link", "set", "lo", "up"},
		{"-n", ns.Peer, "link", "set", "lo", "up"},
	} {
		run(t, "ip", c...)
	}
	// ip netns exec joins the namespace and execs the command: its pid is
	// the process in the namespace.
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "3600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a process in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ns.PID = cmd.Process.Pid
	// Wait until the exec has happened (the process is in the namespace):
	// an event, not a time, so no sleep decides it.
	deadline := time.Now().Add(30 * time.Second)
	for !inNetns(ns.PID, ns.Name) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not enter %s in 30s", ns.PID, ns.Name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ns
}

// inNetns reports whether pid's network namespace is the named one.
func inNetns(pid int, name string) bool {
	var a, b unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &a) != nil || unix.Stat("/run/netns/"+name, &b) != nil {
		return false
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Exchange sends up bytes from the namespace to its peer and then down
// bytes from the peer into the namespace, over one TCP connection, and
// returns once both sides have read everything.
func (ns *NS) Exchange(t testing.TB, up, down int) {
	t.Helper()
	ln, err := listenIn(ns.Peer, ns.PeerAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peerDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			peerDone <- err
			return
		}
		defer c.Close()
		if _, err := io.CopyN(io.Discard, c, int64(up)); err != nil {
			peerDone <- fmt.Errorf("peer reading: %w", err)
			return
		}
		_, err = c.Write(make([]byte, down))
		peerDone <- err
	}()
	c, err := dialIn(ns.Name, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, up)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, c, int64(down)); err != nil {
		t.Fatal(err)
	}
	if err := <-peerDone; err != nil {
		t.Fatal(err)
	}
}

func listenIn(ns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNS(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return err })
	return ln, err
}

func dialIn(ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNS(ns, func() (err error) {
		c, err = net.DialTimeout("tcp4", addr, 10*time.Second)
		return err
	})
	return c, err
}

// inNS runs fn on an OS thread that joined the named namespace; sockets
// fn makes stay in it. The thread goes back to its own namespace before it
// is released (should that fail, it stays locked and ends with the
// goroutine), so no other goroutine ever runs in the namespace: that
// matters most when the thread is the process's main one, whose namespace
// is what /proc/self/net shows.
func inNS(name string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open("/run/netns/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- errors.Join(errors.New("setns "+name), err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}
