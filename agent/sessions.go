package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sync"
	"time"

	"github.com/livepeer/edgerelay/envelope"
)

// Session is a live AI session attached by its runner: the identity stamped
// into its events and, optionally, its trickle events channel.
type Session struct {
	SessionID    string    `json:"session_id"`
	StreamID     string    `json:"stream_id,omitempty"`
	RequestID    string    `json:"request_id,omitempty"`
	ManifestID   string    `json:"manifest_id,omitempty"`
	Pipeline     string    `json:"pipeline,omitempty"`
	ModelID      string    `json:"model_id,omitempty"`
	GPUID        string    `json:"gpu_id,omitempty"`
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

// decodeSession parses an attach request strictly: unknown fields are errors
// that name the field.
func decodeSession(body []byte) (*Session, error) {
	var s Session
	dec := json.NewDecoder(bytesReader(body))
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
		if err := checkURL(s.EventsURL); err != nil {
			errs = append(errs, fmt.Errorf("events_url: %w", err))
		}
	}
	if s.SubscribeURL != "" {
		if err := checkURL(s.SubscribeURL); err != nil {
			errs = append(errs, fmt.Errorf("subscribe_url: %w", err))
		}
	}
	if s.OwnsChannel && s.EventsURL == "" {
		errs = append(errs, errors.New("owns_channel: needs events_url"))
	}
	return &s, errors.Join(errs...)
}

// sessions is the registry of attached sessions. Safe for concurrent use.
type sessions struct {
	mu sync.RWMutex
	m  map[string]*Session
}

func newSessions() *sessions { return &sessions{m: make(map[string]*Session)} }

// identity returns the identity of a session, or nil if it is not attached.
func (s *sessions) identity(id string) envelope.Identity {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if sess, ok := s.m[id]; ok {
		return sess.Identity()
	}
	return nil
}

// forGPU returns the session attached to a GPU (by UUID), if any.
func (s *sessions) forGPU(uuid string) (*Session, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, sess := range s.m {
		if sess.GPUID == uuid {
			return sess, true
		}
	}
	return nil, false
}

func (s *sessions) get(id string) (*Session, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	sess, ok := s.m[id]
	return sess, ok
}

func (s *sessions) put(sess *Session) (replaced bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, replaced = s.m[sess.SessionID]
	s.m[sess.SessionID] = sess
	return replaced
}

func (s *sessions) remove(id string) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	delete(s.m, id)
	return sess, ok
}

func (s *sessions) count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.m)
}

func (a *Agent) handleSessionAttach(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 64<<10)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	sess, err := decodeSession(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	sess.Attached = time.Now().UTC()
	if err := a.attachSession(r.Context(), sess); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusCreated, sess)
}

func (a *Agent) handleSessionDetach(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !a.detachSession(r.Context(), id) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("session %q is not attached", id)})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
