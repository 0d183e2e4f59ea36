package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaults(t *testing.T) {
	c, err := Load(nil, mapEnv(map[string]string{"EDGERELAY_ENABLED": "true"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Enabled || !c.Spool || c.SpoolMaxBytes != 1<<30 || c.RingMaxEvents != 50000 || c.RingMaxBytes != 64<<20 ||
		c.Listen != "127.0.0.1:7781" || c.SampleInterval != time.Second || c.ProcessInterval != 5*time.Second ||
		c.HTTPRate != 30 || c.HTTPBatch != 500 || c.HTTPMaxBody != 1000000 || c.TrickleFraming != "jsonl" ||
		!c.Stdout || c.StateDir != ".edgerelay" || c.Socket != ".edgerelay/ingest.sock" || c.NVML != "auto" ||
		c.MaxBodyBytes != 4<<20 || c.ShutdownGrace != 5*time.Second {
		t.Errorf("defaults: %+v", c)
	}
	// 1 MiB asked, lowered to what a trickle segment carries with its frame.
	if c.MaxEventBytes != 1<<20-30 || !strings.Contains(c.MaxEventBy, "trickle") {
		t.Errorf("event limit %d set by %q", c.MaxEventBytes, c.MaxEventBy)
	}
}

// The event limit is the lowest of what is asked and what each sink can
// carry, so an acknowledged event is never dropped later as oversize.
func TestConfigEventLimit(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		max  int
		want string
	}{
		{map[string]string{"EDGERELAY_MAX_EVENT_BYTES": "4096"}, 4096, "EDGERELAY_MAX_EVENT_BYTES"},
		{map[string]string{"EDGERELAY_HTTP_URL": "https://m/v1/metrics", "EDGERELAY_HTTP_API_KEY": "k", "EDGERELAY_HOST": "h"}, 1000000 - len(`{"app":"edgerelay","host":"h","events":[]}`), "HTTP sink"},
		{map[string]string{"EDGERELAY_KAFKA_BROKERS": "k:9092"}, 1_000_012 - 128 - 128, "Kafka"},
		{map[string]string{"EDGERELAY_TRICKLE_FRAMING": "segment"}, 1<<20 - len(`{"queue_event_type":"ai_stream_events","event":{"type":"`) - 64 - len(`","client_source":"edgerelay","envelopes":[]}}`) - 1, "trickle"},
	} {
		tc.env["EDGERELAY_ENABLED"] = "true"
		c := loadConfig(t, tc.env)
		if c.MaxEventBytes != tc.max || !strings.Contains(c.MaxEventBy, tc.want) {
			t.Errorf("%v: limit %d by %q, want %d by %s", tc.env, c.MaxEventBytes, c.MaxEventBy, tc.max, tc.want)
		}
	}
}

// loadErr is Load's error for env; the test fails when Load accepts it.
func loadErr(t *testing.T, env map[string]string) error {
	t.Helper()
	_, err := Load(nil, mapEnv(env), io.Discard)
	if err == nil {
		t.Fatal("no error")
	}
	return err
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	env := map[string]string{
		"EDGERELAY_ENABLED":              "true",
		"EDGERELAY_SAMPLE_INTERVAL":      "50ms",
		"EDGERELAY_RING_MAX_EVENTS":      "lots",
		"EDGERELAY_NVML":                 "maybe",
		"EDGERELAY_HTTP_URL":             "ftp://x",
		"EDGERELAY_SPOOL":                "perhaps",
		"EDGERELAY_KAFKA_BROKERS":        "k:9092,bad:port",
		"EDGERELAY_KAFKA_SASL_MECHANISM": "plain",
		"EDGERELAY_KAFKA_TLS":            "maybe",
	}
	err := loadErr(t, env)
	for _, v := range []string{"EDGERELAY_SAMPLE_INTERVAL", "EDGERELAY_RING_MAX_EVENTS", "EDGERELAY_NVML", "EDGERELAY_HTTP_URL", "EDGERELAY_SPOOL",
		"EDGERELAY_KAFKA_BROKERS: broker \"bad:port\"", "EDGERELAY_KAFKA_USERNAME: required", "EDGERELAY_KAFKA_PASSWORD: required", "EDGERELAY_KAFKA_TLS: \"maybe\""} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
}

// TestConfigErrorsKeepSecrets: a URL or broker refused by the configuration
// is quoted without the credentials or query it may carry.
func TestConfigErrorsKeepSecrets(t *testing.T) {
	env := map[string]string{
		"EDGERELAY_ENABLED":       "true",
		"EDGERELAY_HTTP_URL":      "ftp://agent:pw-s3cret@metrics.example/v1/metrics?api_key=q-s3cret",
		"EDGERELAY_TRICKLE_URL":   "ftp://o.example/chan?token=t-s3cret",
		"EDGERELAY_KAFKA_BROKERS": "user:b-s3cret@kafka-1:9092",
	}
	err := loadErr(t, env)
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), `"ftp://metrics.example/v1/metrics" is not an http(s) URL`) {
		t.Errorf("error:\n%v", err)
	}
}

func TestConfigFlagWinsAndFallbacks(t *testing.T) {
	env := map[string]string{
		"EDGERELAY_ENABLED":           "true",
		"EDGERELAY_LISTEN":            "127.0.0.1:1",
		"DAYDREAM_METRICS_URL":        "https://metrics.example/v1/metrics",
		"SCOPE_CLOUD_API_KEY":         "k",
		"STATE_DIRECTORY":             "/var/lib/edgerelay",
		"RUNTIME_DIRECTORY":           "/run/edgerelay",
		"EDGERELAY_HTTP_BATCH":        "100",
		"EDGERELAY_SPOOL_GROUP_DELAY": "2ms",
	}
	c, err := Load([]string{"--listen", "127.0.0.1:2", "--http-batch=200"}, mapEnv(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:2" || c.HTTPBatch != 200 {
		t.Errorf("flags did not win: listen %s batch %d", c.Listen, c.HTTPBatch)
	}
	if c.HTTPURL != env["DAYDREAM_METRICS_URL"] || c.HTTPAPIKey != "k" || c.Stdout {
		t.Errorf("fallbacks: url %q key %q stdout %v", c.HTTPURL, c.HTTPAPIKey, c.Stdout)
	}
	if c.StateDir != "/var/lib/edgerelay" || c.Socket != "/run/edgerelay/ingest.sock" {
		t.Errorf("systemd dirs: %s %s", c.StateDir, c.Socket)
	}
	env["SCOPE_METRICS_ENABLED"] = "false"
	c, _ = Load(nil, mapEnv(env), io.Discard)
	if c.HTTPURL != "" || !c.Stdout {
		t.Errorf("SCOPE_METRICS_ENABLED=false: url %q stdout %v", c.HTTPURL, c.Stdout)
	}
}

func TestConfigDemo(t *testing.T) {
	c, err := Load([]string{"--demo"}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Enabled || c.NVML != "sim" || c.StatusInterval != time.Second || !c.Stdout || c.StateDir != ".edgerelay" {
		t.Errorf("demo: %+v", c)
	}
}

// TestEnvFileDocumentsEverySetting keeps configs/edgerelay.env in step with
// the settings table: every variable appears with its default.
func TestEnvFileDocumentsEverySetting(t *testing.T) {
	f, err := os.Open("../configs/edgerelay.env")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "#"))
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "EDGERELAY_") && !strings.Contains(k, " ") {
			doc[k] = v
		}
	}
	for _, row := range EnvTable() {
		v, ok := doc[row[0]]
		if !ok {
			t.Errorf("configs/edgerelay.env does not document %s", row[0])
			continue
		}
		if v != row[1] {
			t.Errorf("configs/edgerelay.env: %s=%s, but the default is %q", row[0], v, row[1])
		}
	}
}

// TestDemoEnvFile: configs/demo.env gives the same configuration as --demo.
func TestDemoEnvFile(t *testing.T) {
	b, err := os.ReadFile("../configs/demo.env")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			env[k] = v
		}
	}
	fromFile, err := Load(nil, mapEnv(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fromFlag, err := Load([]string{"--demo"}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fromFile.Demo = true
	if fmt.Sprintf("%+v", fromFile) != fmt.Sprintf("%+v", fromFlag) {
		t.Errorf("demo.env:\n%+v\n--demo:\n%+v", fromFile, fromFlag)
	}
}

// One meaning per value: EDGERELAY_HTTP_RATE=0 is "no budget" in the
// configuration and in the sink's options alike; Kafka settings land in the
// sink's options without the sink reading the environment.
func TestConfigSinkOptions(t *testing.T) {
	cfg := loadConfig(t, map[string]string{
		"EDGERELAY_ENABLED": "true", "EDGERELAY_HTTP_URL": "https://m/v1/metrics", "EDGERELAY_HTTP_API_KEY": "k", "EDGERELAY_HTTP_RATE": "0",
		"EDGERELAY_KAFKA_BROKERS": "k1:9092, k2:9092", "EDGERELAY_KAFKA_SASL_MECHANISM": "scram-sha-512", "EDGERELAY_KAFKA_USERNAME": "u",
		"EDGERELAY_KAFKA_PASSWORD_FILE": "/run/pw", "EDGERELAY_KAFKA_TLS": "on",
	})
	if o := httpOptions(cfg); o.RatePerMinute != 0 {
		t.Errorf("EDGERELAY_HTTP_RATE=0 gave RatePerMinute %d", o.RatePerMinute)
	}
	k := cfg.Kafka
	if len(k.Brokers) != 2 || k.Brokers[1] != "k2:9092" || k.Topic != "network_events" || k.SASLMechanism != "SCRAM-SHA-512" || !k.TLS || k.SASLPasswordFile != "/run/pw" {
		t.Errorf("kafka options %+v", k)
	}
	if cfg := loadConfig(t, map[string]string{"EDGERELAY_ENABLED": "true"}); cfg.HTTPRate != 30 || cfg.Kafka.Enabled() {
		t.Errorf("defaults: rate %d, kafka %+v", cfg.HTTPRate, cfg.Kafka)
	}
}

// TestEveryVariableIsAFlag walks the settings table: each variable has a
// flag of the same name, which gives the same configuration (or the same
// error, naming the flag) as the variable; a boolean flag alone means true.
func TestEveryVariableIsAFlag(t *testing.T) {
	sample := map[string]string{"bool": "true", "duration": "3s", "int": "4096", "bytes": "2MiB", "url": "https://user:pw@example.com/x?k=v", "list": "a:1,b:2", "string": "sim"}
	base := map[string]string{"EDGERELAY_ENABLED": "true", "EDGERELAY_STATE_DIR": "/tmp/x"}
	for _, s := range settings() {
		v, ok := sample[s.typ]
		if !ok {
			t.Errorf("%s: no sample for type %q", s.env, s.typ)
			continue
		}
		env := maps.Clone(base)
		env[s.env] = v
		fromEnv, envErr := Load(nil, mapEnv(env), io.Discard)
		args := []string{"--" + s.flagName(), v}
		if s.typ == "bool" {
			args = args[:1] // the flag alone
		}
		fromFlag, flagErr := Load(args, mapEnv(base), io.Discard)
		var fe *FlagError
		if errors.As(flagErr, &fe) {
			t.Errorf("%s: --%s is not a flag of the same name: %v", s.env, s.flagName(), flagErr)
			continue
		}
		if fmt.Sprintf("%+v", fromEnv) != fmt.Sprintf("%+v", fromFlag) {
			t.Errorf("%s=%s and %q differ:\n%+v\n%+v", s.env, v, args, fromEnv, fromFlag)
		}
		if e, f := fmt.Sprint(envErr), strings.ReplaceAll(fmt.Sprint(flagErr), "--"+s.flagName(), s.env); e != f {
			t.Errorf("%s: errors differ:\nenv:  %s\nflag: %s", s.env, e, f)
		}
	}
	for _, name := range []string{"kafka-topic", "kafka-sasl-mechanism", "kafka-username", "kafka-password", "kafka-password-file", "kafka-tls", "kafka-tls-ca-file", "kafka-tls-insecure", "kafka-auto-create", "pprof"} {
		found := false
		for _, s := range settings() {
			found = found || s.flagName() == name
		}
		if !found {
			t.Errorf("no --%s", name)
		}
	}
}

// TestTypedFlags: --enabled alone switches on, --enabled=false off, a
// duration takes its value after a space, and a bad value names the flag.
func TestTypedFlags(t *testing.T) {
	c, err := Load([]string{"--enabled", "--shutdown-grace", "3s", "--kafka-tls", "--hostnet=off"}, mapEnv(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Enabled || c.ShutdownGrace != 3*time.Second || !c.Kafka.TLS || c.HostNet {
		t.Errorf("enabled %v grace %s kafka tls %v hostnet %v", c.Enabled, c.ShutdownGrace, c.Kafka.TLS, c.HostNet)
	}
	if c, _ := Load([]string{"--enabled=false"}, mapEnv(map[string]string{"EDGERELAY_ENABLED": "true"}), io.Discard); c.Enabled {
		t.Error("--enabled=false did not win over the variable")
	}
	_, err = Load([]string{"--enabled", "--shutdown-grace", "soon"}, mapEnv(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), `--shutdown-grace: "soon" is not a duration`) {
		t.Errorf("bad duration: %v", err)
	}
	_, err = Load([]string{"--enabled", "false"}, mapEnv(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--enabled=false") {
		t.Errorf("a boolean flag given its value after a space: %v", err)
	}
}

// TestEffectiveRedacts: the effective settings name every variable, show
// what the agent derived, and never a secret: tokens, keys and passwords
// are "<redacted>", URLs lose their credentials, query and fragment.
func TestEffectiveRedacts(t *testing.T) {
	c := loadConfig(t, map[string]string{
		"EDGERELAY_ENABLED": "true", "EDGERELAY_LISTEN": "0.0.0.0:7781", "EDGERELAY_INGEST_TOKEN": "SECRET-tok",
		"DAYDREAM_METRICS_URL": "https://u:SECRET-pw@m.example/v1/metrics?key=SECRET-q#SECRET-f", "SCOPE_CLOUD_API_KEY": "SECRET-key",
		"EDGERELAY_TRICKLE_SUBSCRIBE": "https://o.example/a-events?sig=SECRET-sig",
		"EDGERELAY_KAFKA_BROKERS":     "k1:9092", "EDGERELAY_KAFKA_SASL_MECHANISM": "plain", "EDGERELAY_KAFKA_USERNAME": "u", "EDGERELAY_KAFKA_PASSWORD": "SECRET-kpw",
	})
	got := map[string]string{}
	for _, kv := range c.Effective() {
		got[kv[0]] = kv[1]
		if strings.Contains(kv[1], "SECRET") {
			t.Errorf("%s=%s shows a secret", kv[0], kv[1])
		}
	}
	for k, v := range map[string]string{
		"EDGERELAY_HTTP_URL": "https://m.example/v1/metrics", "EDGERELAY_HTTP_API_KEY": "<redacted>", "EDGERELAY_INGEST_TOKEN": "<redacted>",
		"EDGERELAY_KAFKA_PASSWORD": "<redacted>", "EDGERELAY_KAFKA_SASL_MECHANISM": "PLAIN", "EDGERELAY_TRICKLE_SUBSCRIBE": "https://o.example/a-events",
		"EDGERELAY_STDOUT": "false", "EDGERELAY_SOCKET": ".edgerelay/ingest.sock", "EDGERELAY_ENABLED": "true", "EDGERELAY_SHUTDOWN_GRACE": "5s",
	} {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(settings()) {
		t.Errorf("%d settings shown, the table has %d", len(got), len(settings()))
	}
}

// TestPprofOnlyLocal: profiles are refused on a network address, even with
// a token; a loopback address, or the socket alone, is fine.
func TestPprofOnlyLocal(t *testing.T) {
	_, err := Load(nil, mapEnv(map[string]string{"EDGERELAY_ENABLED": "true", "EDGERELAY_PPROF": "on", "EDGERELAY_LISTEN": "0.0.0.0:7781", "EDGERELAY_INGEST_TOKEN": "t"}), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "EDGERELAY_PPROF:") {
		t.Errorf("pprof on 0.0.0.0: %v", err)
	}
	for _, listen := range []string{"127.0.0.1:7781", "[::1]:7781", "localhost:7781", "off"} {
		if _, err := Load(nil, mapEnv(map[string]string{"EDGERELAY_ENABLED": "true", "EDGERELAY_PPROF": "on", "EDGERELAY_LISTEN": listen}), io.Discard); err != nil {
			t.Errorf("pprof with EDGERELAY_LISTEN=%s: %v", listen, err)
		}
	}
}

// TestShutdownGraceAsTheAgentReadsIt: the wrapper budgets the stop with the
// agent's own reading of the grace, default and refusals included.
func TestShutdownGraceAsTheAgentReadsIt(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want time.Duration
		err  string
	}{
		{"", 5 * time.Second, ""},
		{"20s", 20 * time.Second, ""},
		{"0s", 0, ""},
		{"soon", 0, `EDGERELAY_SHUTDOWN_GRACE: "soon" is not a duration`},
		{"-1s", 0, "EDGERELAY_SHUTDOWN_GRACE"},
	} {
		got, err := ShutdownGrace(func(k string) string {
			if k == "EDGERELAY_SHUTDOWN_GRACE" {
				return tc.v
			}
			return ""
		})
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.v, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%q: %v, %v; want %v", tc.v, got, err, tc.want)
		}
	}
}
