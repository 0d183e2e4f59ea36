package kafkasink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/livepeer/edgerelay/relay"
)

// ErrTopicMissing is wrapped by the error New returns (and a paused Send
// reports) when the topic does not exist and AutoCreateTopic is off.
var ErrTopicMissing = errors.New("kafkasink: topic does not exist")

// errClosed is returned by Send after Close: a wiring mistake, not a
// destination that ended, so it is transient rather than relay.ErrClosed.
var errClosed = errors.New("kafkasink: sink closed")

// outcome is what one record's (or one check's) error means for the sink.
type outcome int

const (
	outOK            outcome = iota
	outTooLarge              // MESSAGE_TOO_LARGE: drop as oversize if it is too large alone
	outTransient             // retry after backoff
	outMisconfigured         // pause: topic missing, TLS or SASL mechanism wrong
	outUnauthorized          // pause: credentials or ACLs
)

func (o outcome) String() string {
	switch o {
	case outOK:
		return "ok"
	case outTooLarge:
		return "too_large"
	case outTransient:
		return "transient"
	case outMisconfigured:
		return "misconfigured"
	case outUnauthorized:
		return "unauthorized"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// classify is the one place that maps a Kafka client error to an outcome.
func classify(err error) outcome {
	var (
		verifyErr *tls.CertificateVerificationError
		headerErr tls.RecordHeaderError
		authority x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
	)
	switch {
	case err == nil:
		return outOK
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return outTooLarge
	case errors.Is(err, kerr.SaslAuthenticationFailed),
		errors.Is(err, kerr.TopicAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed):
		return outUnauthorized
	case errors.Is(err, ErrTopicMissing),
		errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.As(err, &verifyErr), errors.As(err, &headerErr),
		errors.As(err, &authority), errors.As(err, &hostname), errors.As(err, &invalid):
		return outMisconfigured
	}
	return outTransient
}

// relayErr turns an outcome and its error into the error the forwarder
// classifies (relay.Classify).
func relayErr(o outcome, err error) error {
	switch o {
	case outUnauthorized:
		return &relay.PausedError{Reason: "unauthorized", Err: err}
	case outMisconfigured:
		return &relay.PausedError{Reason: "misconfigured", Err: err}
	}
	return err
}

// requestCode is the edgerelay_sink_requests_total code of one Send.
func requestCode(o outcome, err error) string {
	switch o {
	case outOK:
		return "ok"
	case outTooLarge:
		return "too_large"
	case outUnauthorized:
		return "auth"
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrRecordTimeout) {
		return "timeout"
	}
	return "error"
}

// topicMissing builds the start-up error that names the topic.
func topicMissing(topic string, brokers []string) error {
	return fmt.Errorf("%w: %q on brokers %v (create it, or switch topic auto-creation on)", ErrTopicMissing, topic, brokers)
}
