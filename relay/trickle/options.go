package trickle

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
)

// Framings of the publisher (see the package doc for which reader each
// suits).
const (
	FramingJSONL   = "jsonl"   // many frame lines per segment, gathered by time and size
	FramingGateway = "gateway" // one JSON document per segment in the go-livepeer gateway's shape, paced
	// FramingSegment is the former name of FramingGateway, still accepted.
	FramingSegment = "segment"
)

// Publisher defaults.
const (
	DefaultSegmentInterval = time.Second
	// DefaultSegmentMaxBytes is the largest segment the Scope client's
	// JSONL reader and livepeer-python-gateway's readers take (1 MiB,
	// frame wrappers and newlines included): no segment is ever larger.
	DefaultSegmentMaxBytes = 1 << 20
	// DefaultKeepAlive is well inside the gateway's 30 s liveness rule.
	DefaultKeepAlive      = 10 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	// DefaultGatewayPace is the least time between two gateway segments: a
	// reader that keeps only the last 5 segments and needs a round trip per
	// segment (plus 300 ms after an error) sustains it.
	DefaultGatewayPace = 250 * time.Millisecond
	// ProbeMax is the longest wait between two probes of a channel that is
	// gone (Persistent).
	ProbeMax = 10 * time.Second
)

// Subscriber defaults.
const (
	DefaultIdleTimeout   = 30 * time.Second
	DefaultMaxFrameBytes = 4 << 20
	DefaultDedupeWindow  = 4096
)

// readBatch is how many records the forwarder hands a publisher at a time
// in segment framing; jsonlBatch in jsonl framing, where SegmentMaxBytes is
// the bound that counts.
const (
	readBatch  = 500
	jsonlBatch = 20000
)

// PublisherOptions configures a Publisher. The zero value of every field but
// URL is its documented default.
type PublisherOptions struct {
	// URL is the channel URL (https://orch:8935/ai/trickle/<name>);
	// segments go to URL/<seq>. Required.
	URL string
	// Framing is FramingJSONL (default) or FramingGateway (FramingSegment
	// is taken as its old name).
	Framing string
	// SegmentInterval closes a jsonl segment this long after it opened;
	// 0 means DefaultSegmentInterval.
	SegmentInterval time.Duration
	// SegmentMaxBytes closes a jsonl segment before it would grow past this
	// size (a single larger frame goes alone); 0 means
	// DefaultSegmentMaxBytes.
	SegmentMaxBytes int
	// KeepAlive sends a keep-alive frame after this long with nothing sent,
	// so that readers (the gateway stops a stream after 30 s without a
	// parsed event) and the server's idle sweep see a live channel; 0
	// means DefaultKeepAlive.
	KeepAlive time.Duration
	// KeepAliveEvent returns the envelope a keep-alive frame carries (the
	// agent's status): a real event every reader parses, never an empty
	// segment. nil sends a minimal {"type":"keepalive"} frame.
	KeepAliveEvent func() []byte
	// Pace is the least time between two segments; 0 means
	// DefaultGatewayPace in gateway framing and none in jsonl framing.
	Pace time.Duration
	// Persistent is for a channel that may come back (the static channel
	// of an orchestrator that restarts): a 404 or Lp-Trickle-Closed pauses
	// the sink (relay.PausedError, reason "channel_gone") and it probes on
	// a backoff of up to ProbeMax, instead of ending it (relay.ErrClosed,
	// for a session's channel).
	Persistent bool
	// Insecure turns TLS certificate verification off
	// (EDGERELAY_TRICKLE_INSECURE), for orchestrators with self-signed
	// certificates. Off by default.
	Insecure bool
	// Wrap: records are envelopes, each sent as
	// {"type":"telemetry","event":<record>}. Off: records are frames
	// already and are sent verbatim (a session channel where the runner's
	// frames and telemetry frames share one log).
	Wrap bool
	// RequestTimeout bounds each request (a segment's POST, GET /next,
	// DELETE); 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Stats counts requests; the forwarder counts settled records and
	// retries in the same Stats. nil means a fresh relay.Stats (see
	// Publisher.Stats).
	Stats *relay.Stats
	// Alive is called after each segment a Send writes, so the watchdog
	// sees a long Send progress (relay.Forwarder.Alive); may be nil.
	Alive func()
	// Logger; nil discards.
	Logger *slog.Logger
	// DialContext replaces the network dialer; nil means a net.Dialer
	// with a 10 s timeout. Tests use an in-memory listener.
	DialContext relay.DialFunc
}

// Validate reports every problem of o at once, each naming its field.
func (o PublisherOptions) Validate() error {
	var errs []error
	if err := validateURL(o.URL); err != nil {
		errs = append(errs, err)
	}
	switch o.Framing {
	case "", FramingJSONL, FramingGateway, FramingSegment:
	default:
		errs = append(errs, fmt.Errorf("Framing: %q is neither %q nor %q", o.Framing, FramingJSONL, FramingGateway))
	}
	if o.Pace < 0 {
		errs = append(errs, fmt.Errorf("Pace: %s is negative", o.Pace))
	}
	if o.SegmentInterval < 0 {
		errs = append(errs, fmt.Errorf("SegmentInterval: %s is negative", o.SegmentInterval))
	}
	if o.SegmentMaxBytes < 0 || o.SegmentMaxBytes > DefaultSegmentMaxBytes {
		errs = append(errs, fmt.Errorf("SegmentMaxBytes: %d is not in 0..%d (the readers' limit)", o.SegmentMaxBytes, DefaultSegmentMaxBytes))
	}
	if o.KeepAlive < 0 {
		errs = append(errs, fmt.Errorf("KeepAlive: %s is negative", o.KeepAlive))
	}
	if o.RequestTimeout < 0 {
		errs = append(errs, fmt.Errorf("RequestTimeout: %s is negative", o.RequestTimeout))
	}
	return errors.Join(errs...)
}

func (o PublisherOptions) withDefaults() PublisherOptions {
	o.URL = strings.TrimRight(o.URL, "/")
	switch o.Framing {
	case "":
		o.Framing = FramingJSONL
	case FramingSegment:
		o.Framing = FramingGateway
	}
	if o.Pace == 0 && o.Framing == FramingGateway {
		o.Pace = DefaultGatewayPace
	}
	if o.SegmentInterval == 0 {
		o.SegmentInterval = DefaultSegmentInterval
	}
	if o.SegmentMaxBytes == 0 {
		o.SegmentMaxBytes = DefaultSegmentMaxBytes
	}
	if o.KeepAlive == 0 {
		o.KeepAlive = DefaultKeepAlive
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Stats == nil {
		o.Stats = relay.NewStats()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// SubscriberOptions configures a Subscriber. The zero value of every field
// but URL and OnEnvelope is its documented default.
type SubscriberOptions struct {
	// URL is the channel URL to follow. Required.
	URL string
	// Insecure turns TLS certificate verification off. Off by default.
	Insecure bool
	// OnEnvelope receives each relayed telemetry envelope, annotated, in
	// channel order, from the Run goroutine. env is a fresh slice the
	// callee may keep. It must not block for long: the channel is read no
	// faster than it returns (the agent pushes into its ring). Required.
	OnEnvelope func(env []byte, c envelope.Checked)
	// Now stamps relay_received_timestamp; nil means time.Now.
	Now func() time.Time
	// Logger; nil discards.
	Logger *slog.Logger
	// NewBackOff builds the reconnect schedule; nil means
	// relay.DefaultBackOff.
	NewBackOff func() backoff.BackOff
	// DialContext replaces the network dialer; nil means a net.Dialer
	// with a 10 s timeout.
	DialContext relay.DialFunc
	// IdleTimeout abandons a GET that brought no byte for this long and
	// asks again (a silently dead connection); 0 means DefaultIdleTimeout.
	// Publishers send a keep-alive segment every 10 s.
	IdleTimeout time.Duration
	// MaxFrameBytes is the longest frame accepted; longer lines are
	// skipped and counted ("oversize"). 0 means DefaultMaxFrameBytes.
	MaxFrameBytes int
	// Persistent is for a channel that may come back (a static
	// subscription): a 404 or Lp-Trickle-Closed is probed on a backoff of
	// up to ProbeMax, reading from seq 0 of the channel created again,
	// instead of ending Run with relay.ErrClosed.
	Persistent bool
	// DedupeWindow is how many recent envelope ids are remembered to skip
	// duplicates (a publisher re-sends a failed segment's envelopes); 0
	// means DefaultDedupeWindow, negative turns it off.
	DedupeWindow int
}

// Validate reports every problem of o at once, each naming its field.
func (o SubscriberOptions) Validate() error {
	var errs []error
	if err := validateURL(o.URL); err != nil {
		errs = append(errs, err)
	}
	if o.OnEnvelope == nil {
		errs = append(errs, errors.New("OnEnvelope: required"))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("IdleTimeout: %s is negative", o.IdleTimeout))
	}
	if o.MaxFrameBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxFrameBytes: %d is negative", o.MaxFrameBytes))
	}
	return errors.Join(errs...)
}

func (o SubscriberOptions) withDefaults() SubscriberOptions {
	o.URL = strings.TrimRight(o.URL, "/")
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NewBackOff == nil {
		o.NewBackOff = relay.DefaultBackOff
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.MaxFrameBytes == 0 {
		o.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if o.DedupeWindow == 0 {
		o.DedupeWindow = DefaultDedupeWindow
	}
	return o
}

func validateURL(raw string) error {
	if raw == "" {
		return errors.New("URL: required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL itself, which may carry credentials
		}
		return fmt.Errorf("URL: %v", err)
	}
	var errs []error
	if u.Scheme != "http" && u.Scheme != "https" {
		errs = append(errs, fmt.Errorf("URL: scheme %q is neither http nor https", u.Scheme))
	}
	if u.Host == "" {
		errs = append(errs, errors.New("URL: no host"))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		errs = append(errs, errors.New("URL: a channel URL takes no query or fragment (segments are URL/<seq>)"))
	}
	if strings.Trim(u.Path, "/") == "" {
		errs = append(errs, errors.New("URL: no channel name in the path"))
	}
	return errors.Join(errs...)
}
