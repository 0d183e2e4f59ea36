package kafkasink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/livepeer/edgerelay/relay"
)

func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("produce: %w", err) }
	tests := []struct {
		name  string
		err   error
		want  outcome
		class relay.Class
		code  string
	}{
		{"nil", nil, outOK, relay.ClassSuccess, "ok"},
		{"message too large", kerr.MessageTooLarge, outTooLarge, relay.ClassTransient, "too_large"},
		{"message too large, client side", fmt.Errorf("%w (uncompressed_bytes=9000)", kerr.MessageTooLarge), outTooLarge, relay.ClassTransient, "too_large"},
		{"record list too large", kerr.RecordListTooLarge, outTooLarge, relay.ClassTransient, "too_large"},
		{"sasl authentication failed", wrap(kerr.SaslAuthenticationFailed), outUnauthorized, relay.ClassPaused, "auth"},
		{"topic authorization failed", kerr.TopicAuthorizationFailed, outUnauthorized, relay.ClassPaused, "auth"},
		{"cluster authorization failed", kerr.ClusterAuthorizationFailed, outUnauthorized, relay.ClassPaused, "auth"},
		{"kadm auth error", &kadm.AuthError{Err: kerr.TopicAuthorizationFailed}, outUnauthorized, relay.ClassPaused, "auth"},
		{"topic missing", topicMissing("t", []string{"b:9092"}), outMisconfigured, relay.ClassPaused, "error"},
		{"unsupported sasl mechanism", kerr.UnsupportedSaslMechanism, outMisconfigured, relay.ClassPaused, "error"},
		{"unknown certificate authority", wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), outMisconfigured, relay.ClassPaused, "error"},
		{"plaintext broker behind tls", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, outMisconfigured, relay.ClassPaused, "error"},
		{"not leader", kerr.NotLeaderForPartition, outTransient, relay.ClassTransient, "error"},
		{"unknown server error", kerr.UnknownServerError, outTransient, relay.ClassTransient, "error"},
		{"broker gone", wrap(io.EOF), outTransient, relay.ClassTransient, "error"},
		{"client closed", kgo.ErrClientClosed, outTransient, relay.ClassTransient, "error"},
		{"deadline", context.DeadlineExceeded, outTransient, relay.ClassTransient, "timeout"},
		{"record timeout", kgo.ErrRecordTimeout, outTransient, relay.ClassTransient, "timeout"},
		{"request timed out", kerr.RequestTimedOut, outTransient, relay.ClassTransient, "error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify(tt.err)
			if got != tt.want {
				t.Fatalf("classify(%v) = %s, want %s", tt.err, got, tt.want)
			}
			o := got
			if o == outTooLarge {
				o = outTransient // as Send reports a batch that failed for size
			}
			if class, _ := relay.Classify(relayErr(o, tt.err)); class != tt.class {
				t.Fatalf("relay class %s, want %s", class, tt.class)
			}
			if code := requestCode(got, tt.err); code != tt.code {
				t.Fatalf("request code %q, want %q", code, tt.code)
			}
		})
	}
	var pe *relay.PausedError
	if err := relayErr(outUnauthorized, kerr.SaslAuthenticationFailed); !errors.As(err, &pe) || pe.Reason != "unauthorized" || !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("unauthorized: %v; want PausedError{unauthorized} wrapping the cause", err)
	}
}
