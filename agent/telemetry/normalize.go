package telemetry

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// NormalizeOptions configures Normalize. The zero value accepts v2 and v3
// records, rejects legacy ones and reads no environment: what stormlog's
// loader does with legacy conversion off.
type NormalizeOptions struct {
	// AllowLegacy converts records without schema_version
	// (spec/stormlog.md, "Legacy records").
	AllowLegacy bool
	// Getenv supplies the environment for distributed identity (RANK,
	// WORLD_SIZE, …); nil means no environment, as in stormlog's loader.
	Getenv func(string) string
	// DefaultSessionID is the session id of a record that has none; ""
	// means stormlog's stable id of its (timestamp, host, pid). Stormlog's
	// loader passes one per file or sink segment.
	DefaultSessionID string
}

// Normalize validates raw and returns it as a v3 record, as stormlog's
// loader (telemetry_event_from_record) turns a record into its canonical
// event, field for field:
//
//   - v2 and v3: the session id is the record's session_id when it is a
//     non-blank string, else metadata's, else opts.DefaultSessionID, else
//     stormlog's stable id (LegacySessionID of timestamp_ns, host and pid).
//     The record, with that session id, must then pass v3 validation.
//     job_id, rank, local_rank and world_size come from the explicit fields
//     (null = absent), then the environment, then the defaults; metadata is
//     left as it is.
//   - legacy (no schema_version), when opts.AllowLegacy: converted as
//     stormlog converts it (legacy.go); keys it does not read are dropped,
//     as stormlog drops them, except metadata and metadata_<x> keys.
//
// The result always holds the 23 v3 fields and passes Validate. Safe for
// concurrent use.
func Normalize(raw json.RawMessage, opts NormalizeOptions) (Record, error) {
	m, err := decodeObject(raw)
	if err != nil {
		return nil, err
	}
	return normalize(m, opts)
}

func normalize(m map[string]any, opts NormalizeOptions) (Record, error) {
	if _, ok := m[fieldSchemaVersion]; !ok {
		if !opts.AllowLegacy {
			return nil, &Error{Problems: []string{"schema_version: missing: a legacy record, and legacy conversion is off"}}
		}
		return convertLegacy(m, opts)
	}
	sv := m[fieldSchemaVersion]
	if ver, prob := pyIntValue(sv); prob != "" || (ver.cmp64(2) != 0 && ver.cmp64(3) != 0) {
		return nil, &Error{Problems: []string{"schema_version: unsupported schema_version " + literal(sv)}}
	}
	meta := map[string]any{}
	if v, ok := m[fieldMetadata]; ok {
		mm, isObj := v.(map[string]any)
		if !isObj {
			return nil, &Error{Problems: []string{"metadata: must be a JSON object, got " + kind(v)}}
		}
		meta = mm
	}
	var probs []string
	id, idProbs := resolveIdentity(m, nil, opts.Getenv)
	probs = append(probs, idProbs...)
	session, err := resolveSessionID(m, meta, opts.DefaultSessionID)
	if err != nil {
		probs = append(probs, err.Error())
	}
	if len(probs) > 0 {
		return nil, &Error{Problems: probs}
	}

	// The record with its session id must be a valid v3 record: a v2
	// record's fields plus session_id are the v3 set.
	up := make(map[string]any, len(knownV3))
	for k, v := range m {
		up[k] = v
	}
	up[fieldSchemaVersion] = num(3)
	up[fieldSessionID] = session
	if err := check(up); err != nil {
		return nil, err
	}
	out := make(Record, len(knownV3))
	for _, f := range requiredV3 {
		out[f] = up[f]
	}
	out[fieldMetadata] = copyMap(meta)
	setIdentity(out, id)
	return out, nil
}

// resolveSessionID is stormlog's choice of a record's session id: the
// record's session_id, or when that is null, metadata's, if it is a
// non-blank string (kept as written); else def; else stormlog's stable id
// of the record's timestamp_ns (else timestamp), host and pid as written.
func resolveSessionID(m, meta map[string]any, def string) (string, error) {
	v := m[fieldSessionID]
	if v == nil {
		v = meta[fieldSessionID]
	}
	if s, ok := v.(string); ok && !pyBlank(s) {
		return s, nil
	}
	if def != "" {
		return def, nil
	}
	ts, ok := m[fieldTimestampNS]
	if !ok {
		if ts, ok = m["timestamp"]; !ok {
			ts = "unknown"
		}
	}
	host, ok := m[fieldHost]
	if !ok {
		host = unknownHost
	}
	pid, ok := m[fieldPID]
	if !ok {
		pid = num(-1)
	}
	return stableSessionID(ts, host, pid)
}

// stableSessionID is stormlog's stable_legacy_session_id(*parts): "legacy-"
// and the name-based (SHA-1) UUID, in the URL namespace, of Python's str()
// of the non-null parts joined by "::".
func stableSessionID(parts ...any) (string, error) {
	strs := make([]string, 0, len(parts))
	for _, p := range parts {
		if p == nil {
			continue
		}
		s, ok := pyStr(p)
		if !ok {
			return "", fmt.Errorf("session_id: cannot derive one from %s", kind(p))
		}
		if hasSurrogate(s) {
			return "", fmt.Errorf("session_id: cannot derive one from %q: it holds an unpaired UTF-16 surrogate", s)
		}
		strs = append(strs, s)
	}
	return LegacySessionID(strs...), nil
}

// LegacySessionID is stormlog's stable_legacy_session_id for string parts:
// "legacy-" + uuid5(NAMESPACE_URL, "part1::part2::…"). Stormlog gives a
// record without a session id LegacySessionID(timestamp, host, pid), each
// written as Python's str() writes it (an integer's digits; a float's
// shortest repr, such as "1767908945.5" or "1e+16").
func LegacySessionID(parts ...string) string {
	return "legacy-" + uuid.NewSHA1(uuid.NameSpaceURL, []byte(strings.Join(parts, "::"))).String()
}

func setIdentity(m map[string]any, id identity) {
	if id.jobID == "" {
		m[fieldJobID] = nil
	} else {
		m[fieldJobID] = id.jobID
	}
	m[fieldRank] = id.rank.number()
	m[fieldLocalRank] = id.localRank.number()
	m[fieldWorldSize] = id.worldSize.number()
}

func copyMap(m map[string]any) map[string]any {
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// sessionNamespace scopes the name-based UUIDs of the session ids the agent
// derives for its own allocator records, so every agent derives the same id
// from the same (time, host, pid).
var sessionNamespace = uuid.MustParse("6f1c9a52-3d0e-4b7a-9c41-5e2d8f7a0b13")

// derivedSessionID is a stable session id for the allocator records of a
// process that sent none: a name-based (SHA-1, version 5) UUID of
// timestamp, host and pid.
func derivedSessionID(timestampNS int64, host string, pid int64) string {
	name := fmt.Sprintf("%d|%s|%d", timestampNS, host, pid)
	return uuid.NewSHA1(sessionNamespace, []byte(name)).String()
}
