package kafkasink

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

// testCA makes a CA and a broker certificate for 127.0.0.1, returning the
// broker's TLS config, the CA pool, and the CA written as a PEM file.
func testCA(t *testing.T) (*tls.Config, *x509.CertPool, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "edgerelay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kfake"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	return srv, pool, caFile
}

// TLS with the CA file delivers; TLS without it cannot verify the broker and
// pauses the sink as misconfigured rather than retrying in a tight loop.
func TestTLS(t *testing.T) {
	srv, pool, caFile := testCA(t)
	c := newCluster(t, kfake.NumBrokers(1), kfake.SeedTopics(3, topic), kfake.TLS(srv))

	h := newHarness(t, Options{Brokers: c.ListenAddrs(), TLS: true, TLSCAFile: caFile}, 500, time.Minute)
	h.add(300, 300)
	h.waitSettled(10 * time.Second)
	h.stop()
	verifyTopic(t, consumeAll(t, c.ListenAddrs(), topic, kgo.DialTLSConfig(&tls.Config{RootCAs: pool})), h.sent, nil)

	s, err := newSink(context.Background(), Options{Brokers: c.ListenAddrs(), TLS: true, ProduceTimeout: 2 * time.Second}, testClientOpts...)
	if err != nil {
		t.Fatalf("New without the CA: %v", err)
	}
	defer s.Close()
	_, b := testEnvelope(1, 300)
	res := s.Send(context.Background(), []spool.Record{{Seq: 1, Data: b}})
	var pe *relay.PausedError
	if !errors.As(res.Err, &pe) || pe.Reason != "misconfigured" {
		t.Fatalf("Send without the CA: %v; want paused (misconfigured)", res.Err)
	}
}
