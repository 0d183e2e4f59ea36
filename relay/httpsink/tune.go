package httpsink

import "github.com/livepeer/edgerelay/relay"

// Tune sets the forwarder fields this sink needs: Batch and MaxBytes from
// Limits, and Resume. The waits between Sends are the forwarder's own
// (spec/metrics-api.md, "Status classification"): a throttled answer's
// usable Retry-After exactly, however many came before, and otherwise the
// backoff, every wait at most relay.MaxBackOff. Call it before f.Init.
func (s *Sink) Tune(f *relay.Forwarder) {
	f.Batch, f.MaxBytes = s.Limits()
	f.Resume = s.Resume()
}
