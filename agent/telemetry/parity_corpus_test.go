package telemetry

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
)

// The differential corpus: valid v2, v3 and legacy records and mutations of
// them, one class per way stormlog and a careless reader can disagree
// (spec/stormlog.md: the reference module wins). Records are built as raw
// JSON text so that each literal (NaN, -0, 1E400, a 4301-digit integer, an
// unpaired surrogate escape) reaches both readers exactly as written.

// parityCase is one record of the corpus.
type parityCase struct {
	class string
	raw   []byte
}

// jobj is a JSON object under construction: keys in order, raw JSON values.
type jobj struct {
	keys []string
	vals map[string]string
}

func newObj() *jobj { return &jobj{vals: map[string]string{}} }

func (o *jobj) set(k, raw string) *jobj {
	if _, ok := o.vals[k]; !ok {
		o.keys = append(o.keys, k)
	}
	o.vals[k] = raw
	return o
}

func (o *jobj) del(k string) *jobj {
	if _, ok := o.vals[k]; ok {
		delete(o.vals, k)
		o.keys = slices.DeleteFunc(o.keys, func(x string) bool { return x == k })
	}
	return o
}

func (o *jobj) has(k string) bool { _, ok := o.vals[k]; return ok }

func (o *jobj) clone() *jobj {
	c := newObj()
	for _, k := range o.keys {
		c.set(k, o.vals[k])
	}
	return c
}

func (o *jobj) String() string {
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(jstr(k))
		b.WriteByte(':')
		b.WriteString(o.vals[k])
	}
	b.WriteByte('}')
	return b.String()
}

// jstr is a JSON string literal: quotes, backslashes and control characters
// escaped, everything else (U+2028 included) written as is.
func jstr(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

type corpusGen struct {
	r     *rand.Rand
	cases []parityCase
}

func (g *corpusGen) add(class string, o *jobj) {
	g.cases = append(g.cases, parityCase{class: class, raw: []byte(o.String())})
}

func (g *corpusGen) addRaw(class, raw string) {
	g.cases = append(g.cases, parityCase{class: class, raw: []byte(raw)})
}

func (g *corpusGen) pick(xs ...string) string { return xs[g.r.IntN(len(xs))] }
func (g *corpusGen) chance(p float64) bool    { return g.r.Float64() < p }
func (g *corpusGen) i64(n int64) string       { return strconv.FormatInt(g.r.Int64N(n), 10) }

var (
	parityHosts    = []string{"node-a", "gpu-host-7", "runner.local", "h", "ünïcode-host", "host with space"}
	paritySessions = []string{"sess-1", "run-42", "0194b7c4-6f2a-7c3e-9a51-2f0e6d1b8a90", " padded ", "ü-session", "x"}
)

// meta is a random metadata object.
func (g *corpusGen) meta() string {
	o := newObj()
	for range g.r.IntN(4) {
		switch g.r.IntN(9) {
		case 0:
			o.set("phase", jstr(g.pick("train", "eval", "warmup", "")))
		case 1:
			o.set("step", g.i64(100000))
		case 2:
			o.set("loss", g.pick("0.25", "1.5e-3", "3.0", "-0.0", "1e100", "12345.678901234567"))
		case 3:
			o.set("tags", `["a",1,null,true,2.5]`)
		case 4:
			o.set("nested", `{"a":{"b":[1,{"c":"d"}]},"e":null}`)
		case 5:
			o.set("allocator_source", jstr(g.pick("push", "none", "stormlog")))
		case 6:
			o.set("note", jstr(g.pick("ok", "line\nbreak", "tab\there", "quote\"d", "λ → ∞", "\u2028sep")))
		case 7:
			o.set("gpu_name", jstr("NVIDIA H100 80GB HBM3"))
		case 8:
			o.set("flag", g.pick("true", "false"))
		}
	}
	return o.String()
}

// identity adds valid optional identity fields, sometimes.
func (g *corpusGen) identity(o *jobj) {
	if !g.chance(0.5) {
		return
	}
	world := []int64{1, 2, 4, 8}[g.r.IntN(4)]
	rank, local := g.r.Int64N(world), g.r.Int64N(world)
	o.set("job_id", g.pick("null", `"job-7"`, `"te-run"`))
	o.set("rank", strconv.FormatInt(rank, 10))
	o.set("local_rank", strconv.FormatInt(local, 10))
	o.set("world_size", strconv.FormatInt(world, 10))
}

func (g *corpusGen) v3() *jobj {
	o := newObj()
	o.set("schema_version", "3")
	o.set("session_id", jstr(g.pick(paritySessions...)))
	o.set("timestamp_ns", g.i64(2e18))
	o.set("event_type", jstr(g.pick("sample", "allocation", "peak", "start", "stop", "collector_degraded")))
	o.set("collector", jstr(g.pick("stormlog.cuda_tracker", "edgerelay.nvml", "edgerelay.allocator_push", "x")))
	o.set("sampling_interval_ms", g.i64(5000))
	o.set("pid", strconv.FormatInt(g.r.Int64N(100000)-1, 10))
	o.set("host", jstr(g.pick(parityHosts...)))
	o.set("device_id", strconv.FormatInt(g.r.Int64N(10)-1, 10))
	alloc := g.r.Int64N(1 << 40)
	o.set("allocator_allocated_bytes", strconv.FormatInt(alloc, 10))
	o.set("allocator_reserved_bytes", strconv.FormatInt(alloc+g.r.Int64N(1<<30), 10))
	o.set("allocator_active_bytes", g.pick("null", g.i64(1<<40)))
	o.set("allocator_inactive_bytes", g.pick("null", g.i64(1<<30)))
	o.set("allocator_change_bytes", strconv.FormatInt(g.r.Int64N(1<<31)-(1<<30), 10))
	if g.chance(0.25) {
		o.set("device_total_bytes", "null")
		o.set("device_used_bytes", g.i64(1<<40))
		o.set("device_free_bytes", g.pick("null", g.i64(1<<40)))
	} else {
		total := int64(80e9)
		used := g.r.Int64N(total + 1)
		o.set("device_total_bytes", strconv.FormatInt(total, 10))
		o.set("device_used_bytes", strconv.FormatInt(used, 10))
		o.set("device_free_bytes", g.pick("null", strconv.FormatInt(total-used, 10)))
	}
	o.set("context", g.pick("null", `"forward"`, `""`, `"  "`))
	o.set("metadata", g.meta())
	g.identity(o)
	return o
}

func (g *corpusGen) v2() *jobj {
	return g.v3().del("session_id").set("schema_version", "2")
}

// seconds is a timestamp in float seconds, written in the ways trackers
// write them.
func (g *corpusGen) seconds() string {
	base := 1767908945 + g.r.Float64()*1e6
	switch g.r.IntN(6) {
	case 0:
		return strconv.FormatInt(int64(base), 10)
	case 1:
		return strconv.FormatFloat(base, 'f', -1, 64)
	case 2:
		return strconv.FormatFloat(base, 'f', g.r.IntN(10), 64)
	case 3:
		return strconv.FormatFloat(base, 'e', -1, 64)
	case 4:
		return strconv.FormatFloat(g.r.Float64()*1000, 'f', -1, 64)
	default:
		return strconv.FormatFloat(base, 'f', 3, 64) + "0"
	}
}

func (g *corpusGen) legacy() *jobj {
	o := newObj()
	switch g.r.IntN(4) {
	case 0: // the CUDA tracker
		o.set("timestamp", g.seconds())
		o.set("device", jstr(g.pick("cuda:0", "cuda:1", "cuda:7", "CUDA:3")))
		o.set("memory_allocated", g.i64(1<<36))
		if g.chance(0.5) {
			o.set("memory_reserved", g.i64(1<<37))
		}
		if g.chance(0.5) {
			o.set("memory_change", strconv.FormatInt(g.r.Int64N(1<<20)-(1<<19), 10))
		}
		if g.chance(0.5) {
			o.set("total_memory", "85899345920")
		}
		o.set("type", jstr(g.pick("allocation", "deallocation", "peak", "sample")))
	case 1: // the TensorFlow tracker
		o.set("timestamp", g.seconds())
		o.set("memory_mb", g.pick("512", "1024.5", "0.25", strconv.FormatFloat(g.r.Float64()*4096, 'f', -1, 64)))
		if g.chance(0.5) {
			o.set("device", jstr(g.pick("/GPU:0", "/gpu:1", "/device:GPU:0")))
		}
		o.set("metadata", g.meta())
	case 2: // the CPU tracker
		o.set("timestamp", g.seconds())
		o.set("memory_allocated", g.i64(1<<30))
		o.set("device", jstr("cpu"))
	default: // a partial v3 shape
		o.set("timestamp_ns", g.i64(2e18))
		o.set("allocator_allocated_bytes", g.i64(1<<36))
		o.set("event_type", jstr("sample"))
		o.set("collector", jstr("legacy.partial"))
		if g.chance(0.5) {
			o.set("device_id", g.i64(8))
		}
	}
	if g.chance(0.5) {
		o.set("pid", g.i64(100000))
	}
	if g.chance(0.5) {
		o.set("host", jstr(g.pick(parityHosts...)))
	}
	if g.chance(0.3) {
		o.set("backend", jstr(g.pick("cuda", "rocm", "mps", "cpu", "xla", " CUDA ")))
	}
	if g.chance(0.3) {
		o.set("message", jstr(g.pick("hello", "")))
	}
	return o
}

func (g *corpusGen) anyBase() (string, *jobj) {
	switch g.r.IntN(3) {
	case 0:
		return "v3", g.v3()
	case 1:
		return "v2", g.v2()
	}
	return "legacy", g.legacy()
}

var (
	intFields = []string{"timestamp_ns", "sampling_interval_ms", "pid", "device_id",
		"allocator_allocated_bytes", "allocator_reserved_bytes", "allocator_active_bytes",
		"allocator_inactive_bytes", "allocator_change_bytes", "device_used_bytes",
		"device_free_bytes", "device_total_bytes", "rank", "local_rank", "world_size"}
	stringFields = []string{"session_id", "event_type", "collector", "host", "job_id"}
	bigInts      = []string{"18446744073709551616", "-18446744073709551617", "9223372036854775808",
		"-9223372036854775809", "1" + strings.Repeat("0", 70), "123456789012345678901234567890",
		strings.Repeat("9", 4300), strings.Repeat("9", 4301), "-" + strings.Repeat("7", 4300)}
	pySpaces = []string{"\x1c", "\x1d", "\x1e", "\x1f", "\u00a0", "\u2028", "\u2029", "\u3000", "\u0085",
		"\t", " ", "\u000b", "\u000c", "\u200a", "\u1680", "\u202f", "\u205f"}
	notSpaces = []string{"\u200b", "\u180e", "\ufeff", "x"}
)

// parityCorpus builds the corpus from seed: every class, n mutations each,
// plus n unmutated records of each kind (15n records).
func parityCorpus(seed uint64, n int) []parityCase {
	g := &corpusGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	for range n {
		g.add("valid-v3", g.v3())
		g.add("valid-v2", g.v2())
		g.add("valid-legacy", g.legacy())
	}
	for range n {
		g.bigInt()
		g.metadataIdentity()
		g.nonFinite()
		g.pyWhitespace()
		g.legacyDefaults()
		g.legacyTolerated()
		g.legacyDevice()
		g.legacySession()
		g.legacyExtras()
		g.general()
		g.rawJSON()
		g.random()
	}
	return g.cases
}

// bigInt: integers beyond 64 bits (stormlog accepts them, exactly), up to
// and past Python's 4300-digit limit.
func (g *corpusGen) bigInt() {
	_, o := g.anyBase()
	v := g.pick(bigInts...)
	switch g.r.IntN(5) {
	case 0:
		o.set(g.pick(intFields...), v)
	case 1:
		o.set("metadata", `{"counter":`+v+`,"list":[`+v+`]}`)
	case 2: // a coherent huge device
		o.set("device_total_bytes", "1"+strings.Repeat("0", 30))
		o.set("device_used_bytes", "5"+strings.Repeat("0", 29))
		o.set("device_free_bytes", "5"+strings.Repeat("0", 29))
		o.set("allocator_allocated_bytes", v)
	case 3: // identity beyond 64 bits
		o.set("world_size", "1"+strings.Repeat("0", 25))
		o.set("rank", g.pick("5"+strings.Repeat("0", 24), "1"+strings.Repeat("0", 25), "0"))
		o.set("local_rank", g.pick("3", "2"+strings.Repeat("0", 24)))
	default: // legacy sources of big values
		l := g.legacy()
		switch g.r.IntN(4) {
		case 0:
			l.set("memory_allocated", v)
		case 1:
			l.del("timestamp_ns").set("timestamp", g.pick("1"+strings.Repeat("0", 30), strings.Repeat("9", 400), "18446744073709551617"))
		case 2:
			l.del("memory_allocated").del("allocator_allocated_bytes").set("memory_mb", g.pick("1"+strings.Repeat("0", 25), strings.Repeat("9", 400)))
		default:
			l.set("pid", v)
		}
		o = l
	}
	g.add("bigint", o)
}

// metadataIdentity: identity keys in metadata, which stormlog reads for
// legacy records only.
func (g *corpusGen) metadataIdentity() {
	meta := newObj()
	for _, k := range []string{"rank", "local_rank", "world_size", "job_id"} {
		if !g.chance(0.6) {
			continue
		}
		switch k {
		case "job_id":
			meta.set(k, g.pick(`"meta-job"`, `""`, "5", "null", `"  "`))
		default:
			meta.set(k, g.pick("0", "1", "3", "-1", "null", `"2"`, "true", "1.0", "8"))
		}
	}
	if g.chance(0.3) {
		meta.set("session_id", jstr(g.pick("meta-sess", "", " ")))
	}
	meta.set("other", `"kept"`)
	kind, o := g.anyBase()
	if kind == "legacy" && g.chance(0.3) {
		for _, k := range meta.keys { // the metadata_<x> spelling
			o.set("metadata_"+k, meta.vals[k])
		}
	} else {
		o.set("metadata", meta.String())
	}
	if g.chance(0.3) {
		o.set(g.pick("rank", "world_size", "local_rank", "job_id"), g.pick("null", "0", "1", "2", `"j"`))
	}
	g.add("metadata-identity", o)
}

// nonFinite: NaN, Infinity and -Infinity, which Python's json reads.
func (g *corpusGen) nonFinite() {
	v := g.pick("NaN", "Infinity", "-Infinity")
	kind, o := g.anyBase()
	switch g.r.IntN(4) {
	case 0:
		o.set("metadata", `{"loss":`+v+`,"deep":{"x":[`+v+`,1]}}`)
	case 1:
		o.set(g.pick(intFields...), v)
	case 2:
		if kind != "legacy" {
			o = g.legacy()
		}
		switch g.r.IntN(4) {
		case 0:
			o.del("timestamp_ns").set("timestamp", v)
		case 1:
			o.del("memory_allocated").del("allocator_allocated_bytes").set("memory_mb", v)
		case 2:
			o.set("total_memory", v)
		default:
			o.set("metadata_score", v)
		}
	default:
		o.set(g.pick("context", "session_id", "host"), v)
	}
	g.add("nonfinite", o)
}

// pyWhitespace: strings that are blank to Python's str.strip() but not to
// Go's TrimSpace (U+001C–U+001F), and the other way round.
func (g *corpusGen) pyWhitespace() {
	var s strings.Builder
	for range 1 + g.r.IntN(3) {
		s.WriteString(g.pick(pySpaces...))
	}
	if g.chance(0.25) {
		s.WriteString(g.pick(notSpaces...))
	}
	kind, o := g.anyBase()
	f := g.pick(stringFields...)
	if kind == "legacy" {
		f = g.pick("host", "event_type", "type", "collector", "backend", "session_id", "job_id")
	}
	if g.chance(0.15) {
		o.set("metadata", `{"session_id":`+jstr(s.String())+`,"host":`+jstr(s.String())+`}`)
	} else {
		o.set(f, jstr(s.String()))
	}
	g.add("py-whitespace", o)
}

// legacyDefaults: fields present with a null or blank value, which stormlog
// rejects rather than defaulting.
func (g *corpusGen) legacyDefaults() {
	o := g.legacy()
	switch g.r.IntN(9) {
	case 0:
		o.set("host", g.pick("null", `""`, `"  "`, "5"))
	case 1:
		o.del("type").set("event_type", g.pick("null", `""`, `" "`, "3"))
	case 2:
		o.del("event_type").set("type", g.pick("null", `""`, `" "`, "3"))
	case 3:
		o.del("pid").set("metadata", `{"pid":`+g.pick("null", `"7"`, "7", "true")+`}`)
	case 4:
		o.del("host").set("metadata", `{"host":`+g.pick("null", `""`, `"meta-host"`, "1")+`}`)
	case 5:
		o.set("pid", g.pick("null", `"12"`, "-2", "12"))
	case 6:
		o.set("sampling_interval_ms", g.pick("null", "-1", "250", "1.5"))
	case 7:
		o.set(g.pick("context", "message"), g.pick("null", "5", `""`, `"ctx"`))
	default:
		o.set("metadata", g.pick("null", "[]", `"x"`, "{}"))
	}
	g.add("legacy-defaults", o)
}

// legacyTolerated: values stormlog passes over or converts.
func (g *corpusGen) legacyTolerated() {
	o := g.legacy()
	switch g.r.IntN(4) {
	case 0:
		o.set("collector", g.pick("5", "null", "true", `""`, "[]", `"  "`, `"mine"`))
	case 1:
		o.del("memory_allocated").del("allocator_allocated_bytes").set("memory_mb", g.pick(`"512"`, "null", "true", "1.5", "-1", "0", "1e-300", "3"))
		if g.chance(0.3) {
			o.set("device_used_bytes", g.pick("7", "null", `"x"`))
		}
	case 2:
		o.del("timestamp_ns").set("timestamp", g.pick("1e20", "1e300", "-0.5", "-1e-10", "0.3", "1e-320", "-0.0", "0",
			"1767908945.298", "1e16", "12345678901234567", "1.7976931348623157e308", "9007199254740993", "true", `"2024"`, "null"))
	default:
		o.set("backend", g.pick("null", "5", `"Cuda"`, `" rocm\u001c"`, `"MPS"`))
		if g.chance(0.5) {
			o.del("backend").set("metadata", `{"backend":`+g.pick(`"cpu"`, "1", `"tpu"`)+`}`)
		}
	}
	g.add("legacy-tolerated", o)
}

// legacyDevice: device strings; stormlog reads any run of str.isdigit
// characters after the last colon.
func (g *corpusGen) legacyDevice() {
	o := g.legacy().del("device_id")
	o.set("device", jstr(g.pick("cuda:1234567890", "cuda:12345678901234567890123", "cuda:007", "cuda:",
		"cuda:-1", "cuda:1.0", "cuda: 1", "cuda:٣", "cuda:²", "cuda:①", "cuda:𑽓", "cuda:١٢", "gpu:0:3",
		"CPU", "mycpu:3", "/GPU", "/gpu:x", "/device:GPU:1", "tpu", "", "cuda:"+strings.Repeat("1", 4301),
		"cuda:"+strings.Repeat("0", 30)+"5", "cuda:\u0e51\u0e52", "xpu:0")))
	if g.chance(0.3) {
		o.set("device", g.pick("1", "null", "true"))
	}
	if g.chance(0.3) {
		o.set("memory_mb", "1")
	}
	g.add("legacy-device", o)
}

// legacySession: records without a session id get stormlog's stable id of
// the record's own timestamp, host and pid as Python's str() writes them.
func (g *corpusGen) legacySession() {
	o := g.legacy().del("session_id")
	switch g.r.IntN(5) {
	case 0:
		o.del("timestamp_ns").set("timestamp", g.pick(g.seconds(), "1e16", "1.5e-5", "0.0001", "100", "1e22",
			"1767908945.1", "1767908945.10", "17679089451234567.0", "0.1", "5e-324", "123456789.123456789"))
	case 1:
		o.set("session_id", g.pick("null", `""`, `"  "`, "5", `"\u001f"`, `"rec-sess"`))
		if g.chance(0.5) {
			o.set("metadata", `{"session_id":`+g.pick(`"meta-sess"`, `""`, "7")+`}`)
		}
	case 2:
		o.del("host").del("pid").set("metadata", `{"host":"meta-host","pid":99}`)
	case 3:
		o.set("metadata_session_id", g.pick(`"ms"`, `""`, "null"))
	default:
		o.set("host", jstr(g.pick(parityHosts...))).set("pid", g.pick("-1", "0", "4242", "99999999999"))
	}
	g.add("legacy-session", o)
}

// legacyExtras: keys the conversion does not read, which stormlog drops, and
// metadata_<x> keys, which it moves into metadata.
func (g *corpusGen) legacyExtras() {
	o := g.legacy()
	for range 1 + g.r.IntN(3) {
		switch g.r.IntN(6) {
		case 0:
			o.set(g.pick("gpu_name", "extra", "weird key", "schema", "events", "utilization"), g.pick(`"x"`, "1", "null", "[1]", `{"a":1}`))
		case 1:
			o.set("metadata_"+g.pick("phase", "rank", "world_size", "job_id", "", "metadata", "pid", "host"), g.pick(`"v"`, "1", "2", "null"))
		case 2:
			o.set("metadata", g.meta())
		case 3:
			o.set("device_total", g.pick("1000", "null", `"x"`))
		case 4:
			o.set("total_bytes", g.pick("99999999999999", "null"))
		default:
			o.set("allocator_active_bytes", g.pick("null", "5", "-5", `"5"`))
		}
	}
	g.add("legacy-extras", o)
}

// general: the spec's rules (missing and unknown fields, types, bounds,
// combinations) on v2 and v3 records.
func (g *corpusGen) general() {
	kind, o := g.anyBase()
	if kind == "legacy" {
		o = g.v3()
	}
	switch g.r.IntN(10) {
	case 0:
		o.del(g.pick(requiredV3...))
	case 1:
		o.set(g.pick("extra", "gpu_id", "name", "session", "type"), `"x"`)
	case 2:
		o.set(g.pick(intFields...), g.pick("true", "1.0", "1e3", `"5"`, "[]", "{}", "null", "-1", "-2", "0"))
	case 3:
		o.set("schema_version", g.pick("2", "3", "4", "1", "2.0", `"3"`, "true", "null", "18446744073709551619", "-0"))
	case 4:
		total := g.r.Int64N(1000)
		o.set("device_total_bytes", strconv.FormatInt(total, 10))
		o.set("device_used_bytes", strconv.FormatInt(g.r.Int64N(2000), 10))
		o.set("device_free_bytes", g.pick("null", strconv.FormatInt(g.r.Int64N(2000), 10)))
	case 5:
		o.set("rank", g.pick("0", "1", "2", "-1", "null"))
		o.set("world_size", g.pick("1", "2", "0", "null"))
		if g.chance(0.5) {
			o.set("local_rank", g.pick("0", "1", "5", "null"))
		}
	case 6:
		o.set("job_id", g.pick("null", `""`, `" "`, "5", `"j"`))
	case 7:
		o.set(g.pick("context", "metadata"), g.pick("5", "[]", "null", `"s"`, "{}", "true"))
	case 8: // v3 session ids stormlog's loader replaces
		o = g.v3().set("session_id", g.pick(`""`, `"  "`, "5", "null", `"\u001c"`))
		if g.chance(0.5) {
			o.set("metadata", `{"session_id":`+g.pick(`"meta"`, `""`, "3")+`}`)
		}
		if g.chance(0.3) {
			o.del("session_id")
		}
	default: // a v2 record that carries a session id
		o = g.v2().set("session_id", jstr(g.pick(paritySessions...)))
	}
	g.add("general", o)
}

// randomKeys and randomValues feed the random class.
var (
	randomKeys = append(slices.Clone(requiredV3), "job_id", "rank", "local_rank", "world_size",
		"timestamp", "device", "memory_allocated", "memory_reserved", "memory_change", "memory_mb",
		"total_memory", "device_total", "total_bytes", "type", "message", "backend", "metadata_x",
		"metadata_session_id", "metadata_rank", "extra")
	randomValues = []string{"null", "true", "false", "0", "-0", "1", "-1", "2", "3", "-2", "7", "1.0",
		"0.5", "-0.5", "1e3", "1E400", "NaN", "Infinity", "-Infinity", "18446744073709551616",
		`""`, `" "`, `""`, `"x"`, `"cuda:2"`, `"cpu"`, `"/gpu"`, `"cuda"`, `"3"`, "[]", "{}",
		`{"rank":1,"world_size":2}`, `{"session_id":"m","pid":4,"host":"mh"}`, `{"total_memory":10}`,
		"1767908945.5", "85899345920", "9007199254740993"}
)

// random: a valid record with a few keys set to values from a pool of
// troublemakers.
func (g *corpusGen) random() {
	_, o := g.anyBase()
	for range 1 + g.r.IntN(4) {
		k := g.pick(randomKeys...)
		if g.chance(0.2) {
			o.del(k)
			continue
		}
		o.set(k, g.pick(randomValues...))
	}
	g.add("random", o)
}

// rawJSON: JSON that Python's reader and a strict one read differently.
func (g *corpusGen) rawJSON() {
	base := g.v3()
	switch g.r.IntN(9) {
	case 0:
		g.addRaw("json", `{"metadata":{"a":1},`+strings.TrimPrefix(base.String(), "{")) // duplicate key: the last wins
	case 1:
		g.add("json", base.set("metadata", `{"z":-0,"f":1E400,"g":-1e400,"h":1e-400,"i":0.0}`))
	case 2: // an unpaired surrogate in metadata, in a v3 session id, in the host of a v2 record
		switch g.r.IntN(3) {
		case 0:
			g.add("json", base.set("metadata", `{"s":"\ud800","t":"\udc00x","u":"\ud83d\ude00"}`))
		case 1:
			g.add("json", base.set("session_id", `"\ud800"`))
		default:
			o := g.v2().set("host", `"h\udfff"`)
			if g.chance(0.5) {
				o.set("metadata", `{"session_id":"m"}`)
			}
			g.add("json", o)
		}
	case 3:
		g.addRaw("json", g.pick(`[1,2]`, `3`, `"s"`, `null`, `[]`, `{}`, `{"schema_version":3}`))
	case 4:
		g.add("json", base.set("metadata", `{"deep":`+strings.Repeat("[", 200)+strings.Repeat("]", 200)+`}`))
	case 5:
		g.add("json", base.set("context", `"esc \u00e9 \"q\" \\ \/ \b\f\n\r\t"`))
	case 6:
		g.addRaw("json", " \t"+base.String()+"\r\n ")
	case 7:
		g.add("json", base.set("host", `"\u001f\u001c"`))
	default:
		g.add("json", base.set("metadata", `{"big":1`+strings.Repeat("0", 400)+`.5,"e":1e308,"m":-1.5E-7}`))
	}
}
