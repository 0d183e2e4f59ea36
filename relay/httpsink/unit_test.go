package httpsink

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBucket(30)
		start := time.Now()
		var at []time.Duration
		for range 4 {
			if err := b.take(context.Background()); err != nil {
				t.Fatal(err)
			}
			at = append(at, time.Since(start))
		}
		for i, d := range at {
			if want := time.Duration(i) * 2 * time.Second; d != want {
				t.Errorf("token %d at %s, want %s", i, d, want)
			}
		}
		// Idle time earns no burst: after 10 s, one token at once, the next
		// a full interval later.
		time.Sleep(10 * time.Second)
		t0 := time.Now()
		b.take(context.Background())
		b.take(context.Background())
		if d := time.Since(t0); d != 2*time.Second {
			t.Errorf("two tokens after idle took %s, want 2s", d)
		}
		// A cancelled wait returns at once and spends nothing.
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		t1 := time.Now()
		if err := b.take(ctx); err != context.DeadlineExceeded {
			t.Errorf("take with expiring ctx: %v", err)
		}
		if err := b.take(context.Background()); err != nil || time.Since(t1) != 2*time.Second {
			t.Errorf("token after a cancelled wait at %s (%v), want 2s after the last one", time.Since(t1), err)
		}
		// Unlimited never waits but still honours ctx.
		u := newBucket(0)
		t2 := time.Now()
		for range 100 {
			u.take(context.Background())
		}
		if time.Since(t2) != 0 {
			t.Error("unlimited bucket waited")
		}
		done, cancel2 := context.WithCancel(context.Background())
		cancel2()
		if u.take(done) == nil {
			t.Error("unlimited take ignored a done ctx")
		}
	})
}

func TestKeySource(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("first-key-aaaa\n")
	var logs syncBuffer
	k, err := newKeySource("", p, newLogger(&logs))
	if err != nil {
		t.Fatal(err)
	}
	get := func() string {
		t.Helper()
		key, err := k.get()
		if err != nil {
			t.Fatal(err)
		}
		return key
	}
	if got := get(); got != "first-key-aaaa" {
		t.Fatalf("key %q", got)
	}
	pending := func() bool {
		select {
		case <-k.resume:
			return true
		default:
			return false
		}
	}
	if pending() {
		t.Error("resume signalled for the initial read")
	}

	// A rewrite with a new size is seen by the per-request stat check. The
	// request uses the new key itself, so no resume signal is left behind
	// (it would end the next pause for nothing).
	write("second-key-bbbbbb")
	if got := get(); got != "second-key-bbbbbb" {
		t.Errorf("after rewrite: key %q", got)
	}
	if pending() {
		t.Error("stale resume signal after the request's own check")
	}
	// Rotation by rename (new inode) is seen too.
	tmp := filepath.Join(dir, "key.tmp")
	os.WriteFile(tmp, []byte("third-key-ccccccc"), 0o600) // same size as before
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if got := get(); got != "third-key-ccccccc" {
		t.Errorf("after rename: key %q", got)
	}
	// A change found by the watcher (or Reload) does signal.
	write("third-and-a-half-key")
	if changed, err := k.refresh(true); !changed || err != nil || !pending() {
		t.Errorf("watcher refresh: changed %v, %v, no signal", changed, err)
	}
	// A forced read (the watcher's) sees a same-size rewrite even when the
	// mtime did not move.
	fi, _ := os.Stat(p)
	write("fourth-key-dddddd")
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	if changed, err := k.refresh(true); !changed || err != nil || !pending() {
		t.Errorf("forced refresh: changed %v, %v", changed, err)
	}
	// Rewriting the same key is not a change.
	write("fourth-key-dddddd\n")
	if changed, _ := k.refresh(true); changed || pending() {
		t.Error("same key reported as changed")
	}
	// A missing file keeps the previous key and logs once, naming the file.
	os.Remove(p)
	for range 3 {
		if got := get(); got != "fourth-key-dddddd" {
			t.Errorf("missing file: key %q", got)
		}
	}
	if n := strings.Count(logs.String(), "api key file unreadable"); n != 1 {
		t.Errorf("unreadable file logged %d times, want 1:\n%s", n, logs.String())
	}
	// A key that cannot be a header value is refused without quoting it.
	write("bad\x01key")
	if _, err := k.get(); err != errBadKey {
		t.Errorf("bad key: %v", err)
	}
	if strings.Contains(logs.String(), "key-") || strings.Contains(logs.String(), "bad\x01key") {
		t.Errorf("a key reached the log:\n%s", logs.String())
	}
}

func TestKeyWatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "key")
		os.WriteFile(p, []byte("aaaa-old"), 0o600)
		k, err := newKeySource("", p, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- k.watch(ctx, time.Second) }()
		time.Sleep(2500 * time.Millisecond)
		changedAt := time.Now()
		os.WriteFile(p, []byte("bbbb-new"), 0o600) // same size, likely same mtime tick
		<-k.resume
		if d := time.Since(changedAt); d > time.Second {
			t.Errorf("change noticed after %s, want within the 1s poll", d)
		}
		cancel()
		if err := <-done; err != context.Canceled {
			t.Errorf("watch returned %v", err)
		}
		// Without a file, watch just waits for ctx.
		lit, _ := newKeySource("literal", "", slog.New(slog.DiscardHandler))
		ctx2, cancel2 := context.WithTimeout(context.Background(), time.Minute)
		defer cancel2()
		if err := lit.watch(ctx2, time.Second); err != context.DeadlineExceeded {
			t.Errorf("literal watch returned %v", err)
		}
	})
}
