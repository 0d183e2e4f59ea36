package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/livepeer/edgerelay/agent/pipeline"
	"github.com/livepeer/edgerelay/agent/telemetry"
	"github.com/livepeer/edgerelay/envelope"
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
		if d.Err == nil {
			// What the decoder would take silently: a repeated key, read
			// as its last value.
			if err := envelope.ValidateRecord(d.Raw); err != nil && !envelope.IsSyntax(err) {
				items[i].err = err
			}
		}
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
	writeAnswer(w, status, ans)
}

// handleAllocator takes one torch.cuda.memory_stats() snapshot. Over the
// unix socket the pid is the kernel's (SO_PEERCRED: the process that opened
// the connection), whatever the snapshot says: a "pid" that differs is kept
// as metadata.claimed_pid and attributes nothing (a runner in a container
// sends its own namespace's pid, the agent on the host sees the host's).
// Over TCP, where the kernel does not say who the peer is, the snapshot's
// "pid" is taken as sent.
func (s *Server) handleAllocator(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r, 1<<20, limitAllocator)
	if err != nil {
		writeBodyError(w, err)
		return
	}
	refuse := func(err error) {
		writeError(w, http.StatusBadRequest, Answer{Rejected: []Rejection{{Index: 0, Error: err.Error()}}, Error: "no acceptable item"})
	}
	if err := envelope.ValidateRecord(body); err != nil && !envelope.IsSyntax(err) {
		refuse(err) // a repeated "pid" would be read as its last value
		return
	}
	snap, err := telemetry.DecodeSnapshot(body)
	if err != nil {
		refuse(err)
		return
	}
	peer := peerPID(r)
	claimed := snap.PID
	if peer > 0 {
		kernel := int64(peer)
		snap.PID = &kernel
	}
	rec, id, err := s.Allocs.Apply(snap, peer)
	if err != nil {
		refuse(err)
		return
	}
	if claimed != nil && peer > 0 && *claimed != int64(peer) {
		if meta, ok := rec["metadata"].(map[string]any); ok {
			meta["claimed_pid"] = json.Number(strconv.FormatInt(*claimed, 10))
		}
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
	writeAnswer(w, status, ans)
}
