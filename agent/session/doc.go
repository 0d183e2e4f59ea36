// Package session holds the live AI sessions a runner attaches: their
// identity (stamped into their events, and onto the GPU samples of the GPU
// they use) and their trickle events channels.
//
// A session channel is one more sink of the agent's relay.Group: a forwarder
// over the session's own memory log, to which the spool writer hands the
// session's envelopes after each commit (Route) and the runner its own frames
// (AppendFrames), so the agent is the channel's only writer and both kinds
// of message keep their arrival order.
//
// It owns no goroutine of its own: channels run in the sink group, a
// session's subscriber runs as an agent source (Options.Subscribe).
package session
