package envelope

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

var validCases = []string{
	``, ` `, `1`, ` 1 `, `-0`, `-`, `01`, `1.`, `1.5`, `1e`, `1e+`, `1E-7`, `-12.5e3`, `0.0e0`, `1x`,
	`"`, `""`, `"a"`, `"\"`, `"\\"`, `"\u12"`, `"\u12g4"`, `"\u00e9"`, `"\x"`, "\"\x01\"", "\"\x7f\"", "\"\xff\"",
	`true`, `tru`, `truex`, `false`, `null`, `nul`, `[]`, `[ ]`, `[1,]`, `[,1]`, `[1 2]`, `[1,2]`,
	`{}`, `{ }`, `{"a":1}`, `{"a" : 1 , "b":[true,null]}`, `{"a":}`, `{"a"}`, `{a:1}`, `{"a":1,}`, `{"a":1 "b":2}`,
	`[{"id":"x","data":{"n":[1,2,{"k":"v"}]}}]`, "[1]\n[2]", `1 2`, "\t\r\n{}\n",
}

func TestValidMatchesEncodingJSON(t *testing.T) {
	cases := append([]string(nil), validCases...)
	for _, d := range []int{9999, 10000, 10001} {
		cases = append(cases, strings.Repeat("[", d)+strings.Repeat("]", d), strings.Repeat(`{"a":`, d)+"1"+strings.Repeat("}", d))
	}
	for _, c := range cases {
		if got, want := Valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("Valid(%.60q) = %v, encoding/json says %v", c, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, encoding/json says %v", b, got, want)
		}
	})
}

// BenchmarkValid compares Valid with encoding/json.Valid on a 500-event
// ingest body, interleaved.
func BenchmarkValid(b *testing.B) {
	body := []byte{'['}
	for i := range 500 {
		if i > 0 {
			body = append(body, ',')
		}
		body = fmt.Appendf(body, `{"type":"stream_metrics","data":{"stream_id":"stream-%06d","pipeline":"streamdiffusion","fps":%d.97,"latency_ms":%d.5,"frame":%d,"queue_depth":%d,"status":"ok"}}`,
			i%64, 20+i%10, 30+i%40, 100000+i, i%8)
	}
	body = append(body, ']')
	b.Run("envelope", func(b *testing.B) {
		for b.Loop() {
			if !Valid(body) {
				b.Fatal("invalid")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
	})
	b.Run("encoding_json", func(b *testing.B) {
		for b.Loop() {
			if !json.Valid(body) {
				b.Fatal("invalid")
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*500), "ns/event")
	})
}
