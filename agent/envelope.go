package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ClientSource is data.client_source of every envelope the agent stamps.
const ClientSource = "edgerelay"

// identityKeys are the identity fields that live flat inside data
// (spec/envelope.md). They are omitted when unknown: never "" or null.
var identityKeys = []string{
	"host", "node_id", "region", "orchestrator_address", "gpu_id", "pipeline",
	"model_id", "stream_id", "request_id", "session_id", "connection_id",
}

// Identity is what the agent knows about where an event was born. Empty
// fields are unknown and are not written.
type Identity map[string]string

// Stamper turns {type, data} events into envelopes. It is safe for
// concurrent use: it holds no mutable state.
type Stamper struct {
	node    Identity // host, node_id, region, orchestrator_address
	gateway string
	now     func() time.Time
}

// NewStamper returns a stamper that adds the node identity to every event.
func NewStamper(node Identity, gateway string, now func() time.Time) *Stamper {
	if now == nil {
		now = time.Now
	}
	return &Stamper{node: node, gateway: gateway, now: now}
}

// Stamp builds an envelope: a fresh UUIDv7, the current time in epoch
// milliseconds as a decimal string, data.type (unless data names a subtype),
// data.client_source, and identity from session then node for every key that
// data does not already carry. Values in data may be any JSON-marshalable
// value, including json.RawMessage and json.Number. Stamp modifies data.
func (s *Stamper) Stamp(typ string, data map[string]any, session Identity) ([]byte, error) {
	if typ == "" {
		return nil, errors.New("type: must be a non-empty string")
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("stamp: uuid: %w", err)
	}
	for _, k := range identityKeys {
		if v, ok := data[k]; ok && isEmptyIdentity(v) {
			delete(data, k)
		}
		if _, ok := data[k]; ok {
			continue
		}
		if v := session[k]; v != "" {
			data[k] = v
		} else if v := s.node[k]; v != "" {
			data[k] = v
		}
	}
	if _, ok := data["type"]; !ok {
		data["type"] = typ
	}
	data["client_source"] = ClientSource
	body, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	return appendEnvelope(make([]byte, 0, len(body)+128), id.String(), typ, s.now(), s.gateway, body), nil
}

// appendEnvelope writes the envelope in the field order of spec/envelope.md.
func appendEnvelope(b []byte, id, typ string, ts time.Time, gateway string, data []byte) []byte {
	b = append(b, `{"id":"`...)
	b = append(b, id...)
	b = append(b, `","type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"timestamp":"`...)
	b = strconv.AppendInt(b, ts.UnixMilli(), 10)
	b = append(b, `","gateway":`...)
	b = appendJSONString(b, gateway)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

func isEmptyIdentity(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(x) == ""
	case json.RawMessage:
		t := bytes.TrimSpace(x)
		return len(t) == 0 || string(t) == "null" || string(t) == `""`
	}
	return false
}

// envelopeFields are the only top-level keys of an envelope.
var envelopeFields = []string{"id", "type", "timestamp", "gateway", "data"}

// CheckedEnvelope is what CheckEnvelope learned about a prebuilt envelope.
type CheckedEnvelope struct {
	ID        string
	Type      string
	SessionID string // data.session_id, "" if absent
}

// CheckEnvelope validates a prebuilt envelope without changing it: non-empty
// string id and type, timestamp a string of digits, gateway a string if
// present, data an object or array, no other top-level field. Errors name the
// field.
func CheckEnvelope(raw []byte) (CheckedEnvelope, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return CheckedEnvelope{}, fmt.Errorf("envelope: %v", err)
	}
	return checkEnvelopeFields(m)
}

func checkEnvelopeFields(m map[string]json.RawMessage) (CheckedEnvelope, error) {
	var ce CheckedEnvelope
	var errs []error
	for k := range m {
		if !slices.Contains(envelopeFields, k) {
			errs = append(errs, fmt.Errorf("unknown field %q (an envelope has id, type, timestamp, gateway, data)", k))
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	var err error
	if ce.ID, err = nonEmptyString(m, "id"); err != nil {
		errs = append(errs, err)
	}
	if ce.Type, err = nonEmptyString(m, "type"); err != nil {
		errs = append(errs, err)
	}
	if ts, ok := m["timestamp"]; !ok {
		errs = append(errs, errors.New("timestamp: missing"))
	} else {
		var s string
		if json.Unmarshal(ts, &s) != nil || !isDigits(s) {
			errs = append(errs, errors.New("timestamp: must be a string of digits (milliseconds since the Unix epoch)"))
		}
	}
	if gw, ok := m["gateway"]; ok {
		var s string
		if json.Unmarshal(gw, &s) != nil {
			errs = append(errs, errors.New("gateway: must be a string"))
		}
	}
	data, ok := m["data"]
	switch {
	case !ok:
		errs = append(errs, errors.New("data: missing"))
	case firstByte(data) == '{':
		var d struct {
			SessionID json.RawMessage `json:"session_id"`
		}
		if json.Unmarshal(data, &d) == nil && len(d.SessionID) > 0 {
			var s string
			if json.Unmarshal(d.SessionID, &s) == nil {
				ce.SessionID = s
			}
		}
	case firstByte(data) == '[':
	default:
		errs = append(errs, errors.New("data: must be a JSON object or array"))
	}
	return ce, errors.Join(errs...)
}

func nonEmptyString(m map[string]json.RawMessage, k string) (string, error) {
	v, ok := m[k]
	if !ok {
		return "", fmt.Errorf("%s: missing", k)
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil || strings.TrimSpace(s) == "" {
		return "", fmt.Errorf("%s: must be a non-empty string", k)
	}
	return s, nil
}

func isDigits(s string) bool {
	if s == "" || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}
