package kafkasink

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOptionsFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Options
		errs    []string // each must appear in the error
		enabled bool
	}{
		{name: "nothing set: off", env: nil, want: Options{}},
		{
			name:    "brokers only",
			env:     map[string]string{EnvBrokers: "kafka-1:9092, kafka-2:9092,,"},
			want:    Options{Brokers: []string{"kafka-1:9092", "kafka-2:9092"}},
			enabled: true,
		},
		{
			name: "everything",
			env: map[string]string{
				EnvBrokers: "k:9093", EnvTopic: "streaming_events", EnvSASLMechanism: "scram-sha-512",
				EnvUsername: "relay", EnvPasswordFile: "/run/secrets/kafka", EnvTLS: "on",
				EnvTLSCAFile: "/etc/ca.pem", EnvAutoCreate: "yes",
			},
			want: Options{
				Brokers: []string{"k:9093"}, Topic: "streaming_events", SASLMechanism: SASLScramSHA512,
				SASLUser: "relay", SASLPasswordFile: "/run/secrets/kafka", TLS: true, TLSCAFile: "/etc/ca.pem",
				AutoCreateTopic: true,
			},
			enabled: true,
		},
		{
			name:    "plain with password, insecure tls",
			env:     map[string]string{EnvBrokers: "k", EnvSASLMechanism: "PLAIN", EnvUsername: "u", EnvPassword: " p w ", EnvTLS: "1", EnvTLSInsecure: "true"},
			want:    Options{Brokers: []string{"k"}, SASLMechanism: SASLPlain, SASLUser: "u", SASLPassword: " p w ", TLS: true, TLSInsecureSkipVerify: true},
			enabled: true,
		},
		{
			name: "topic without brokers",
			env:  map[string]string{EnvTopic: "x"},
			errs: []string{EnvBrokers},
		},
		{
			name: "every problem at once",
			env: map[string]string{
				EnvBrokers: "good:9092,bad:port,::1:9092", EnvTopic: "no spaces", EnvSASLMechanism: "GSSAPI",
				EnvTLS: "maybe", EnvTLSInsecure: "sure", EnvAutoCreate: "2",
			},
			errs: []string{`bad:port`, `::1:9092`, EnvTopic, EnvSASLMechanism + `: "GSSAPI"`, EnvTLS + `: "maybe"`, EnvTLSInsecure + `: "sure"`, EnvAutoCreate + `: "2"`},
		},
		{
			name: "mechanism without user or password",
			env:  map[string]string{EnvBrokers: "k:1", EnvSASLMechanism: "SCRAM-SHA-256"},
			errs: []string{EnvUsername + ": required", EnvPassword + ": required"},
		},
		{
			name: "password and password file",
			env:  map[string]string{EnvBrokers: "k:1", EnvSASLMechanism: "PLAIN", EnvUsername: "u", EnvPassword: "p", EnvPasswordFile: "/f"},
			errs: []string{EnvPasswordFile + ": set together with " + EnvPassword},
		},
		{
			name: "credentials without mechanism",
			env:  map[string]string{EnvBrokers: "k:1", EnvUsername: "u", EnvPassword: "p"},
			errs: []string{EnvSASLMechanism + ": required"},
		},
		{
			name: "tls files without tls",
			env:  map[string]string{EnvBrokers: "k:1", EnvTLSCAFile: "/ca", EnvTLSInsecure: "true"},
			errs: []string{EnvTLSCAFile + ": set but " + EnvTLS + " is off", EnvTLSInsecure + ": set but"},
		},
		{
			name: "port out of range",
			env:  map[string]string{EnvBrokers: "k:70000"},
			errs: []string{`port "70000"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OptionsFromEnv(func(k string) string { return tt.env[k] })
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("error: %v", err)
				}
				if !equalOptions(got, tt.want) {
					t.Fatalf("got %+v\nwant %+v", got, tt.want)
				}
				if got.Enabled() != tt.enabled {
					t.Fatalf("Enabled() = %v, want %v", got.Enabled(), tt.enabled)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error; want one mentioning %q", tt.errs)
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}

func equalOptions(a, b Options) bool {
	return slices.Equal(a.Brokers, b.Brokers) && a.Topic == b.Topic && a.SASLMechanism == b.SASLMechanism &&
		a.SASLUser == b.SASLUser && a.SASLPassword == b.SASLPassword && a.SASLPasswordFile == b.SASLPasswordFile &&
		a.TLS == b.TLS && a.TLSCAFile == b.TLSCAFile && a.TLSInsecureSkipVerify == b.TLSInsecureSkipVerify &&
		a.AutoCreateTopic == b.AutoCreateTopic
}

func TestDefaults(t *testing.T) {
	o := Options{Brokers: []string{"k:9092"}}.withDefaults()
	if o.Topic != DefaultTopic || o.ClientID != DefaultClientID || o.ProduceTimeout != DefaultProduceTimeout ||
		o.Linger != DefaultLinger || o.Stats == nil || o.Logger == nil {
		t.Fatalf("defaults not applied: %+v", o)
	}
	if o := (Options{Linger: -1}).withDefaults(); o.Linger != 0 {
		t.Fatalf("negative linger gives %s, want none", o.Linger)
	}
	if err := (Options{Brokers: []string{"k"}, ProduceTimeout: -time.Second}).Validate(); err == nil || !strings.Contains(err.Error(), "ProduceTimeout") {
		t.Fatalf("negative ProduceTimeout: %v", err)
	}
}

// The password never reaches a log line.
func TestPasswordNotLogged(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	o := Options{Brokers: []string{"k:9092"}, SASLMechanism: SASLPlain, SASLUser: "relay", SASLPassword: "hunter2-secret"}
	log.Info("kafka sink", "options", o)
	if strings.Contains(buf.String(), "hunter2") || !strings.Contains(buf.String(), "password=set") {
		t.Fatalf("log line: %s", buf.String())
	}
}

// FuzzOptionsFromEnv: any environment gives options or an error naming an
// EDGERELAY_KAFKA_ variable, never a panic; accepted options validate.
func FuzzOptionsFromEnv(f *testing.F) {
	f.Add("k1:9092,k2:9092", "network_events", "PLAIN", "u", "p", "", "true", "", "false", "")
	f.Add("[::1]:9092", "", "scram-sha-256", "u", "", "/run/pw", "on", "/ca.pem", "", "1")
	f.Add("bad:port", "a b", "GSSAPI", "", "", "", "maybe", "", "yes", "x")
	f.Fuzz(func(t *testing.T, brokers, topic, mech, user, pw, pwFile, tls, ca, insecure, auto string) {
		env := map[string]string{
			EnvBrokers: brokers, EnvTopic: topic, EnvSASLMechanism: mech, EnvUsername: user, EnvPassword: pw,
			EnvPasswordFile: pwFile, EnvTLS: tls, EnvTLSCAFile: ca, EnvTLSInsecure: insecure, EnvAutoCreate: auto,
		}
		o, err := OptionsFromEnv(func(k string) string { return env[k] })
		if err != nil {
			for _, e := range flatten(err) {
				if !strings.HasPrefix(e.Error(), "EDGERELAY_KAFKA_") {
					t.Fatalf("error names no variable: %q", e)
				}
			}
			return
		}
		if !o.Enabled() {
			return
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("accepted options do not validate: %v", err)
		}
		for _, b := range o.Brokers {
			if b == "" || strings.ContainsAny(b, ", \t") {
				t.Fatalf("broker %q accepted", b)
			}
		}
	})
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
