package agent

import (
	"context"

	"github.com/livepeer/edgerelay/relay"
)

// startSinks registers every configured sink in the store and starts its
// forwarder.
func (a *Agent) startSinks() error {
	if a.cfg.Stdout {
		if _, err := a.addForwarder(a.store, "stdout", "stdout", relay.NewStdoutSink(a.opts.Stdout), nil); err != nil {
			return err
		}
	}
	if a.opts.extraSink != nil {
		if _, err := a.addForwarder(a.store, "test", "test", a.opts.extraSink, nil); err != nil {
			return err
		}
	}
	return nil
}

// finishedSinks are the final reports of sinks that have been removed
// (detached sessions), so totals stay whole.
func (a *Agent) finishedSinks() map[string]SinkReport { return nil }

// attachSession registers a session's identity.
func (a *Agent) attachSession(ctx context.Context, s *Session) error {
	if a.sessions.put(s) {
		a.log.Info("session re-attached", "session_id", s.SessionID)
	} else {
		a.log.Info("session attached", "session_id", s.SessionID, "stream_id", s.StreamID, "gpu_id", s.GPUID)
	}
	return nil
}

// detachSession forgets a session.
func (a *Agent) detachSession(ctx context.Context, id string) bool {
	_, ok := a.sessions.remove(id)
	if ok {
		a.log.Info("session detached", "session_id", id)
	}
	return ok
}

func (a *Agent) detachAllSessions() {}
