package telemetry

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// Seeds are committed under testdata/fuzz/<FuzzName>/.

func FuzzDecodeRecords(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		items, err := DecodeRecords(body)
		if err != nil {
			if items != nil {
				t.Fatal("items with an error")
			}
			return
		}
		for i, it := range items {
			if it.Index != i {
				t.Fatalf("item %d has index %d", i, it.Index)
			}
			if (it.Err == nil) == (it.Raw == nil) {
				t.Fatalf("item %d: raw %q err %v", i, it.Raw, it.Err)
			}
			if it.Offset < 0 || it.Offset > len(body) {
				t.Fatalf("item %d: offset %d of %d", i, it.Offset, len(body))
			}
			if it.Raw != nil {
				if !validPy(it.Raw) {
					t.Fatalf("item %d not JSON: %q", i, it.Raw)
				}
				if !bytes.HasPrefix(body[it.Offset:], it.Raw) {
					t.Fatalf("item %d: offset %d does not hold %q", i, it.Offset, it.Raw)
				}
			}
			if it.Line < 0 {
				t.Fatalf("item %d: line %d", i, it.Line)
			}
		}
	})
}

func FuzzNormalize(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte, legacy bool) {
		if v, err := Validate(raw); err == nil {
			if _, err := json.Marshal(v); err != nil {
				t.Fatalf("valid record does not encode: %v", err)
			}
		}
		rec, err := Normalize(raw, NormalizeOptions{AllowLegacy: legacy})
		if err != nil {
			return
		}
		out, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("normalized record does not encode: %v", err)
		}
		again, err := Validate(out)
		if err != nil {
			t.Fatalf("normalized record invalid: %v\n%s", err, out)
		}
		if v, _ := again.Int("schema_version"); v != 3 {
			t.Fatalf("schema_version %d", v)
		}
		// Normalizing again changes nothing.
		rec2, err := Normalize(out, NormalizeOptions{})
		if err != nil {
			t.Fatalf("second Normalize: %v\n%s", err, out)
		}
		out2, _ := json.Marshal(rec2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("not idempotent:\n%s\n%s", out, out2)
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := DecodeSnapshot(body)
		if err != nil {
			return
		}
		if _, ok := s.Stats[StatAllocated]; !ok {
			t.Fatal("accepted without allocated")
		}
		if s.GPUUUID == "" && s.DeviceIndex == nil {
			t.Fatal("accepted without a GPU")
		}
		a, err := NewAllocators(AllocatorsOptions{Host: "fuzz", Now: func() time.Time { return time.Unix(1, 0) }})
		if err != nil {
			t.Fatal(err)
		}
		rec, _, err := a.Apply(s, 1234)
		if err != nil {
			return // e.g. a UUID without an index and no sampler, or a bad env
		}
		out, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Validate(out); err != nil {
			t.Fatalf("allocator record invalid: %v\n%s", err, out)
		}
	})
}
