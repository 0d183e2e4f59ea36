package kafkasink

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOptionsValidate(t *testing.T) {
	tests := []struct {
		name   string
		o      Options
		fields []string // the FieldErrors' fields, in order; none means valid
		words  []string // substrings of the message
	}{
		{name: "brokers only", o: Options{Brokers: []string{"kafka-1:9092", "kafka-2"}}},
		{name: "everything", o: Options{Brokers: []string{"k:9093"}, Topic: "streaming_events", SASLMechanism: SASLScramSHA512,
			SASLUser: "relay", SASLPasswordFile: "/run/secrets/kafka", TLS: true, TLSCAFile: "/etc/ca.pem", AutoCreateTopic: true}},
		{name: "no brokers", o: Options{Topic: "x"}, fields: []string{"Brokers"}},
		{name: "bad brokers, topic and mechanism", o: Options{Brokers: []string{"good:9092", "bad:port", "::1:9092"}, Topic: "no spaces", SASLMechanism: "GSSAPI"},
			fields: []string{"Brokers", "Brokers", "Topic", "SASLMechanism"}, words: []string{"bad:port", "::1:9092", `"GSSAPI"`}},
		{name: "SASL without user and password", o: Options{Brokers: []string{"k:1"}, SASLMechanism: SASLScramSHA256},
			fields: []string{"SASLUser", "SASLPassword"}},
		{name: "password and file", o: Options{Brokers: []string{"k:1"}, SASLMechanism: SASLPlain, SASLUser: "u", SASLPassword: "p", SASLPasswordFile: "/f"},
			fields: []string{"SASLPasswordFile"}},
		{name: "user without mechanism", o: Options{Brokers: []string{"k:1"}, SASLUser: "u", SASLPassword: "p"}, fields: []string{"SASLMechanism"}},
		{name: "TLS settings with TLS off", o: Options{Brokers: []string{"k:1"}, TLSCAFile: "/ca", TLSInsecureSkipVerify: true},
			fields: []string{"TLSCAFile", "TLSInsecureSkipVerify"}},
		{name: "CA file and insecure", o: Options{Brokers: []string{"k:1"}, TLS: true, TLSCAFile: "/ca", TLSInsecureSkipVerify: true},
			fields: []string{"TLSInsecureSkipVerify"}},
		{name: "port out of range", o: Options{Brokers: []string{"k:70000"}}, fields: []string{"Brokers"}, words: []string{`port "70000"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.o.Validate()
			var fields []string
			for _, e := range flatten(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error %v is not a FieldError", e)
				}
				fields = append(fields, fe.Field)
			}
			if !slices.Equal(fields, tt.fields) {
				t.Fatalf("fields %v, want %v (%v)", fields, tt.fields, err)
			}
			for _, w := range tt.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%v", w, err)
				}
			}
			if tt.o.Enabled() != (len(tt.o.Brokers) > 0) {
				t.Fatalf("Enabled() = %v with brokers %v", tt.o.Enabled(), tt.o.Brokers)
			}
		})
	}
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

func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}
