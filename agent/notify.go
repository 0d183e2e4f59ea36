package agent

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd integration (Type=notify). READY=1 is sent once the spool is open
// and the API listens; STATUS= carries a one-line summary; STOPPING=1 starts
// the shutdown. WATCHDOG=1 is sent only while the pipeline is healthy: no
// forwarder has been inside one Send, the spool writer inside one Append,
// and the sampler inside one round of NVML calls, for longer than half the
// watchdog timeout. A wedged pipeline or driver thus stops the pings and
// systemd restarts the service; an idle one keeps them.

// sdNotify sends a state to systemd; it does nothing outside systemd
// (NOTIFY_SOCKET unset).
func (a *Agent) sdNotify(state string) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		a.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// watchdogLoop pings systemd's watchdog at half its timeout while the
// pipeline is healthy, and refreshes STATUS=.
func (a *Agent) watchdogLoop(ctx context.Context) {
	timeout, err := daemon.SdWatchdogEnabled(false)
	if err != nil || timeout <= 0 {
		return
	}
	every := timeout / 2
	t := time.NewTicker(every)
	defer t.Stop()
	stalledLogged := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if what := a.stalled(now, every); what != "" {
				if !stalledLogged {
					a.log.Error("pipeline stalled; withholding the systemd watchdog ping", "stalled", what, "limit", every.String())
					stalledLogged = true
				}
				continue
			}
			if stalledLogged {
				a.log.Info("pipeline moving again; watchdog pings resume")
				stalledLogged = false
			}
			a.sdNotify("WATCHDOG=1")
			a.sdNotify("STATUS=" + a.statusLine())
		}
	}
}

// stalled names a part of the pipeline stuck in one operation for longer
// than limit, or returns "".
func (a *Agent) stalled(now time.Time, limit time.Duration) string {
	if a.pipe.Stalled(now, limit) {
		return "spool writer"
	}
	if a.sampler != nil && a.sampler.Stalled(now, limit) {
		return "NVML call"
	}
	if name := a.sinks.Stalled(now, limit); name != "" {
		return "sink " + name
	}
	return ""
}

func (a *Agent) statusLine() string {
	r := a.Report()
	var recv, pend uint64
	for _, n := range r.Received {
		recv += n
	}
	paused := 0
	for _, s := range r.Sinks {
		pend += s.Pending
		if s.Paused != "" {
			paused++
		}
	}
	mode := "durable"
	if !r.Durable {
		mode = "memory-only"
	}
	return fmt.Sprintf("%s; %d sinks (%d paused); received %d, pending %d, spool %.1f MiB (%s)",
		r.State, len(r.Sinks), paused, recv, pend, float64(r.SpoolBytes)/(1<<20), mode)
}
