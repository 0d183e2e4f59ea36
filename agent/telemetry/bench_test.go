package telemetry

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// Benchmarks report against a baseline measured in the same run: decoding
// the same bytes into map[string]any with UseNumber, the least any checker
// of these records must do.

func benchRecord(b *testing.B) []byte {
	return edit(b, baseV3, map[string]string{"metadata": `{"phase":"train","step":1234}`, "rank": "1", "world_size": "2"})
}

func BenchmarkNormalize(b *testing.B) {
	raw := benchRecord(b)
	b.Run("baseline-decode", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("validate", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := Validate(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("normalize", func(b *testing.B) {
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := Normalize(raw, NormalizeOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	legacy := []byte(`{"timestamp":1767908945.298,"device":"cuda:1","memory_allocated":1048576,"memory_reserved":2097152,"total_memory":85899345920,"pid":77,"host":"node-b","backend":"cuda","metadata_phase":"warmup"}`)
	b.Run("normalize-legacy", func(b *testing.B) {
		b.SetBytes(int64(len(legacy)))
		for b.Loop() {
			if _, err := Normalize(legacy, NormalizeOptions{AllowLegacy: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkDecodeRecords(b *testing.B) {
	line := string(benchRecord(b))
	body := []byte(strings.Repeat(line+"\n", 1000))
	b.Run("baseline-split-valid", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			for _, l := range bytes.Split(body, []byte{'\n'}) {
				if len(l) > 0 && !json.Valid(l) {
					b.Fatal("invalid")
				}
			}
		}
	})
	b.Run("jsonlines", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if items, err := DecodeRecords(body); err != nil || len(items) != 1000 {
				b.Fatal(err)
			}
		}
	})
	arr := []byte("[" + strings.TrimSuffix(strings.Repeat(line+",", 1000), ",") + "]")
	b.Run("array", func(b *testing.B) {
		b.SetBytes(int64(len(arr)))
		for b.Loop() {
			if items, err := DecodeRecords(arr); err != nil || len(items) != 1000 {
				b.Fatal(err)
			}
		}
	})
}
