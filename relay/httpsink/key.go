package httpsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/internal/logthrottle"
)

// errBadKey stands in for a key that cannot be sent in a header; it never
// quotes the key.
var errBadKey = errors.New("api key holds characters not allowed in an HTTP header")

// keySource holds the API key and notices when its file changes. It is safe
// for concurrent use: Send reads the key while WatchKey and Reload refresh
// it.
type keySource struct {
	path   string // "" when the key was given literally
	log    *slog.Logger
	resume chan struct{} // capacity 1; a value means "the key may be better now"

	mu      sync.Mutex            // guards the fields below
	key     string                // current key, trimmed; never logged
	info    os.FileInfo           // the file as last read; nil before the first read
	failLog *logthrottle.Throttle // read failures are logged at most once a minute
}

func newKeySource(literal, path string, log *slog.Logger) (*keySource, error) {
	k := &keySource{path: path, log: log, resume: make(chan struct{}, 1), failLog: logthrottle.New(time.Minute, 1), key: literal}
	if path == "" {
		return k, nil
	}
	if _, err := k.refresh(true); err != nil {
		return nil, fmt.Errorf("APIKeyFile: %w", err)
	}
	return k, nil
}

// get returns the current key for a request about to be made. It first
// checks, with one stat, whether the file changed since it was read, so a
// rotated key is used by the next request even when WatchKey is not
// running. The caller drains resume before calling it.
func (k *keySource) get() (string, error) {
	if k.path != "" {
		// Failures are logged and keep the previous key. A change found here
		// is used by this very request, so its resume signal is stale.
		if changed, _ := k.refresh(false); changed {
			k.drain()
		}
	}
	k.mu.Lock()
	key := k.key
	k.mu.Unlock()
	if !validKey(key) {
		return "", errBadKey
	}
	return key, nil
}

// refresh re-reads the key file when force is set or when its identity,
// size or mtime changed, and signals resume when the key changed. A failed
// read keeps the previous key: a half-written or briefly missing file
// (rotation by rename) must not wipe a working key.
func (k *keySource) refresh(force bool) (changed bool, err error) {
	if k.path == "" {
		return false, nil
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	fi, err := os.Stat(k.path)
	if err == nil && !force && k.info != nil && os.SameFile(fi, k.info) && fi.Size() == k.info.Size() && fi.ModTime().Equal(k.info.ModTime()) {
		return false, nil
	}
	var b []byte
	if err == nil {
		b, err = os.ReadFile(k.path)
	}
	if err != nil {
		// The error names the path only; the key is never in it.
		if k.failLog.Allow() {
			k.log.Error("api key file unreadable; keeping the previous key", "file", k.path, "err", err, "suppressed", k.failLog.Suppressed())
		}
		return false, err
	}
	first := k.info == nil
	k.info = fi
	key := strings.TrimSpace(string(b))
	if key == k.key && !first {
		return false, nil
	}
	k.key = key
	switch {
	case key == "":
		k.log.Warn("api key file is empty; requests will be refused until it holds a key", "file", k.path)
	case !validKey(key):
		k.log.Error("api key file holds characters not allowed in an HTTP header; sink stays paused", "file", k.path)
	case !first:
		k.log.Info("api key reloaded; a paused sink resumes", "file", k.path)
	}
	if !first {
		k.signal()
	}
	return !first, nil
}

// signal ends a pause of the forwarder that listens on resume.
func (k *keySource) signal() {
	select {
	case k.resume <- struct{}{}:
	default:
	}
}

// drain discards a pending resume signal: a request about to be made uses
// the newest key anyway, and a stale signal would end the next pause at once
// and spend a request for nothing.
func (k *keySource) drain() {
	select {
	case <-k.resume:
	default:
	}
}

// watch reads the key file every interval until ctx ends. It reads the
// content, not only the metadata, because a rewrite within the filesystem's
// timestamp granularity that keeps the size would otherwise go unseen.
func (k *keySource) watch(ctx context.Context, every time.Duration) error {
	if k.path == "" {
		<-ctx.Done()
		return ctx.Err()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			k.refresh(true)
		}
	}
}
