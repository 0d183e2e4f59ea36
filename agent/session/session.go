package session

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
)

// Session is a live AI session attached by its runner: the identity stamped
// into its events and, optionally, its trickle events channel.
type Session struct {
	SessionID  string `json:"session_id"`
	StreamID   string `json:"stream_id,omitempty"`
	RequestID  string `json:"request_id,omitempty"`
	ManifestID string `json:"manifest_id,omitempty"`
	Pipeline   string `json:"pipeline,omitempty"`
	ModelID    string `json:"model_id,omitempty"`
	GPUID      string `json:"gpu_id,omitempty"`
	// PID is the runner's process id as the agent sees it (with the host's
	// pid namespace, the host pid NVML reports). Its GPU processes and
	// their children tie the GPUs it uses to the session, and its network
	// namespace gives the session's bandwidth. Default: the process at the
	// other end of the unix socket that attached the session.
	PID          int       `json:"pid,omitempty"`
	EventsURL    string    `json:"events_url,omitempty"`    // the session's trickle events channel: the agent publishes there
	SubscribeURL string    `json:"subscribe_url,omitempty"` // a channel to read telemetry frames from and relay
	OwnsChannel  bool      `json:"owns_channel,omitempty"`  // the agent may DELETE the channel at detach
	Attached     time.Time `json:"attached"`
}

// Identity returns the identity fields of the session, as stamped into data.
func (s *Session) Identity() envelope.Identity {
	return envelope.Identity{
		"session_id":    s.SessionID,
		"stream_id":     s.StreamID,
		"request_id":    s.RequestID,
		"connection_id": s.ManifestID,
		"pipeline":      s.Pipeline,
		"model_id":      s.ModelID,
		"gpu_id":        s.GPUID,
	}
}

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// Decode parses an attach request strictly: unknown fields are errors that
// name the field.
func Decode(body []byte) (*Session, error) {
	var s Session
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("session: %v", err)
	}
	if dec.More() {
		return nil, errors.New("session: one JSON object expected")
	}
	var errs []error
	if !sessionIDPattern.MatchString(s.SessionID) {
		errs = append(errs, errors.New("session_id: must be 1-128 characters of letters, digits, '.', '_', ':' or '-'"))
	}
	if s.EventsURL != "" {
		if err := CheckURL(s.EventsURL); err != nil {
			errs = append(errs, fmt.Errorf("events_url: %w", err))
		}
	}
	if s.SubscribeURL != "" {
		if err := CheckURL(s.SubscribeURL); err != nil {
			errs = append(errs, fmt.Errorf("subscribe_url: %w", err))
		}
	}
	if s.PID < 0 {
		errs = append(errs, errors.New("pid: must be a process id (a positive integer)"))
	}
	if s.OwnsChannel && s.EventsURL == "" {
		errs = append(errs, errors.New("owns_channel: needs events_url"))
	}
	return &s, errors.Join(errs...)
}

// CheckURL accepts an absolute http(s) URL.
func CheckURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", relay.RedactURL(v)) // the query may hold a key
	}
	return nil
}
