package agent

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/livepeer/edgerelay/agent/naap"
	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/relay/httpsink"
	"github.com/livepeer/edgerelay/relay/kafkasink"
	"github.com/livepeer/edgerelay/relay/trickle"
)

// Config is every setting of `edgerelay run`. Load fills it from the
// environment and flags; the zero Config is not usable.
type Config struct {
	Enabled bool
	Demo    bool

	StateDir          string
	Spool             bool
	SpoolMaxBytes     int64
	SpoolMemoryMax    int64 // what is held in memory while the disk spool cannot be written, or with the spool off
	SpoolGroupEvents  int
	SpoolGroupDelay   time.Duration
	RingMaxEvents     int
	RingMaxBytes      int64
	Listen            string // "" when off
	Socket            string // "" when off
	IngestToken       string
	MaxBodyBytes      int64
	MaxEventBytes     int    // the largest event accepted: EDGERELAY_MAX_EVENT_BYTES, lowered to what every sink can carry
	MaxEventBy        string // what set MaxEventBytes: the variable, or the sink whose limit is lower
	ShutdownGrace     time.Duration
	StatusInterval    time.Duration
	Identity          envelope.Identity // host, node_id, region, orchestrator_address
	Gateway           string
	NVML              string
	NVMLLibrary       string
	SampleInterval    time.Duration
	ProcessInterval   time.Duration
	HostNet           bool
	StreamNetwork     bool   // stream_bandwidth_sample from the runners' network namespaces
	NAAP              bool   // events in the analytics pipeline's families (agent/naap)
	OrchestratorURL   string // orchestrator_info.url in NAAP mode
	Stdout            bool
	HTTPURL           string
	HTTPAPIKey        string
	HTTPAPIKeyFile    string
	HTTPRate          int
	HTTPBatch         int
	HTTPMaxBody       int
	HTTPGzip          bool
	HTTPLinger        time.Duration
	HTTPInflight      int // requests in flight at once (EDGERELAY_HTTP_INFLIGHT)
	HTTPProbeInterval time.Duration
	HTTPInsecure      bool
	HTTPTimeout       time.Duration
	TrickleURL        string
	TrickleFraming    string
	TrickleInsecure   bool
	TrickleSubscribe  []string
	Kafka             kafkasink.Options // Stats and Logger are set by the agent
	StormlogDir       string
	TelemetryLegacy   bool
	LogLevel          string
	LogFormat         string // "text" or "json"
	Pprof             bool   // net/http/pprof on the local API (loopback or socket only)
	Check             bool   // run --check: validate and print the effective settings, do not start
	EnvFile           string // re-read on SIGHUP for EDGERELAY_LOG_LEVEL
}

// setting is one row of the configuration table: the environment variable,
// its flag, its default, and how to apply and show a value. The table is
// the single place that defines every setting: the flags of `edgerelay run`
// are derived from it, and configs/edgerelay.env mirrors it (a test keeps
// them in step).
type setting struct {
	env   string
	def   string // "" means unset
	usage string
	value
	// field names the sink option the setting fills ("Kafka.SASLUser"), so
	// that the sink's own validation errors name the variable.
	field string
	// secret: run --check prints "<redacted>" instead of the value.
	secret bool
}

// value is how a setting's text becomes a Config field, and back.
type value struct {
	typ   string // the flag's value type: "bool" (the flag alone means true), "duration", "int", "bytes", "url", "list", "string"
	apply func(c *Config, v string) error
	// show is the effective value, after every default and fallback, as
	// run --check prints it; URLs are redacted by it already.
	show func(c *Config) string
}

func (s setting) flagName() string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(s.env, "EDGERELAY_")), "_", "-")
}

func settings() []setting {
	return []setting{
		{env: "EDGERELAY_ENABLED", def: "false", usage: "the opt-in switch: the agent does nothing unless true", value: boolTo(func(c *Config) *bool { return &c.Enabled })},
		{env: "EDGERELAY_STATE_DIR", def: "", usage: "spool directory (default $STATE_DIRECTORY, else ./.edgerelay)", value: strTo(func(c *Config) *string { return &c.StateDir })},
		{env: "EDGERELAY_SPOOL", def: "on", usage: "disk spool; off runs memory-only (events are lost on a crash)", value: boolTo(func(c *Config) *bool { return &c.Spool })},
		{env: "EDGERELAY_SPOOL_MAX_BYTES", def: "1073741824", usage: "spool cap in bytes; over it the oldest events are dropped (spool_full)", value: int64To(func(c *Config) *int64 { return &c.SpoolMaxBytes }, 1<<20)},
		{env: "EDGERELAY_SPOOL_MEMORY_MAX_BYTES", def: "16777216", usage: "events held in memory while the spool's disk cannot be written (full, read-only, missing), and the memory-only spool's cap with EDGERELAY_SPOOL=off; over it the oldest held go (memory_full)", value: int64To(func(c *Config) *int64 { return &c.SpoolMemoryMax }, 64<<10)},
		{env: "EDGERELAY_SPOOL_GROUP_EVENTS", def: "1000", usage: "group commit: at most this many events per spool transaction", value: intTo(func(c *Config) *int { return &c.SpoolGroupEvents }, 1)},
		{env: "EDGERELAY_SPOOL_GROUP_DELAY", def: "1ms", usage: "group commit: how long the writer waits to fill a group", value: durTo(func(c *Config) *time.Duration { return &c.SpoolGroupDelay }, 0)},
		{env: "EDGERELAY_RING_MAX_EVENTS", def: "50000", usage: "ring cap in events (drop oldest)", value: intTo(func(c *Config) *int { return &c.RingMaxEvents }, 1)},
		{env: "EDGERELAY_RING_MAX_BYTES", def: "67108864", usage: "ring cap in bytes (drop oldest)", value: int64To(func(c *Config) *int64 { return &c.RingMaxBytes }, 1<<16)},
		{env: "EDGERELAY_LISTEN", def: "127.0.0.1:7781", usage: "local API over TCP (host:port, or off)", value: value{typ: "string",
			apply: func(c *Config, v string) error { c.Listen = offToEmpty(v); return nil },
			show:  func(c *Config) string { return orOff(c.Listen) }}},
		{env: "EDGERELAY_SOCKET", def: "", usage: "local API over a unix socket (default $RUNTIME_DIRECTORY/ingest.sock, else <state dir>/ingest.sock; off disables)", value: value{typ: "string",
			apply: func(c *Config, v string) error { c.Socket = v; return nil },
			show:  func(c *Config) string { return orOff(c.Socket) }}},
		{env: "EDGERELAY_INGEST_TOKEN", def: "", usage: "bearer token for the local API; required on a non-loopback address", secret: true, value: strTo(func(c *Config) *string { return &c.IngestToken })},
		{env: "EDGERELAY_MAX_BODY_BYTES", def: "4194304", usage: "local API request body limit (413 above)", value: int64To(func(c *Config) *int64 { return &c.MaxBodyBytes }, 1024)},
		{env: "EDGERELAY_MAX_EVENT_BYTES", def: "1048576", usage: "largest single event accepted", value: intTo(func(c *Config) *int { return &c.MaxEventBytes }, 256)},
		{env: "EDGERELAY_SHUTDOWN_GRACE", def: "5s", usage: "how long the whole stop may take after SIGTERM (requests in flight, then the sinks' delivery), plus at most 500ms; a second signal stops at once", value: durTo(func(c *Config) *time.Duration { return &c.ShutdownGrace }, 0)},
		{env: "EDGERELAY_STATUS_INTERVAL", def: "30s", usage: "agent_status cadence (the demo uses 1s)", value: durTo(func(c *Config) *time.Duration { return &c.StatusInterval }, 100*time.Millisecond)},
		{env: "EDGERELAY_NODE_ID", def: "", usage: "node identity stamped into envelopes (default: /etc/machine-id)", value: identTo("node_id")},
		{env: "EDGERELAY_HOST", def: "", usage: "host name stamped into envelopes (default: the hostname)", value: identTo("host")},
		{env: "EDGERELAY_REGION", def: "", usage: "region stamped into envelopes", value: identTo("region")},
		{env: "EDGERELAY_ORCHESTRATOR_ADDRESS", def: "", usage: "orchestrator address stamped into envelopes (0x and 40 hex digits; written lower-case)", value: value{typ: "string",
			apply: orchestratorAddress,
			show:  func(c *Config) string { return c.Identity["orchestrator_address"] }}},
		{env: "EDGERELAY_ORCHESTRATOR_URL", def: "", usage: "the orchestrator's service URI as gateways see it (https://host:port), for orchestrator_info in NAAP mode", value: urlTo(func(c *Config) *string { return &c.OrchestratorURL })},
		// Applied in Load, where the sinks are known.
		{env: "EDGERELAY_NAAP", def: "auto", usage: "send events in the families the analytics pipeline ingests (docs/NAAP.md): on, off, or auto (on when the HTTP or Kafka sink is set)", value: value{typ: "string",
			apply: func(c *Config, v string) error { return nil },
			show:  func(c *Config) string { return strconv.FormatBool(c.NAAP) }}},
		{env: "EDGERELAY_GATEWAY", def: "", usage: "the envelope's gateway field", value: strTo(func(c *Config) *string { return &c.Gateway })},
		{env: "EDGERELAY_NVML", def: "auto", usage: "auto | on | off | sim (simulated GPUs)", value: oneOf(func(c *Config) *string { return &c.NVML }, "auto", "on", "off", "sim")},
		{env: "EDGERELAY_NVML_LIBRARY", def: "", usage: "path of libnvidia-ml.so.1 when it is not where the dynamic loader finds it", value: strTo(func(c *Config) *string { return &c.NVMLLibrary })},
		{env: "EDGERELAY_SAMPLE_INTERVAL", def: "1s", usage: "GPU and host sampling interval (minimum 100ms)", value: durTo(func(c *Config) *time.Duration { return &c.SampleInterval }, 100*time.Millisecond)},
		{env: "EDGERELAY_PROCESS_INTERVAL", def: "5s", usage: "per-process GPU memory interval (minimum 100ms)", value: durTo(func(c *Config) *time.Duration { return &c.ProcessInterval }, 100*time.Millisecond)},
		{env: "EDGERELAY_HOSTNET", def: "on", usage: "host_network_sample from /proc/net/dev", value: boolTo(func(c *Config) *bool { return &c.HostNet })},
		{env: "EDGERELAY_STREAM_NETWORK", def: "on", usage: "stream_bandwidth_sample: each session's bytes up and down, from its runner's network namespace", value: boolTo(func(c *Config) *bool { return &c.StreamNetwork })},
		// Applied in Load, where the other sinks are known.
		{env: "EDGERELAY_STDOUT", def: "auto", usage: "JSON lines on stdout: on, off, or auto (on when no other sink is set)", value: value{typ: "string",
			apply: func(c *Config, v string) error { return nil },
			show:  func(c *Config) string { return strconv.FormatBool(c.Stdout) }}},
		{env: "EDGERELAY_HTTP_URL", def: "", usage: "HTTP metrics API URL (fallback DAYDREAM_METRICS_URL)", value: urlTo(func(c *Config) *string { return &c.HTTPURL })},
		{env: "EDGERELAY_HTTP_API_KEY", def: "", usage: "HTTP metrics API key (fallback SCOPE_CLOUD_API_KEY)", secret: true, value: strTo(func(c *Config) *string { return &c.HTTPAPIKey })},
		{env: "EDGERELAY_HTTP_API_KEY_FILE", def: "", usage: "file holding the API key; re-read when it changes and on SIGHUP", value: strTo(func(c *Config) *string { return &c.HTTPAPIKeyFile })},
		{env: "EDGERELAY_HTTP_RATE", def: strconv.Itoa(httpsink.DefaultRatePerMinute), usage: "requests per minute (0 = unlimited)", value: intTo(func(c *Config) *int { return &c.HTTPRate }, 0)},
		{env: "EDGERELAY_HTTP_BATCH", def: strconv.Itoa(httpsink.DefaultMaxEvents), usage: "events per request (1..500 for the metrics API)", value: intTo(func(c *Config) *int { return &c.HTTPBatch }, 1)},
		{env: "EDGERELAY_HTTP_MAX_BODY", def: strconv.Itoa(httpsink.DefaultMaxBody), usage: "request body limit in bytes", value: intTo(func(c *Config) *int { return &c.HTTPMaxBody }, 1024)},
		{env: "EDGERELAY_HTTP_GZIP", def: "off", usage: "gzip request bodies", value: boolTo(func(c *Config) *bool { return &c.HTTPGzip })},
		{env: "EDGERELAY_HTTP_INFLIGHT", def: "4", usage: "HTTP requests in flight at once, acknowledged in order; all within EDGERELAY_HTTP_RATE", value: intTo(func(c *Config) *int { return &c.HTTPInflight }, 1)},
		{env: "EDGERELAY_HTTP_LINGER", def: "2s", usage: "how long a partial batch waits to fill", value: durTo(func(c *Config) *time.Duration { return &c.HTTPLinger }, 0)},
		{env: "EDGERELAY_HTTP_PROBE_INTERVAL", def: "5m", usage: "how often a paused HTTP sink probes", value: durTo(func(c *Config) *time.Duration { return &c.HTTPProbeInterval }, time.Second)},
		{env: "EDGERELAY_HTTP_TIMEOUT", def: "30s", usage: "timeout of one request to the metrics API", value: durTo(func(c *Config) *time.Duration { return &c.HTTPTimeout }, 100*time.Millisecond)},
		{env: "EDGERELAY_HTTP_INSECURE", def: "false", usage: "skip TLS verification for the HTTP sink (explicit opt-in)", value: boolTo(func(c *Config) *bool { return &c.HTTPInsecure })},
		{env: "EDGERELAY_TRICKLE_URL", def: "", usage: "static trickle events channel to publish to", value: urlTo(func(c *Config) *string { return &c.TrickleURL })},
		{env: "EDGERELAY_TRICKLE_FRAMING", def: "jsonl", usage: "jsonl (line readers: Scope, python gateway) or gateway (go-livepeer's gateway: one paced document a segment; \"segment\" is its old name)", value: value{typ: "string",
			apply: func(c *Config, v string) error {
				if err := oneOf(func(c *Config) *string { return &c.TrickleFraming }, "jsonl", "gateway", "segment").apply(c, v); err != nil {
					return err
				}
				if c.TrickleFraming == "segment" {
					c.TrickleFraming = "gateway"
				}
				return nil
			},
			show: func(c *Config) string { return c.TrickleFraming }}},
		{env: "EDGERELAY_TRICKLE_INSECURE", def: "false", usage: "skip TLS verification for trickle (self-signed orchestrators; explicit opt-in)", value: boolTo(func(c *Config) *bool { return &c.TrickleInsecure })},
		{env: "EDGERELAY_TRICKLE_SUBSCRIBE", def: "", usage: "comma-separated events channel URLs to read telemetry from and relay", value: value{typ: "list",
			apply: func(c *Config, v string) error {
				c.TrickleSubscribe = splitList(v)
				for _, u := range c.TrickleSubscribe {
					if err := checkURL(u); err != nil {
						return err
					}
				}
				return nil
			},
			show: func(c *Config) string {
				out := make([]string, len(c.TrickleSubscribe))
				for i, u := range c.TrickleSubscribe {
					out[i] = relay.RedactURL(u)
				}
				return strings.Join(out, ",")
			}}},
		{env: "EDGERELAY_KAFKA_BROKERS", usage: "comma-separated Kafka brokers (host:port); switches the Kafka sink on", field: "Kafka.Brokers",
			value: listTo(func(c *Config) *[]string { return &c.Kafka.Brokers })},
		{env: "EDGERELAY_KAFKA_TOPIC", def: kafkasink.DefaultTopic, usage: "Kafka topic", field: "Kafka.Topic",
			value: strTo(func(c *Config) *string { return &c.Kafka.Topic })},
		{env: "EDGERELAY_KAFKA_SASL_MECHANISM", usage: "PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512 (empty: no SASL)", field: "Kafka.SASLMechanism", value: value{typ: "string",
			apply: func(c *Config, v string) error { c.Kafka.SASLMechanism = strings.ToUpper(v); return nil },
			show:  func(c *Config) string { return c.Kafka.SASLMechanism }}},
		{env: "EDGERELAY_KAFKA_USERNAME", usage: "Kafka SASL user", field: "Kafka.SASLUser",
			value: strTo(func(c *Config) *string { return &c.Kafka.SASLUser })},
		{env: "EDGERELAY_KAFKA_PASSWORD", usage: "Kafka SASL password (prefer the file)", field: "Kafka.SASLPassword", secret: true,
			value: strTo(func(c *Config) *string { return &c.Kafka.SASLPassword })},
		{env: "EDGERELAY_KAFKA_PASSWORD_FILE", usage: "file holding the Kafka SASL password; re-read on SIGHUP", field: "Kafka.SASLPasswordFile",
			value: strTo(func(c *Config) *string { return &c.Kafka.SASLPasswordFile })},
		{env: "EDGERELAY_KAFKA_TLS", def: "false", usage: "dial the Kafka brokers with TLS", field: "Kafka.TLS",
			value: boolTo(func(c *Config) *bool { return &c.Kafka.TLS })},
		{env: "EDGERELAY_KAFKA_TLS_CA_FILE", usage: "PEM roots to trust for the brokers instead of the system pool", field: "Kafka.TLSCAFile",
			value: strTo(func(c *Config) *string { return &c.Kafka.TLSCAFile })},
		{env: "EDGERELAY_KAFKA_TLS_INSECURE", def: "false", usage: "skip TLS verification of the brokers (explicit opt-in)", field: "Kafka.TLSInsecureSkipVerify",
			value: boolTo(func(c *Config) *bool { return &c.Kafka.TLSInsecureSkipVerify })},
		{env: "EDGERELAY_KAFKA_AUTO_CREATE", def: "false", usage: "create the Kafka topic at start when it is missing", field: "Kafka.AutoCreateTopic",
			value: boolTo(func(c *Config) *bool { return &c.Kafka.AutoCreateTopic })},
		{env: "EDGERELAY_STORMLOG_DIR", def: "", usage: "stormlog sink directory to tail", value: strTo(func(c *Config) *string { return &c.StormlogDir })},
		{env: "EDGERELAY_TELEMETRY_LEGACY", def: "on", usage: "accept legacy (pre-v2) stormlog records on /v1/telemetry and convert them", value: boolTo(func(c *Config) *bool { return &c.TelemetryLegacy })},
		{env: "EDGERELAY_PPROF", def: "off", usage: "serve net/http/pprof under /debug/pprof/ on the local API (needs a loopback EDGERELAY_LISTEN, or the socket alone)", value: boolTo(func(c *Config) *bool { return &c.Pprof })},
		{env: "EDGERELAY_LOG_LEVEL", def: "info", usage: "debug | info | warn | error", value: oneOf(func(c *Config) *string { return &c.LogLevel }, "debug", "info", "warn", "error")},
		{env: "EDGERELAY_ENV_FILE", def: "", usage: "environment file re-read on SIGHUP for EDGERELAY_LOG_LEVEL (the unit sets it)", value: strTo(func(c *Config) *string { return &c.EnvFile })},
		{env: "EDGERELAY_LOG_FORMAT", def: "", usage: "text | json (default: text on a terminal, json otherwise)", value: oneOf(func(c *Config) *string { return &c.LogFormat }, "", "text", "json")},
	}
}

// Load builds the configuration of `edgerelay run` from the environment and
// the command-line flags (a flag wins over its variable). Every bad value is
// reported, each naming its variable.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	table := settings()
	fs := flag.NewFlagSet("edgerelay run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	flagVals := make(map[string]*settingFlag, len(table))
	for _, s := range table {
		f := &settingFlag{typ: s.typ}
		flagVals[s.env] = f
		fs.Var(f, s.flagName(), s.flagUsage())
	}
	demo := fs.Bool("demo", false, "switch on with the stdout sink, simulated GPUs and agent_status every second")
	check := fs.Bool("check", false, "validate the configuration, print the effective settings (secrets redacted) and exit: 0 when valid, 2 when not")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, err
		}
		return Config{}, &FlagError{err}
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected arguments: %q (a boolean flag takes its value after =, as --enabled=false)", fs.Args())
		fmt.Fprintln(stderr, err)
		return Config{}, &FlagError{err}
	}
	setFlags := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { setFlags[f.Name] = true })

	c := Config{Identity: envelope.Identity{}, Demo: *demo, Check: *check}
	raw := map[string]string{}
	var errs []error
	for _, s := range table {
		v, src := s.def, "default"
		if e, ok := lookup(getenv, s.env); ok {
			v, src = e, "env"
		}
		if setFlags[s.flagName()] {
			v, src = flagVals[s.env].text, "flag"
		}
		v = strings.TrimSpace(v)
		raw[s.env] = v
		if err := s.apply(&c, v); err != nil {
			name := s.env
			if src == "flag" {
				name = "--" + s.flagName()
			}
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	// The runner ecosystem's variable names, honoured when ours are unset.
	if c.HTTPURL == "" {
		if v := strings.TrimSpace(getenv("DAYDREAM_METRICS_URL")); v != "" {
			if err := checkURL(v); err != nil {
				errs = append(errs, fmt.Errorf("DAYDREAM_METRICS_URL: %w", err))
			}
			c.HTTPURL = v
		}
	}
	if c.HTTPAPIKey == "" && c.HTTPAPIKeyFile == "" {
		c.HTTPAPIKey = strings.TrimSpace(getenv("SCOPE_CLOUD_API_KEY"))
	}
	if v, ok := lookup(getenv, "SCOPE_METRICS_ENABLED"); ok {
		on, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("SCOPE_METRICS_ENABLED: %w", err))
		} else if !on {
			c.HTTPURL = ""
		}
	}

	if c.Demo {
		c.Enabled = true
		if _, ok := lookup(getenv, "EDGERELAY_NVML"); !ok && !setFlags["nvml"] {
			c.NVML = "sim"
		}
		if _, ok := lookup(getenv, "EDGERELAY_STATUS_INTERVAL"); !ok && !setFlags["status-interval"] {
			c.StatusInterval = time.Second
		}
	}
	if c.StateDir == "" {
		if d := getenv("STATE_DIRECTORY"); d != "" {
			c.StateDir = strings.Split(d, ":")[0]
		} else {
			c.StateDir = ".edgerelay"
		}
	}
	switch v := raw["EDGERELAY_SOCKET"]; {
	case strings.EqualFold(v, "off"):
		c.Socket = ""
	case v != "":
		c.Socket = v
	case getenv("RUNTIME_DIRECTORY") != "":
		c.Socket = filepath.Join(strings.Split(getenv("RUNTIME_DIRECTORY"), ":")[0], "ingest.sock")
	default:
		c.Socket = filepath.Join(c.StateDir, "ingest.sock")
	}
	if len(c.Socket) > 100 {
		errs = append(errs, fmt.Errorf("EDGERELAY_SOCKET: path %q is longer than a unix socket path may be (100 bytes)", c.Socket))
	}
	otherSink := c.HTTPURL != "" || c.TrickleURL != "" || c.Kafka.Enabled()
	switch v := strings.ToLower(raw["EDGERELAY_STDOUT"]); v {
	case "auto", "":
		c.Stdout = !otherSink
	default:
		on, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("EDGERELAY_STDOUT: %w (or auto)", err))
		}
		c.Stdout = on
	}
	switch v := strings.ToLower(raw["EDGERELAY_NAAP"]); v {
	case "auto", "":
		c.NAAP = c.HTTPURL != "" || c.Kafka.Enabled()
	default:
		on, err := parseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("EDGERELAY_NAAP: %w (or auto)", err))
		}
		c.NAAP = on
	}
	if c.Listen != "" {
		if err := checkListen(c.Listen, c.IngestToken); err != nil {
			errs = append(errs, fmt.Errorf("EDGERELAY_LISTEN: %w", err))
		}
	}
	if c.Identity["host"] == "" {
		if h, err := os.Hostname(); err == nil {
			c.Identity["host"] = h
		}
	}
	if c.Identity["node_id"] == "" {
		if b, err := os.ReadFile("/etc/machine-id"); err == nil {
			c.Identity["node_id"] = strings.TrimSpace(string(b))
		}
	}
	if c.LogFormat == "" {
		c.LogFormat = "json"
		if isTerminal(os.Stderr) {
			c.LogFormat = "text"
		}
	}
	if c.ProcessInterval < c.SampleInterval {
		errs = append(errs, fmt.Errorf("EDGERELAY_PROCESS_INTERVAL: %s is shorter than EDGERELAY_SAMPLE_INTERVAL (%s)", c.ProcessInterval, c.SampleInterval))
	}
	if c.Kafka.Enabled() {
		errs = append(errs, sinkOptionErrors("Kafka.", c.Kafka.Validate())...)
	}
	if c.HTTPURL != "" {
		if c.HTTPAPIKey != "" && c.HTTPAPIKeyFile != "" {
			errs = append(errs, errors.New("EDGERELAY_HTTP_API_KEY_FILE: set either it or EDGERELAY_HTTP_API_KEY, not both"))
		}
		if c.HTTPAPIKey == "" && c.HTTPAPIKeyFile == "" {
			errs = append(errs, errors.New("EDGERELAY_HTTP_API_KEY: the HTTP sink needs a key (or EDGERELAY_HTTP_API_KEY_FILE, or SCOPE_CLOUD_API_KEY)"))
		}
		if c.HTTPMaxBody > 1<<20 {
			errs = append(errs, fmt.Errorf("EDGERELAY_HTTP_MAX_BODY: %d is above the metrics API's 1 MiB limit", c.HTTPMaxBody))
		}
	}
	if c.Pprof {
		if err := checkPprof(c.Listen); err != nil {
			errs = append(errs, fmt.Errorf("EDGERELAY_PPROF: %w", err))
		}
	}
	c.limitEventSize()
	if c.HTTPURL != "" && c.HTTPBatch > 500 {
		errs = append(errs, fmt.Errorf("EDGERELAY_HTTP_BATCH: %d is above the metrics API's limit of 500 events per request", c.HTTPBatch))
	}
	return c, errors.Join(errs...)
}

// checkPprof allows profiles only where the local API is local: a loopback
// TCP address, or the unix socket alone. Profiles show the process's memory
// and may stall it (CPU and trace profiles run for seconds); a token on a
// network address is not enough to expose them.
func checkPprof(listen string) error {
	if listen == "" {
		return nil
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil || !isLoopbackHost(host) {
		return fmt.Errorf("profiles are served on a loopback address only, and EDGERELAY_LISTEN is %q (set it to 127.0.0.1:PORT, or off to use the socket alone)", listen)
	}
	return nil
}

// settingFlag is a setting's flag on the command line. It keeps the text as
// given; Load applies it like the variable's, so that both are checked, and
// their errors worded, the same way. A boolean setting's flag alone means
// true (--enabled).
type settingFlag struct {
	typ  string
	text string
}

func (f *settingFlag) String() string     { return f.text }
func (f *settingFlag) Set(v string) error { f.text = v; return nil }
func (f *settingFlag) IsBoolFlag() bool   { return f.typ == "bool" }

// flagUsage is the flag's help: the setting's meaning, its variable and its
// default; the backquoted type names the flag's value in the help (a
// boolean flag needs none).
func (s setting) flagUsage() string {
	def := s.def
	if def == "" {
		def = "unset"
	}
	if s.typ == "bool" {
		return fmt.Sprintf("%s (env %s, default %s)", s.usage, s.env, def)
	}
	return fmt.Sprintf("%s (`%s`; env %s, default %s)", s.usage, s.typ, s.env, def)
}

// Effective returns the configuration's settings as `edgerelay run --check`
// prints them: every variable of the table with its effective value (after
// defaults, fallbacks and what the agent derives), secrets as "<redacted>"
// and URLs without their credentials, query and fragment.
func (c Config) Effective() [][2]string {
	var out [][2]string
	for _, s := range settings() {
		v := s.show(&c)
		if s.secret && v != "" {
			v = "<redacted>"
		}
		out = append(out, [2]string{s.env, v})
	}
	return out
}

// limitEventSize lowers MaxEventBytes to the largest event every sink can
// carry, so that an event the agent acknowledges is never dropped later as
// oversize: the HTTP sink's request limit and the Kafka client's record
// limit when they are on, and a trickle segment always (session channels
// may attach at any time).
func (c *Config) limitEventSize() {
	c.MaxEventBy = "EDGERELAY_MAX_EVENT_BYTES"
	lower := func(n int, by string) {
		if n < c.MaxEventBytes {
			c.MaxEventBytes, c.MaxEventBy = n, by
		}
	}
	if c.HTTPURL != "" {
		lower(httpsink.MaxEventBytes(httpOptions(*c)), "the HTTP sink's request limit (EDGERELAY_HTTP_MAX_BODY)")
	}
	if len(c.Kafka.Brokers) > 0 {
		lower(kafkasink.MaxEventBytes(), "the Kafka client's record limit (1,000,012 bytes, key included)")
	}
	lower(trickle.MaxEventBytes(c.TrickleFraming, 0), "a trickle segment (1 MiB, frame included)")
}

// naapOptions are the node's dimensions for the NAAP mapping.
func (c *Config) naapOptions() naap.Options {
	return naap.Options{OrchestratorAddress: c.Identity["orchestrator_address"], OrchestratorURL: c.OrchestratorURL, Region: c.Identity["region"]}
}

// sinkOptionErrors names the variable behind each field a sink's Validate
// refused (prefix is the Config field holding the sink's options).
func sinkOptionErrors(prefix string, err error) []error {
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		if err == nil {
			return nil
		}
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		var fe *kafkasink.FieldError
		if errors.As(e, &fe) {
			for _, s := range settings() {
				if s.field == prefix+fe.Field {
					e = fmt.Errorf("%s: %s", s.env, fe.Problem)
					break
				}
			}
		}
		out = append(out, e)
	}
	return out
}

// FlagError is a command-line usage error; the flag package has already
// printed it with the usage.
type FlagError struct{ Err error }

func (e *FlagError) Error() string { return e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

// EnvTable returns the variables with their defaults and meaning, in table
// order, for documentation (configs/edgerelay.env is checked against it).
func EnvTable() [][3]string {
	var out [][3]string
	for _, s := range settings() {
		out = append(out, [3]string{s.env, s.def, s.usage})
	}
	return out
}

// Enabled reports whether EDGERELAY_ENABLED switches the agent on, without
// validating anything else, so that a disabled agent exits cleanly even with
// other settings unset or wrong. A value that is not a boolean is an error
// naming the variable: a typo must not pass for "off".
func Enabled(getenv func(string) string) (bool, error) {
	on, err := parseBool(getenv("EDGERELAY_ENABLED"))
	if err != nil {
		return false, fmt.Errorf("EDGERELAY_ENABLED: %w", err)
	}
	return on, nil
}

// ShutdownGrace returns EDGERELAY_SHUTDOWN_GRACE as the agent reads it (its
// default when unset), for the container wrapper, which budgets the stop
// around it. A value the agent would refuse is an error naming the variable.
func ShutdownGrace(getenv func(string) string) (time.Duration, error) {
	const name = "EDGERELAY_SHUTDOWN_GRACE"
	for _, s := range settings() {
		if s.env != name {
			continue
		}
		var c Config
		v, ok := lookup(getenv, name)
		if !ok {
			v = s.def
		}
		if err := s.apply(&c, v); err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return c.ShutdownGrace, nil
	}
	panic(name + " is not in the settings table")
}

func lookup(getenv func(string) string, k string) (string, bool) {
	v := getenv(k)
	return v, v != ""
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "1", "t", "true", "yes", "y", "on":
		return true, nil
	case "0", "f", "false", "no", "n", "off", "":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (use true/false, on/off, 1/0)", v)
}

func boolTo(field func(*Config) *bool) value {
	return value{typ: "bool",
		apply: func(c *Config, v string) error {
			b, err := parseBool(v)
			*field(c) = b
			return err
		},
		show: func(c *Config) string { return strconv.FormatBool(*field(c)) }}
}

func intTo(field func(*Config) *int, min int) value {
	return atLeast("int", field, min, func(v string) (int, error) {
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not an integer", v)
		}
		return n, nil
	}, strconv.Itoa)
}

func int64To(field func(*Config) *int64, min int64) value {
	return atLeast("bytes", field, min, parseBytes, func(n int64) string { return strconv.FormatInt(n, 10) })
}

// atLeast is a value of type typ parsed by parse and refused below min.
func atLeast[T cmp.Ordered](typ string, field func(*Config) *T, min T, parse func(string) (T, error), show func(T) string) value {
	return value{typ: typ,
		apply: func(c *Config, v string) error {
			n, err := parse(v)
			if err != nil {
				return err
			}
			if n < min {
				return fmt.Errorf("%s is below the minimum %s", show(n), show(min))
			}
			*field(c) = n
			return nil
		},
		show: func(c *Config) string { return show(*field(c)) }}
}

// parseBytes accepts a plain integer or one with a KiB/MiB/GiB suffix.
func parseBytes(v string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(v, suf) {
			v, mult = strings.TrimSuffix(v, suf), m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a byte count (an integer, optionally with KiB, MiB or GiB)", v)
	}
	return n * mult, nil
}

func durTo(field func(*Config) *time.Duration, min time.Duration) value {
	return atLeast("duration", field, min, func(v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("%q is not a duration (like 500ms, 2s, 5m)", v)
		}
		return d, nil
	}, time.Duration.String)
}

func oneOf(field func(*Config) *string, allowed ...string) value {
	return value{typ: "string",
		apply: func(c *Config, v string) error {
			v = strings.ToLower(v)
			if !slices.Contains(allowed, v) {
				return fmt.Errorf("%q is not one of %s", v, strings.Join(slices.DeleteFunc(slices.Clone(allowed), func(s string) bool { return s == "" }), ", "))
			}
			*field(c) = v
			return nil
		},
		show: func(c *Config) string { return *field(c) }}
}

func strTo(field func(*Config) *string) value {
	return value{typ: "string",
		apply: func(c *Config, v string) error { *field(c) = v; return nil },
		show:  func(c *Config) string { return *field(c) }}
}

func listTo(field func(*Config) *[]string) value {
	return value{typ: "list",
		apply: func(c *Config, v string) error { *field(c) = splitList(v); return nil },
		show:  func(c *Config) string { return strings.Join(*field(c), ",") }}
}

func identTo(key string) value {
	return value{typ: "string",
		apply: func(c *Config, v string) error {
			if v != "" {
				c.Identity[key] = v
			}
			return nil
		},
		show: func(c *Config) string { return c.Identity[key] }}
}

// orchestratorAddress takes an Ethereum address: "0x" and 40 hex digits,
// kept lower-case (the analytics pipeline joins on the lower-case form, as
// the go-livepeer gateway writes it).
func orchestratorAddress(c *Config, v string) error {
	if v == "" {
		return nil
	}
	low := strings.ToLower(v)
	if len(low) != 42 || !strings.HasPrefix(low, "0x") || strings.Trim(low[2:], "0123456789abcdef") != "" {
		return fmt.Errorf("%q is not an Ethereum address (0x and 40 hex digits)", v)
	}
	c.Identity["orchestrator_address"] = low
	return nil
}

// urlTo is a URL setting; it shows redacted (relay.RedactURL): credentials
// and the query may carry keys.
func urlTo(field func(*Config) *string) value {
	return value{typ: "url",
		apply: func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			if err := checkURL(v); err != nil {
				return err
			}
			*field(c) = v
			return nil
		},
		show: func(c *Config) string {
			if *field(c) == "" {
				return ""
			}
			return relay.RedactURL(*field(c))
		}}
}

func checkURL(v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", relay.RedactURL(v)) // the query may hold a key
	}
	return nil
}

func orOff(v string) string {
	if v == "" {
		return "off"
	}
	return v
}

func offToEmpty(v string) string {
	if strings.EqualFold(v, "off") {
		return ""
	}
	return v
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// checkListen refuses a non-loopback address without a token: the local API
// accepts events that go to the analytics pipeline under this node's name.
func checkListen(addr, token string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port (%v)", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("%q: bad port", addr)
	}
	if isLoopbackHost(host) || token != "" {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address; set EDGERELAY_INGEST_TOKEN to listen there", addr)
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
