package telemetry

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// NormalizeOptions configures Normalize. The zero value accepts v2 and v3
// records, rejects legacy ones and reads no environment.
type NormalizeOptions struct {
	// AllowLegacy converts records without schema_version
	// (spec/stormlog.md, "Legacy records").
	AllowLegacy bool
	// Getenv supplies the environment for distributed identity (RANK,
	// WORLD_SIZE, …); nil means no environment.
	Getenv func(string) string
}

// Normalize validates raw and returns it as a v3 record: a v2 record gets a
// session_id (metadata's session_id, else a stable id derived from
// timestamp_ns, host and pid); a legacy record is converted when
// opts.AllowLegacy; then job_id, rank, local_rank and world_size are resolved
// (explicit field, metadata, environment, defaults), written as fields, and
// removed from metadata. The result is validated again, so it is always a
// valid v3 record. Safe for concurrent use.
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
		var err error
		if m, err = convertLegacy(m); err != nil {
			return nil, err
		}
	} else {
		if err := check(m); err != nil {
			return nil, err
		}
		if v, _ := intValue(m[fieldSchemaVersion]); v == 2 {
			upgradeV2(m)
		}
	}
	meta, _ := m[fieldMetadata].(map[string]any)
	id, probs := resolveIdentity(m, meta, opts.Getenv)
	if len(probs) > 0 {
		return nil, &Error{Problems: probs}
	}
	setIdentity(m, id)
	for _, f := range identityFields {
		delete(meta, f)
	}
	if err := check(m); err != nil {
		return nil, err
	}
	return Record(m), nil
}

// upgradeV2 turns a valid v2 record into v3 in place.
func upgradeV2(m map[string]any) {
	meta := m[fieldMetadata].(map[string]any) // checked: an object
	session := ""
	if s, ok := meta[fieldSessionID].(string); ok {
		session = strings.TrimSpace(s)
	}
	if session != "" {
		delete(meta, fieldSessionID) // promoted to the field
	} else {
		ts, _ := intValue(m[fieldTimestampNS])
		pid, _ := intValue(m[fieldPID])
		session = derivedSessionID(ts, m[fieldHost].(string), pid)
	}
	m[fieldSessionID] = session
	m[fieldSchemaVersion] = num(3)
}

func setIdentity(m map[string]any, id identity) {
	if id.jobID == "" {
		m[fieldJobID] = nil
	} else {
		m[fieldJobID] = id.jobID
	}
	m[fieldRank] = num(id.rank)
	m[fieldLocalRank] = num(id.localRank)
	m[fieldWorldSize] = num(id.worldSize)
}

// sessionNamespace scopes the name-based UUIDs of derived session ids, so
// every agent derives the same id from the same record.
var sessionNamespace = uuid.MustParse("6f1c9a52-3d0e-4b7a-9c41-5e2d8f7a0b13")

// derivedSessionID is a stable session id for a record that has none: a
// name-based (SHA-1, version 5) UUID of timestamp, host and pid.
func derivedSessionID(timestampNS int64, host string, pid int64) string {
	name := strconv.FormatInt(timestampNS, 10) + "|" + host + "|" + strconv.FormatInt(pid, 10)
	return uuid.NewSHA1(sessionNamespace, []byte(name)).String()
}
