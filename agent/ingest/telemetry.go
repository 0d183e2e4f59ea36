package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/agent/telemetry"
)

// handleTelemetry takes stormlog v2/v3 (and legacy) records; each becomes an
// allocator_sample.
func (s *Server) handleTelemetry(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, s.MaxBodyBytes, limitBody)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	decoded, err := telemetry.DecodeRecords(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, Answer{Rejected: []Rejection{}, Error: err.Error()})
		return
	}
	items := make([]item, len(decoded))
	for i, d := range decoded {
		items[i] = item{raw: d.Raw, err: d.Err}
	}
	// The node's environment is not the runner's: identity comes from the
	// record (or its metadata) only.
	norm := telemetry.NormalizeOptions{AllowLegacy: s.TelemetryLegacy}
	status, ans := s.ingest(r.Context(), "telemetry", items, func(raw json.RawMessage) (pipeline.Entry, error) {
		if len(raw) > s.MaxEventBytes {
			return pipeline.Entry{}, fmt.Errorf("record: %d bytes is over the limit of %d", len(raw), s.MaxEventBytes)
		}
		rec, err := telemetry.Normalize(raw, norm)
		if err != nil {
			return pipeline.Entry{}, err
		}
		s.Allocs.Observe(rec, "", telemetry.SourcePush)
		env, err := s.Envelopes.Allocator(rec, nil, "")
		return pipeline.Entry{Env: env, Type: telemetry.TypeAllocatorSample, Session: rec.SessionID()}, err
	})
	writeJSON(w, status, ans)
}

// handleAllocator takes one torch.cuda.memory_stats() snapshot. Over the
// unix socket the peer's pid (SO_PEERCRED) stands in for a missing "pid".
func (s *Server) handleAllocator(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 1<<20, limitAllocator)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	refuse := func(err error) {
		writeError(w, http.StatusBadRequest, Answer{Rejected: []Rejection{{Index: 0, Error: err.Error()}}, Error: "no acceptable item"})
	}
	snap, err := telemetry.DecodeSnapshot(body)
	if err != nil {
		refuse(err)
		return
	}
	rec, id, err := s.Allocs.Apply(snap, peerPID(r))
	if err != nil {
		refuse(err)
		return
	}
	env, err := s.Envelopes.Allocator(rec, map[string]string{"gpu_id": id.GPU, "pipeline": id.Pipeline, "model_id": id.ModelID}, snap.SessionID)
	if err != nil {
		refuse(err)
		return
	}
	session := snap.SessionID
	if session == "" {
		session = rec.SessionID()
	}
	status, ans := s.ingest(r.Context(), "allocator", []item{{raw: env}}, func(raw json.RawMessage) (pipeline.Entry, error) {
		return pipeline.Entry{Env: raw, Type: telemetry.TypeAllocatorSample, Session: session}, nil
	})
	writeJSON(w, status, ans)
}
