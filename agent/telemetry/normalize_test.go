package telemetry

import (
	"encoding/json"
	"reflect"
	"testing"
)

func envOf(m map[string]string) func(string) string {
	if m == nil {
		return nil
	}
	return func(k string) string { return m[k] }
}

type wantID struct {
	job                    any // nil or string
	rank, local, worldSize int64
}

func identityOf(t *testing.T, rec Record) wantID {
	t.Helper()
	var w wantID
	w.job = rec["job_id"]
	var ok1, ok2, ok3 bool
	w.rank, ok1 = rec.Int("rank")
	w.local, ok2 = rec.Int("local_rank")
	w.worldSize, ok3 = rec.Int("world_size")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("identity fields missing in %v", rec)
	}
	return w
}

// Distributed identity: explicit, metadata (legacy records only), each
// environment group in order, job id variables, trimming, defaults.
func TestNormalizeIdentity(t *testing.T) {
	cases := []struct {
		name   string
		set    map[string]string // fields of the record (raw JSON)
		legacy bool              // a legacy record of set's fields, else baseV3 with them
		env    map[string]string
		want   wantID
		err    string
	}{
		{name: "defaults, no environment", want: wantID{nil, 0, 0, 1}},
		{name: "defaults, empty environment", env: map[string]string{}, want: wantID{nil, 0, 0, 1}},
		{name: "torchrun group", env: map[string]string{"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, want: wantID{nil, 3, 1, 8}},
		{name: "missing local rank takes rank", env: map[string]string{"RANK": "3", "WORLD_SIZE": "8"}, want: wantID{nil, 3, 3, 8}},
		{name: "blank local rank takes rank", env: map[string]string{"RANK": "3", "LOCAL_RANK": "  ", "WORLD_SIZE": "8"}, want: wantID{nil, 3, 3, 8}},
		{name: "values trimmed", env: map[string]string{"RANK": " 2 ", "LOCAL_RANK": "\t0\n", "WORLD_SIZE": " 4"}, want: wantID{nil, 2, 0, 4}},
		{name: "torchrun wins over ompi and slurm", env: map[string]string{
			"RANK": "1", "WORLD_SIZE": "2",
			"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "6",
			"SLURM_PROCID": "7", "SLURM_NTASKS": "9"}, want: wantID{nil, 1, 1, 2}},
		{name: "ompi group", env: map[string]string{"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_SIZE": "6"}, want: wantID{nil, 5, 1, 6}},
		{name: "ompi wins over slurm", env: map[string]string{
			"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "6",
			"SLURM_PROCID": "7", "SLURM_LOCALID": "0", "SLURM_NTASKS": "9"}, want: wantID{nil, 5, 5, 6}},
		{name: "slurm group", env: map[string]string{"SLURM_PROCID": "7", "SLURM_LOCALID": "3", "SLURM_NTASKS": "9"}, want: wantID{nil, 7, 3, 9}},
		{name: "torchrun without size is skipped", env: map[string]string{"RANK": "1", "LOCAL_RANK": "1", "SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, want: wantID{nil, 2, 2, 4}},
		{name: "ompi without rank is skipped", env: map[string]string{"OMPI_COMM_WORLD_SIZE": "4", "SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, want: wantID{nil, 1, 1, 2}},
		{name: "blank rank is absent", env: map[string]string{"RANK": " ", "WORLD_SIZE": "4"}, want: wantID{nil, 0, 0, 1}},
		{name: "incomplete groups only: defaults", env: map[string]string{"RANK": "1", "OMPI_COMM_WORLD_SIZE": "2", "SLURM_PROCID": "3"}, want: wantID{nil, 0, 0, 1}},
		{name: "job id torchelastic", env: map[string]string{"TORCHELASTIC_RUN_ID": "te-1", "SLURM_JOB_ID": "77"}, want: wantID{"te-1", 0, 0, 1}},
		{name: "job id blank torchelastic falls to slurm", env: map[string]string{"TORCHELASTIC_RUN_ID": " ", "SLURM_JOB_ID": " 77 "}, want: wantID{"77", 0, 0, 1}},
		{name: "explicit fields beat environment", set: map[string]string{"rank": "0", "local_rank": "0", "world_size": "1", "job_id": `"mine"`},
			env: map[string]string{"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "te"}, want: wantID{"mine", 0, 0, 1}},
		{name: "explicit null job_id falls through to environment", set: map[string]string{"job_id": "null"},
			env: map[string]string{"SLURM_JOB_ID": "9"}, want: wantID{"9", 0, 0, 1}},
		{name: "legacy: metadata beats environment", legacy: true, set: map[string]string{"metadata": `{"rank":1,"world_size":4,"job_id":"meta-job","keep":true}`},
			env: map[string]string{"RANK": "3", "LOCAL_RANK": "2", "WORLD_SIZE": "8", "SLURM_JOB_ID": "9"}, want: wantID{"meta-job", 1, 2, 4}},
		{name: "legacy: explicit beats metadata", legacy: true, set: map[string]string{"rank": "1", "world_size": "2", "metadata": `{"rank":0,"local_rank":1,"world_size":9}`},
			want: wantID{nil, 1, 1, 2}},
		{name: "legacy: explicit null falls to metadata", legacy: true, set: map[string]string{"rank": "null", "world_size": "null", "metadata_rank": "1", "metadata_world_size": "2"},
			want: wantID{nil, 1, 1, 2}},
		{name: "legacy: metadata null falls through", legacy: true, set: map[string]string{"metadata": `{"rank":null,"world_size":null,"job_id":null}`},
			env: map[string]string{"RANK": "1", "WORLD_SIZE": "2"}, want: wantID{nil, 1, 1, 2}},
		{name: "legacy: bad metadata rank", legacy: true, set: map[string]string{"metadata": `{"rank":"1"}`}, err: "metadata.rank: must be an integer, got a string"},
		{name: "v3: metadata not read, the environment is", set: map[string]string{"metadata": `{"rank":1,"world_size":4,"job_id":"meta-job","keep":true}`},
			env: map[string]string{"RANK": "3", "LOCAL_RANK": "2", "WORLD_SIZE": "8"}, want: wantID{nil, 3, 2, 8}},
		{name: "v3: bad metadata identity ignored", set: map[string]string{"metadata": `{"rank":"x","world_size":0,"job_id":""}`}, want: wantID{nil, 0, 0, 1}},
		{name: "bad env rank", env: map[string]string{"RANK": "one", "WORLD_SIZE": "2"}, err: `environment RANK: must be an integer, got "one"`},
		{name: "bad env local rank", env: map[string]string{"RANK": "1", "LOCAL_RANK": "1.0", "WORLD_SIZE": "2"}, err: `environment LOCAL_RANK: must be an integer, got "1.0"`},
		{name: "bad env size", env: map[string]string{"SLURM_PROCID": "1", "SLURM_NTASKS": "x"}, err: `environment SLURM_NTASKS: must be an integer, got "x"`},
		{name: "env rank beyond size", env: map[string]string{"RANK": "2", "WORLD_SIZE": "2"}, err: "rank: 2 must be < world_size 2; local_rank: 2 must be < world_size 2"},
		{name: "env size 0", env: map[string]string{"RANK": "0", "WORLD_SIZE": "0"}, err: "world_size: must be >= 1, got 0"},
		{name: "env negative rank", env: map[string]string{"RANK": "-1", "WORLD_SIZE": "2"}, err: "rank: must be >= 0, got -1; local_rank: must be >= 0, got -1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := edit(t, baseV3, tc.set)
			if tc.legacy {
				raw = edit(t, `{"timestamp_ns":5}`, tc.set)
			}
			rec, err := Normalize(raw, NormalizeOptions{Getenv: envOf(tc.env), AllowLegacy: tc.legacy})
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := identityOf(t, rec); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("identity = %+v, want %+v", got, tc.want)
			}
			// Legacy conversion removes identity keys from metadata; a v3
			// record's metadata is left as it is.
			meta := rec["metadata"].(map[string]any)
			want := map[string]any{}
			if in, ok := decodeMeta(t, tc.set["metadata"]); ok {
				want = in
			}
			if tc.legacy {
				for _, k := range []string{"job_id", "rank", "local_rank", "world_size"} {
					delete(want, k)
				}
			}
			if !reflect.DeepEqual(meta, want) {
				t.Errorf("metadata = %v, want %v", meta, want)
			}
			revalidate(t, rec)
		})
	}
}

func decodeMeta(t *testing.T, raw string) (map[string]any, bool) {
	t.Helper()
	if raw == "" {
		return nil, false
	}
	m, err := decodeObject([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return m, true
}

// revalidate checks a normalized record is a valid v3 record once encoded.
func revalidate(t *testing.T, rec Record) Record {
	t.Helper()
	out, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Validate(out)
	if err != nil {
		t.Fatalf("normalized record invalid: %v\n%s", err, out)
	}
	if v, _ := again.Int("schema_version"); v != 3 {
		t.Fatalf("schema_version = %d", v)
	}
	return again
}

func TestNormalizeV2Upgrade(t *testing.T) {
	t.Run("derived session id is stable", func(t *testing.T) {
		a, err := Normalize(v2(t, nil), NormalizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Normalize(v2(t, map[string]string{"allocator_allocated_bytes": "7"}), NormalizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := Normalize(v2(t, map[string]string{"pid": "4243"}), NormalizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		d, err := Normalize(v2(t, map[string]string{"timestamp_ns": "1"}), NormalizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if a.SessionID() == "" || a.SessionID() != b.SessionID() {
			t.Fatalf("same (timestamp, host, pid) gave %q and %q", a.SessionID(), b.SessionID())
		}
		if c.SessionID() == a.SessionID() || d.SessionID() == a.SessionID() {
			t.Fatal("different (timestamp, host, pid) gave the same id")
		}
		// Stormlog's own id for this record (its stable_legacy_session_id).
		if want := "legacy-de286aaa-328e-50ba-8191-38089c99c094"; a.SessionID() != want || LegacySessionID("1767908945298000000", "node-a", "4242") != want {
			t.Fatalf("session %q, want %q", a.SessionID(), want)
		}
		revalidate(t, a)
	})
	t.Run("session id from metadata", func(t *testing.T) {
		r, err := Normalize(v2(t, map[string]string{"metadata": `{"session_id":"  meta-sess ","x":1}`}), NormalizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.SessionID() != "  meta-sess " { // as written, as stormlog keeps it
			t.Fatalf("session %q", r.SessionID())
		}
		if meta := r["metadata"].(map[string]any); meta["session_id"] != "  meta-sess " || meta["x"] == nil {
			t.Fatalf("metadata %v, want it left as it is", meta)
		}
	})
	t.Run("session ids stormlog's loader replaces", func(t *testing.T) {
		derived := "legacy-de286aaa-328e-50ba-8191-38089c99c094"
		for name, raw := range map[string]json.RawMessage{
			"v3 blank":               edit(t, baseV3, map[string]string{"session_id": `"\u001f "`}),
			"v3 number":              edit(t, baseV3, map[string]string{"session_id": "5"}),
			"v3 missing":             edit(t, baseV3, nil, "session_id"),
			"v2 with a session_id":   v2(t, map[string]string{"session_id": `""`}),
			"v3 null, blank in meta": edit(t, baseV3, map[string]string{"session_id": "null", "metadata": `{"session_id":" "}`}),
		} {
			r, err := Normalize(raw, NormalizeOptions{})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if r.SessionID() != derived {
				t.Errorf("%s: session %q, want %q", name, r.SessionID(), derived)
			}
			if _, err := Validate(raw); err == nil {
				t.Errorf("%s: Validate accepted it; stormlog's validator does not", name)
			}
		}
		r, err := Normalize(edit(t, baseV3, nil, "session_id"), NormalizeOptions{DefaultSessionID: "file-sess"})
		if err != nil || r.SessionID() != "file-sess" {
			t.Fatalf("default session: %v %v", r.SessionID(), err)
		}
	})
	t.Run("invalid v2 rejected before upgrade", func(t *testing.T) {
		_, err := Normalize(v2(t, nil, "host"), NormalizeOptions{})
		if err == nil || err.Error() != "missing fields: host" {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("v3 kept", func(t *testing.T) {
		r, err := Normalize(json.RawMessage(baseV3), NormalizeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.SessionID() != "sess-1" {
			t.Fatal(r.SessionID())
		}
	})
	t.Run("legacy off", func(t *testing.T) {
		_, err := Normalize(json.RawMessage(`{"timestamp":1,"memory_allocated":5}`), NormalizeOptions{})
		if err == nil || err.Error() != "schema_version: missing: a legacy record, and legacy conversion is off" {
			t.Fatalf("err = %v", err)
		}
	})
}

// Normalizing a normalized record changes nothing.
func TestNormalizeIdempotent(t *testing.T) {
	for _, raw := range []json.RawMessage{
		json.RawMessage(baseV3),
		v2(t, map[string]string{"metadata": `{"rank":1,"world_size":2}`}),
		json.RawMessage(`{"timestamp":1767908945.5,"device":"cuda:1","memory_allocated":10,"metadata_rank":1,"metadata_world_size":2}`),
	} {
		a, err := Normalize(raw, NormalizeOptions{AllowLegacy: true})
		if err != nil {
			t.Fatal(err)
		}
		out, _ := json.Marshal(a)
		b, err := Normalize(out, NormalizeOptions{AllowLegacy: true})
		if err != nil {
			t.Fatal(err)
		}
		out2, _ := json.Marshal(b)
		if string(out) != string(out2) {
			t.Fatalf("not idempotent:\n%s\n%s", out, out2)
		}
	}
}
