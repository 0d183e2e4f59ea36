package httpsink

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"time"

	"github.com/livepeer/edgerelay/relay"
)

// Defaults, and the API's own limits (spec/metrics-api.md).
const (
	DefaultApp             = "edgerelay"
	DefaultMaxEvents       = 500       // EDGERELAY_HTTP_BATCH; also the API's limit
	DefaultMaxBody         = 1_000_000 // EDGERELAY_HTTP_MAX_BODY; 1 MiB treated as 10^6
	DefaultRatePerMinute   = 30        // EDGERELAY_HTTP_RATE's default: the API's limit per key
	DefaultTimeout         = 30 * time.Second
	DefaultKeyPollInterval = time.Second

	apiMaxEvents = 500
	apiMaxBody   = 1 << 20
	minMaxBody   = 1024
)

// Options configure a Sink. The zero value of every field is its documented
// default; URL and one of APIKey or APIKeyFile are required.
type Options struct {
	// URL is the metrics endpoint, http or https (normally …/v1/metrics).
	URL string
	// APIKey is sent as "Authorization: Bearer <key>". Set it or APIKeyFile,
	// not both.
	APIKey string
	// APIKeyFile holds the key (surrounding white space ignored). It is read
	// at New, re-read when its size, mtime or inode changes (checked before
	// each request and every KeyPollInterval by WatchKey), and on Reload.
	APIKeyFile string
	// App is the body's "app" field; "" means DefaultApp.
	App string
	// Host is the body's "host" field; "" means os.Hostname().
	Host string
	// MaxEvents caps events per request; 0 means 500 (the API's limit, which
	// is also the most allowed).
	MaxEvents int
	// MaxBody caps the uncompressed request body in bytes, wrapper included;
	// 0 means 1,000,000. At most 1 MiB (the API's limit), at least 1024.
	// After a 413 the sink cuts lower, as it learned (see ReprobeAfter).
	MaxBody int
	// RatePerMinute is the request budget, retries and probes included.
	// 0 means no budget, as EDGERELAY_HTTP_RATE=0 does; the metrics API
	// allows DefaultRatePerMinute per key, the agent's default.
	RatePerMinute int
	// Gzip compresses request bodies (Content-Encoding: gzip).
	Gzip bool
	// Timeout bounds one request, body and answer included; 0 means 30 s.
	Timeout time.Duration
	// InsecureSkipVerify turns off TLS certificate checks (test peers only).
	InsecureSkipVerify bool
	// KeyPollInterval is how often WatchKey reads APIKeyFile; 0 means 1 s.
	KeyPollInterval time.Duration
	// Stats receives request counts by status code ("200", "429", "error",
	// "timeout", "canceled"); nil means a private relay.NewStats(). Pass the
	// forwarder's Stats so /v1/stats shows both.
	Stats *relay.Stats
	// Alive is called at each request a Send starts: a Send that bisects a
	// poison batch under the rate budget makes many requests and may run for
	// minutes, and each proves it is not wedged (relay.Forwarder.Alive).
	// May be nil.
	Alive func()
	// Logger receives drop and configuration lines; nil discards them. The
	// sink adds no name of its own: pass a logger that carries it.
	Logger *slog.Logger
}

// withDefaults is the one place defaults are applied.
func (o Options) withDefaults() Options {
	if o.App == "" {
		o.App = DefaultApp
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname() // Validate reports it if still empty
	}
	if o.MaxEvents == 0 {
		o.MaxEvents = DefaultMaxEvents
	}
	if o.MaxBody == 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.KeyPollInterval == 0 {
		o.KeyPollInterval = DefaultKeyPollInterval
	}
	if o.Stats == nil {
		o.Stats = relay.NewStats()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Validate reports every problem with the options at once, each naming its
// field. Zero values are valid (they mean the defaults). It never quotes the
// key.
func (o Options) Validate() error {
	d := o.withDefaults()
	var errs []error
	if d.URL == "" {
		errs = append(errs, errors.New("URL: required"))
	} else if u, err := url.Parse(d.URL); err != nil {
		errs = append(errs, errors.New("URL: not a valid URL"))
	} else if u.Scheme != "http" && u.Scheme != "https" {
		errs = append(errs, fmt.Errorf("URL: scheme must be http or https, not %q", u.Scheme))
	} else if u.Host == "" {
		errs = append(errs, errors.New("URL: no host"))
	}
	switch {
	case d.APIKey == "" && d.APIKeyFile == "":
		errs = append(errs, errors.New("APIKey, APIKeyFile: one is required"))
	case d.APIKey != "" && d.APIKeyFile != "":
		errs = append(errs, errors.New("APIKey, APIKeyFile: set only one"))
	case d.APIKey != "" && !validKey(d.APIKey):
		errs = append(errs, errors.New("APIKey: holds characters not allowed in an HTTP header"))
	}
	if d.Host == "" {
		errs = append(errs, errors.New("Host: empty and os.Hostname failed"))
	}
	if d.MaxEvents < 1 || d.MaxEvents > apiMaxEvents {
		errs = append(errs, fmt.Errorf("MaxEvents: %d not in 1..%d", d.MaxEvents, apiMaxEvents))
	}
	if d.MaxBody < minMaxBody || d.MaxBody > apiMaxBody {
		errs = append(errs, fmt.Errorf("MaxBody: %d not in %d..%d", d.MaxBody, minMaxBody, apiMaxBody))
	}
	if d.MaxEvents >= 1 && d.MaxBody >= minMaxBody && bodySize(len(bodyPrefix(d.App, d.Host)), d.MaxEvents, d.MaxEvents) > d.MaxBody {
		errs = append(errs, fmt.Errorf("MaxBody: %d leaves no room for %d events after the App and Host wrapper", d.MaxBody, d.MaxEvents))
	}
	if d.RatePerMinute < 0 {
		errs = append(errs, fmt.Errorf("RatePerMinute: %d is negative (0 means no budget)", d.RatePerMinute))
	}
	if d.Timeout < 0 {
		errs = append(errs, fmt.Errorf("Timeout: %s is negative", d.Timeout))
	}
	if d.KeyPollInterval < 0 {
		errs = append(errs, fmt.Errorf("KeyPollInterval: %s is negative", d.KeyPollInterval))
	}
	return errors.Join(errs...)
}

// validKey reports whether k can travel in a header value: visible ASCII
// and spaces (RFC 9110 field-value, minus obs-text, which no key uses).
func validKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}
