package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/livepeer/edgerelay/agent/session"
	"github.com/livepeer/edgerelay/envelope"
)

func (s *Server) handleSessionAttach(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 64<<10, limitAttach)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	if err := envelope.Validate(body); err != nil && !envelope.IsSyntax(err) {
		// Repeated keys, invalid UTF-8: the session's identity is stamped
		// into every envelope of the session; refuse what readers disagree on.
		writeError(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	sess, err := session.Decode(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	if sess.PID == 0 {
		sess.PID = peerPID(r) // the runner attaching over the unix socket
	}
	sess.Attached = time.Now().UTC()
	if err := s.Sessions.Attach(sess); err != nil {
		writeError(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusCreated, sess)
}

func (s *Server) handleSessionDetach(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.Sessions.Detach(id) {
		writeError(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("session %q is not attached", id)})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleFrames takes the runner's own events-channel messages for a session
// and writes them, verbatim and in arrival order, into the session's channel.
func (s *Server) handleFrames(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	switch attached, channel := s.Sessions.HasChannel(id); {
	case !attached:
		writeError(w, http.StatusNotFound, Answer{Rejected: []Rejection{}, Error: fmt.Sprintf("session %q is not attached", id)})
		return
	case !channel:
		writeError(w, http.StatusConflict, Answer{Rejected: []Rejection{}, Error: fmt.Sprintf("session %q has no events_url", id)})
		return
	}
	body, err := readBody(w, r, s.MaxBodyBytes, limitBody)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	items, err := split(body, frameRules) // a frame may nest an envelope of envelope.MaxDepth
	if err != nil {
		writeError(w, http.StatusBadRequest, Answer{Rejected: []Rejection{}, Error: err.Error()})
		return
	}
	ans := Answer{Rejected: []Rejection{}}
	var frames [][]byte
	for i, it := range items {
		if it.err == nil {
			it.err = checkFrame(it.raw, s.MaxEventBytes)
		}
		if it.err != nil {
			ans.Rejected = append(ans.Rejected, Rejection{Index: i, Error: it.err.Error()})
			continue
		}
		frames = append(frames, compactLine(it.raw))
	}
	if len(frames) == 0 {
		ans.Error = "no acceptable frame"
		writeError(w, http.StatusBadRequest, ans)
		return
	}
	switch err := s.Sessions.AppendFrames(id, frames); {
	case errors.Is(err, session.ErrChannelEnded):
		ans.Error = err.Error()
		writeError(w, http.StatusGone, ans)
		return
	case err != nil:
		ans.Error = err.Error()
		writeError(w, http.StatusNotFound, ans)
		return
	}
	ans.Accepted = len(frames)
	durable := false // frames live in the session channel's memory log
	ans.Durable = &durable
	writeJSON(w, http.StatusAccepted, ans)
}

// checkFrame accepts one frame of the channel's framing (envelope.ParseFrame).
func checkFrame(raw []byte, max int) error {
	if len(raw) > max {
		return fmt.Errorf("frame: %d bytes is over the limit of %d", len(raw), max)
	}
	_, _, err := envelope.ParseFrame(raw)
	return err
}

// compactLine removes line breaks between tokens, so a frame is one line.
func compactLine(raw []byte) []byte {
	if !bytes.ContainsAny(raw, "\n\r") {
		return raw
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) == nil {
		return buf.Bytes()
	}
	return raw
}
