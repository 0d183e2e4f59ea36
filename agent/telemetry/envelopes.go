package telemetry

import (
	"fmt"

	"github.com/livepeer/edgerelay/envelope"
)

// TypeAllocatorSample is the envelope family of a normalized record.
const TypeAllocatorSample = "allocator_sample"

// Envelopes stamps normalized records as allocator_sample envelopes: data
// holds the record's fields plus identity (gpu_id from the GPU sampler when
// the device index is known to it; the session's identity when the record's
// session_id names an attached session). It is safe for concurrent use.
type Envelopes struct {
	Stamper *envelope.Stamper
	// UUIDOf returns the UUID of a local GPU index; nil without GPUs.
	UUIDOf func(index int) (string, bool)
	// Session returns an attached session's identity, nil when unknown.
	Session  func(id string) envelope.Identity
	MaxBytes int // the largest envelope accepted
}

// Allocator stamps rec; extra identity values (non-empty) are added to data
// and session, when set, overrides the record's own session id.
func (e *Envelopes) Allocator(rec Record, extra map[string]string, session string) ([]byte, error) {
	data := make(map[string]any, len(rec)+8)
	for k, v := range rec {
		data[k] = v
	}
	for k, v := range extra {
		if v != "" {
			data[k] = v
		}
	}
	if _, ok := data["gpu_id"]; !ok && e.UUIDOf != nil && rec.DeviceID() >= 0 {
		if uuid, ok := e.UUIDOf(int(rec.DeviceID())); ok {
			data["gpu_id"] = uuid
		}
	}
	if session == "" {
		session = rec.SessionID()
	}
	env, err := e.Stamper.Stamp(TypeAllocatorSample, data, e.Session(session))
	if err != nil {
		return nil, err
	}
	if e.MaxBytes > 0 && len(env) > e.MaxBytes {
		return nil, fmt.Errorf("record: %d bytes once stamped is over the limit of %d", len(env), e.MaxBytes)
	}
	return env, nil
}
