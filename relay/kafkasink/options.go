package kafkasink

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// Defaults applied by New for zero Options fields.
const (
	DefaultTopic          = "network_events"
	DefaultClientID       = "edgerelay"
	DefaultProduceTimeout = 10 * time.Second
	// DefaultLinger lets the records of one Send collect into one produce
	// request per broker instead of the first record leaving alone.
	DefaultLinger = 5 * time.Millisecond
)

// SASL mechanisms accepted in Options.SASLMechanism.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Options configures a Sink. The zero value of every field but Brokers is a
// documented default; Validate reports every problem at once, each a
// *FieldError naming its field. The sink reads no environment: the agent's
// settings table fills these.
type Options struct {
	Brokers  []string // host:port seeds; required
	Topic    string   // "" means DefaultTopic
	ClientID string   // Kafka client.id; "" means DefaultClientID

	// SASLMechanism is "" (no SASL), SASLPlain, SASLScramSHA256 or
	// SASLScramSHA512.
	SASLMechanism string
	SASLUser      string
	// SASLPassword is never logged. SASLPasswordFile, when set instead, is
	// read at New and again at every Reload (a rotated secret).
	SASLPassword     string
	SASLPasswordFile string

	TLS                   bool   // dial brokers with TLS
	TLSCAFile             string // PEM roots to trust instead of the system pool
	TLSInsecureSkipVerify bool   // do not verify broker certificates (tests only)

	// AutoCreateTopic creates the topic at start when it is missing, with
	// the cluster's default partitions and replication. Off by default: a
	// missing topic is a configuration error.
	AutoCreateTopic bool

	// ProduceTimeout bounds one Send, and the topic check in New; when it
	// passes, unfinished records fail and the forwarder's backoff takes
	// over. 0 means DefaultProduceTimeout.
	ProduceTimeout time.Duration
	// Linger is how long the client lets a partition's batch fill before
	// sending it. 0 means DefaultLinger; negative means no linger.
	Linger time.Duration

	Stats  *relay.Stats // the forwarder's stats; nil means a private one
	Logger *slog.Logger // nil means discard
}

// Enabled reports whether Kafka is configured at all (brokers are given).
func (o Options) Enabled() bool { return len(o.Brokers) > 0 }

// withDefaults returns o with every zero field replaced by its default.
func (o Options) withDefaults() Options {
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	if o.ClientID == "" {
		o.ClientID = DefaultClientID
	}
	if o.ProduceTimeout == 0 {
		o.ProduceTimeout = DefaultProduceTimeout
	}
	switch {
	case o.Linger == 0:
		o.Linger = DefaultLinger
	case o.Linger < 0:
		o.Linger = 0
	}
	if o.Stats == nil {
		o.Stats = relay.NewStats()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// FieldError is one problem Validate found, naming the Options field (the
// agent names the setting behind it).
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Validate reports every problem with o, each a *FieldError.
func (o Options) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
	}
	if len(o.Brokers) == 0 {
		bad("Brokers", "no broker given (comma-separated host:port list)")
	}
	for _, b := range o.Brokers {
		if err := checkBroker(b); err != nil {
			bad("Brokers", "broker %q: %v", relay.RedactAddr(b), err)
		}
	}
	if o.Topic != "" {
		if err := checkTopic(o.Topic); err != nil {
			bad("Topic", "%q: %v", o.Topic, err)
		}
	}
	switch o.SASLMechanism {
	case "":
		if o.SASLUser != "" || o.SASLPassword != "" || o.SASLPasswordFile != "" {
			bad("SASLMechanism", "required when a user or a password is set (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if o.SASLUser == "" {
			bad("SASLUser", "required with SASL %s", o.SASLMechanism)
		}
		switch {
		case o.SASLPassword == "" && o.SASLPasswordFile == "":
			bad("SASLPassword", "required (or a password file) with SASL %s", o.SASLMechanism)
		case o.SASLPassword != "" && o.SASLPasswordFile != "":
			bad("SASLPasswordFile", "set together with a password; set one")
		}
	default:
		bad("SASLMechanism", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", o.SASLMechanism)
	}
	if !o.TLS {
		if o.TLSCAFile != "" {
			bad("TLSCAFile", "set but TLS is off")
		}
		if o.TLSInsecureSkipVerify {
			bad("TLSInsecureSkipVerify", "set but TLS is off")
		}
	} else if o.TLSCAFile != "" && o.TLSInsecureSkipVerify {
		bad("TLSInsecureSkipVerify", "contradicts the CA file (verification is skipped, the CA file is unused)")
	}
	if o.ProduceTimeout < 0 {
		bad("ProduceTimeout", "negative (%s)", o.ProduceTimeout)
	}
	return errors.Join(errs...)
}

// LogValue keeps the password out of logs: only whether one is set shows.
func (o Options) LogValue() slog.Value {
	pw := "unset"
	switch {
	case o.SASLPasswordFile != "":
		pw = "file " + o.SASLPasswordFile
	case o.SASLPassword != "":
		pw = "set"
	}
	brokers := make([]string, len(o.Brokers))
	for i, b := range o.Brokers {
		brokers[i] = relay.RedactAddr(b)
	}
	return slog.GroupValue(
		slog.Any("brokers", brokers),
		slog.String("topic", o.Topic),
		slog.String("sasl", o.SASLMechanism),
		slog.String("user", o.SASLUser),
		slog.String("password", pw),
		slog.Bool("tls", o.TLS),
		slog.Bool("auto_create", o.AutoCreateTopic),
	)
}

// checkBroker accepts host:port or a bare host (franz-go adds port 9092).
func checkBroker(b string) error {
	if b == "" || strings.ContainsAny(b, " \t\r\n,/") {
		return errors.New("want host:port")
	}
	host, port, err := net.SplitHostPort(b)
	if err != nil {
		if strings.Count(b, ":") > 1 && !strings.HasPrefix(b, "[") {
			return errors.New("an IPv6 address needs brackets: [addr]:port")
		}
		if strings.Contains(b, ":") {
			var ae *net.AddrError
			if errors.As(err, &ae) {
				return errors.New(ae.Err) // without the address, which may hold credentials
			}
			return err
		}
		return nil // bare host
	}
	if host == "" {
		return errors.New("empty host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not 1-65535", port)
	}
	return nil
}

// checkTopic applies Kafka's topic name rules (legal characters, length).
func checkTopic(t string) error {
	if t == "." || t == ".." {
		return errors.New("not a legal topic name")
	}
	if len(t) > 249 {
		return errors.New("longer than 249 characters")
	}
	for _, c := range t {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("character %q not allowed (use a-z A-Z 0-9 . _ -)", c)
		}
	}
	return nil
}

// readPasswordFile reads a secret file, dropping the trailing newline an
// editor or `echo` leaves.
func readPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("SASL password file: %w", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("SASL password file %s is empty", path)
	}
	return pw, nil
}
