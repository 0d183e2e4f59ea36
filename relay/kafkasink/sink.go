package kafkasink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/livepeer/edgerelay/envelope"
	"github.com/livepeer/edgerelay/internal/logthrottle"
	"github.com/livepeer/edgerelay/relay"
	"github.com/livepeer/edgerelay/spool"
)

const (
	// defaultBatchMax is franz-go's own default record batch limit, used
	// until the topic's max.message.bytes is known (and as a ceiling: larger
	// batches gain nothing for ~300-byte events).
	defaultBatchMax int32 = 1_000_012
	// minBatchMax is the smallest batch limit franz-go accepts.
	minBatchMax int32 = 512
	// abandonGrace is how long Send waits for the client to report records
	// after the send deadline before it replaces the client, which fails
	// them all at once. It bounds Send even if a broker never answers.
	abandonGrace = 5 * time.Second
)

// recordOverhead bounds what a record batch of one record adds to the
// record's key and value: the batch header (61 bytes) and the record's own
// length, attributes, deltas and header count (varints).
const recordOverhead = 128

// MaxEventBytes is the largest envelope the sink can produce within
// franz-go's batch limit, its key (the envelope's id, at most
// envelope.MaxIDBytes) included: the agent refuses larger events at
// ingest. A topic whose max.message.bytes is lower than the client's limit
// can still refuse an event below it; that one is dropped as oversize.
func MaxEventBytes() int {
	return int(defaultBatchMax) - recordOverhead - envelope.MaxIDBytes
}

// Sink produces spool records to one Kafka topic. It implements relay.Sink.
//
// Send is called by one forwarder goroutine at a time. Reload, Resume,
// Duplicates and Close are safe for concurrent use. Call Close after the
// forwarder has returned.
type Sink struct {
	opts   Options // defaults applied; read-only after New
	log    *slog.Logger
	extra  []kgo.Opt     // added to every client (tests tune metadata ages)
	resume chan struct{} // Reload signals here; capacity 1

	// batchMax is the largest record batch the client builds: the topic's
	// max.message.bytes once learned. The client reads it when it first
	// produces to a partition, so a change needs a new client.
	batchMax atomic.Int32
	verified atomic.Bool   // the current client checked the topic and learned batchMax
	dups     atomic.Uint64 // acknowledged records offered again (see Duplicates)
	alone    atomic.Uint64 // records produced again alone after MESSAGE_TOO_LARGE

	mu     sync.Mutex // guards cl, adm, closed
	cl     *kgo.Client
	adm    *kadm.Client
	closed bool

	// Send's own state, touched only by the forwarder goroutine.
	krecs   []kgo.Record
	errs    []error
	dropLog *logthrottle.Throttle
}

// New connects to the brokers and checks that the topic exists, creating it
// when AutoCreateTopic is set. The check is bounded by ProduceTimeout.
//
// New fails on invalid options, an unreadable password or CA file, and a
// missing topic (the error wraps ErrTopicMissing and names the topic). When
// the brokers cannot be reached or refuse the credentials, New still
// returns the sink and logs why: a sidecar may start before Kafka, and
// credentials can be fixed with Reload. The check then runs again before
// the first Send, and the forwarder pauses or retries as it reports.
func New(ctx context.Context, opts Options) (*Sink, error) {
	return newSink(ctx, opts)
}

func newSink(ctx context.Context, opts Options, extra ...kgo.Opt) (*Sink, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	s := &Sink{
		opts:    o,
		log:     o.Logger.With("sink", "kafka", "topic", o.Topic),
		extra:   extra,
		resume:  make(chan struct{}, 1),
		dropLog: logthrottle.New(time.Minute, 1),
	}
	s.batchMax.Store(defaultBatchMax)
	cl, err := s.newClient()
	if err != nil {
		return nil, err
	}
	s.cl, s.adm = cl, kadm.NewClient(cl)
	if o.SASLMechanism == SASLPlain && !o.TLS {
		s.log.Warn("SASL PLAIN without TLS sends the password in clear text", "next", "switch TLS on unless the network is private")
	}

	vctx, cancel := context.WithTimeout(ctx, o.ProduceTimeout)
	defer cancel()
	if _, err := s.verify(vctx, s.adm); err != nil {
		switch c := classify(err); {
		case errors.Is(err, ErrTopicMissing), ctx.Err() != nil:
			cl.Close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, err
		default:
			s.log.Warn("kafka topic not checked at start; checking again before the first send",
				"err", err, "class", c.String(), "brokers", o.Brokers)
		}
	}
	return s, nil
}

// Send produces recs and waits for every acknowledgement (acks=all), bounded
// by ProduceTimeout. The settled prefix is what the brokers acknowledged
// plus records dropped as oversize, up to the first record that failed
// otherwise. Acknowledged records after that failure will be produced again
// with the retry: they are counted in Duplicates.
func (s *Sink) Send(ctx context.Context, recs []spool.Record) relay.Result {
	if len(recs) == 0 {
		return relay.Done(0)
	}
	cl, adm, err := s.client()
	if err != nil {
		return relay.Result{Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.ProduceTimeout)
	defer cancel()

	if !s.verified.Load() {
		changed, err := s.verify(ctx, adm)
		if err != nil {
			o := classify(err)
			s.opts.Stats.AddRequest(requestCode(o, err))
			s.afterRefusal(o, cl)
			return relay.Result{Err: relayErr(o, fmt.Errorf("kafka topic check: %w", err))}
		}
		if changed {
			// The client may have cached the old batch limit.
			s.retire(cl)
			if cl, adm, err = s.client(); err != nil {
				return relay.Result{Err: err}
			}
		}
	}

	errs := s.produce(ctx, cl, recs)

	var (
		drops   []relay.Drop
		settled int
		failed  error
		worst   = outOK
		shrank  bool // a batch was refused whose records fit alone
	)
	for i, err := range errs {
		o := classify(err)
		if o == outTooLarge {
			// Broker-side, MESSAGE_TOO_LARGE fails a whole batch; only a
			// record rejected on its own is really oversize.
			if len(recs) > 1 {
				s.alone.Add(1)
				err = s.produceOne(ctx, cl, recs[i].Data)
				if o = classify(err); o == outOK {
					shrank = true
				}
			}
			if o == outTooLarge {
				drops = append(drops, s.oversize(recs[i], err))
				worst = max(worst, outTooLarge)
				settled++
				continue
			}
		}
		if o != outOK {
			failed, worst = err, max(worst, o)
			break
		}
		settled++
	}
	if failed != nil {
		for _, err := range errs[settled+1:] {
			switch o := classify(err); o {
			case outOK:
				s.dups.Add(1) // acknowledged, but after the prefix: sent again
			case outUnauthorized, outMisconfigured:
				worst = max(worst, o) // pause if any record says so
			}
		}
		if errors.Is(failed, kerr.UnknownTopicOrPartition) {
			s.verified.Store(false) // deleted? the next Send checks and says so
		}
	}
	if shrank {
		s.relearn(ctx, adm, cl)
	}
	s.opts.Stats.AddRequest(requestCode(worst, failed))
	if failed == nil {
		return relay.Result{Settled: settled, Dropped: drops}
	}
	err = fmt.Errorf("kafka produce: %d of %d records not acknowledged: %w", len(recs)-settled, len(recs), failed)
	if worst == outTooLarge {
		worst = outTransient
	}
	s.afterRefusal(worst, cl)
	return relay.Result{Settled: settled, Dropped: drops, Err: relayErr(worst, err)}
}

// relearn reads the topic's limit again after the brokers refused a batch
// whose records they took one by one: the limit shrank since it was
// learned. It does so now rather than at the next Send, so the client stops
// building batches the brokers refuse even when no Send follows soon. If the
// topic cannot be read now, the next Send tries again.
func (s *Sink) relearn(ctx context.Context, adm *kadm.Client, cl *kgo.Client) {
	s.verified.Store(false)
	if changed, err := s.verify(ctx, adm); err == nil && changed {
		s.retire(cl) // the client may have cached the old batch limit
	}
}

// afterRefusal retires the client after the brokers refused it, so that the
// forwarder's next probe builds a new one from the password and CA files as
// they are then: an operator who fixed a file without calling Reload is
// picked up at the next probe.
func (s *Sink) afterRefusal(o outcome, cl *kgo.Client) {
	if o == outUnauthorized || o == outMisconfigured {
		s.retire(cl)
	}
}

// produce hands every record to the client and waits for all outcomes.
// errs[i] is record i's outcome; the slice is reused by the next Send.
func (s *Sink) produce(ctx context.Context, cl *kgo.Client, recs []spool.Record) []error {
	n := len(recs)
	if cap(s.krecs) < n {
		s.krecs = make([]kgo.Record, n)
		s.errs = make([]error, n)
	}
	krecs, errs := s.krecs[:n], s.errs[:n]
	var left atomic.Int64
	left.Store(int64(n))
	done := make(chan struct{})
	for i := range recs {
		r := &krecs[i]
		*r = kgo.Record{Topic: s.opts.Topic, Value: recs[i].Data}
		r.Key, _ = envelope.ID(recs[i].Data) // no id: no key; the partitioner spreads it
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			errs[i] = err
			if left.Add(-1) == 0 {
				close(done)
			}
		})
	}
	// Flush ends the linger at once: nothing more is coming in this Send.
	// Its error is the context's, which the records report themselves.
	_ = cl.Flush(ctx)
	t := time.NewTimer(abandonGrace)
	select {
	case <-done:
	case <-t.C:
		s.log.Warn("kafka client kept records past the send deadline; replacing the client",
			"records", left.Load(), "grace", abandonGrace, "next", "the records are retried")
		s.retire(cl) // closing the client fails every record it holds
		<-done
	}
	t.Stop()
	clear(krecs) // keep no reference to the spool's data after Send
	return errs
}

// produceOne produces one record alone and waits for its outcome.
func (s *Sink) produceOne(ctx context.Context, cl *kgo.Client, data []byte) error {
	key, _ := envelope.ID(data)
	return cl.ProduceSync(ctx, &kgo.Record{Topic: s.opts.Topic, Key: key, Value: data}).FirstErr()
}

func (s *Sink) oversize(rec spool.Record, err error) relay.Drop {
	id, _ := envelope.ID(rec.Data)
	if s.dropLog.Allow() {
		s.log.Warn("event larger than the topic accepts; dropped",
			"seq", rec.Seq, "id", string(id), "bytes", len(rec.Data), "limit", s.batchMax.Load(),
			"err", err, "suppressed", s.dropLog.Suppressed(),
			"next", "counted as dropped{reason=oversize}; raise the topic's max.message.bytes to keep such events")
	}
	return relay.Drop{Seq: rec.Seq, ID: string(id), Reason: relay.DropOversize}
}

// verify checks that the topic exists (creating it when asked) and learns
// its max.message.bytes. changed reports a new batch limit.
func (s *Sink) verify(ctx context.Context, adm *kadm.Client) (changed bool, err error) {
	topic := s.opts.Topic
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return false, err
	}
	td, ok := md.Topics[topic]
	switch {
	case ok && td.Err == nil:
	case ok && !errors.Is(td.Err, kerr.UnknownTopicOrPartition):
		return false, fmt.Errorf("topic %q: %w", topic, td.Err)
	case !s.opts.AutoCreateTopic:
		return false, topicMissing(topic, s.opts.Brokers)
	default:
		// -1, -1: the cluster's default partitions and replication.
		if _, err := adm.CreateTopic(ctx, -1, -1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return false, fmt.Errorf("create topic %q: %w", topic, err)
		}
		s.log.Info("kafka topic created", "partitions", "cluster default")
	}
	limit, err := s.topicLimit(ctx, adm)
	if err != nil {
		return false, err
	}
	changed = s.batchMax.Swap(limit) != limit
	s.verified.Store(true)
	return changed, nil
}

// topicLimit reads the topic's max.message.bytes. A producer that may not
// describe configs, or a broker that does not say, keeps the limit it has
// (the client default until one is learned), and the MESSAGE_TOO_LARGE
// handling in Send covers a smaller topic limit. Any other failure is
// returned: a dropped connection must not replace a learned limit with the
// default.
func (s *Sink) topicLimit(ctx context.Context, adm *kadm.Client) (int32, error) {
	rcs, err := adm.DescribeTopicConfigs(ctx, s.opts.Topic)
	var rc kadm.ResourceConfig
	if err == nil {
		rc, err = rcs.On(s.opts.Topic, nil)
	}
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		if classify(err) != outUnauthorized {
			return 0, fmt.Errorf("describe topic %q configs: %w", s.opts.Topic, err)
		}
		s.log.Debug("topic max.message.bytes not readable; keeping the current limit", "limit", s.batchMax.Load(), "err", err)
		return s.batchMax.Load(), nil
	}
	for _, c := range rc.Configs {
		if c.Key != "max.message.bytes" || c.Value == nil {
			continue
		}
		if v, perr := strconv.ParseInt(*c.Value, 10, 32); perr == nil {
			return min(max(int32(v), minBatchMax), defaultBatchMax), nil
		}
	}
	return s.batchMax.Load(), nil
}

// Reload re-reads the password file and the CA file, replaces the client,
// and ends a pause at once (Resume). On error the old client stays.
func (s *Sink) Reload() error {
	cl, err := s.newClient()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cl.Close()
		return errClosed
	}
	old := s.cl
	s.cl, s.adm = cl, kadm.NewClient(cl)
	s.verified.Store(false)
	s.mu.Unlock()
	if old != nil {
		old.Close() // a Send still using it fails transiently and retries on the new one
	}
	s.log.Info("kafka client reloaded", "next", "the topic is checked again before the next send")
	select {
	case s.resume <- struct{}{}:
	default:
	}
	return nil
}

// Resume receives after each Reload. Wire it to relay.Forwarder.Resume so a
// paused forwarder probes at once instead of waiting for its probe interval.
func (s *Sink) Resume() <-chan struct{} { return s.resume }

// Duplicates is the number of records the brokers acknowledged that Send
// could not settle because an earlier record of the same batch failed; the
// forwarder offers them again, so Kafka holds them twice (same id). Records
// cut off by a timeout may also be written twice without being counted
// here, since the client cannot know whether the broker stored them.
func (s *Sink) Duplicates() uint64 { return s.dups.Load() }

// Close closes the client. Records still buffered in it fail; they stay in
// the spool. Close is idempotent.
func (s *Sink) Close() {
	s.mu.Lock()
	cl := s.cl
	s.cl, s.adm, s.closed = nil, nil, true
	s.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
}

// client returns the current client, building one when the last was
// retired. It fails after Close or when a new client cannot be built.
func (s *Sink) client() (*kgo.Client, *kadm.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, nil, errClosed
	}
	if s.cl == nil {
		cl, err := s.newClient()
		if err != nil {
			return nil, nil, err
		}
		s.cl, s.adm = cl, kadm.NewClient(cl)
		s.verified.Store(false)
	}
	return s.cl, s.adm, nil
}

// retire closes old, which fails every record it still holds, and makes
// the next client call build a fresh one (unless Reload replaced old first).
func (s *Sink) retire(old *kgo.Client) {
	s.mu.Lock()
	if s.cl == old {
		s.cl, s.adm = nil, nil
	}
	s.mu.Unlock()
	old.Close()
}

// newClient builds a client from the options, reading the password and CA
// files afresh.
func (s *Sink) newClient() (*kgo.Client, error) {
	o := s.opts
	kopts := []kgo.Opt{
		kgo.SeedBrokers(o.Brokers...),
		kgo.ClientID(o.ClientID),
		kgo.DefaultProduceTopic(o.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// Idempotence stays on (the default). Cancellation of in-flight
		// records is allowed so that a Send ends at its deadline; a record
		// cut off that way may be written twice, which ids make harmless.
		kgo.AllowIdempotentProduceCancellation(),
		kgo.RecordDeliveryTimeout(max(o.ProduceTimeout, time.Second)), // franz-go's minimum; the Send context is the real bound
		kgo.ProducerLinger(o.Linger),
		kgo.ProducerBatchMaxBytesFn(func(string) int32 { return s.batchMax.Load() }),
		kgo.WithLogger(kgoLogger{s.log}),
	}
	pw := o.SASLPassword
	if o.SASLPasswordFile != "" {
		var err error
		if pw, err = readPasswordFile(o.SASLPasswordFile); err != nil {
			return nil, err
		}
	}
	switch o.SASLMechanism {
	case SASLPlain:
		kopts = append(kopts, kgo.SASL(plain.Auth{User: o.SASLUser, Pass: pw}.AsMechanism()))
	case SASLScramSHA256:
		kopts = append(kopts, kgo.SASL(scram.Auth{User: o.SASLUser, Pass: pw}.AsSha256Mechanism()))
	case SASLScramSHA512:
		kopts = append(kopts, kgo.SASL(scram.Auth{User: o.SASLUser, Pass: pw}.AsSha512Mechanism()))
	}
	if o.TLS {
		cfg, err := tlsConfig(o)
		if err != nil {
			return nil, err
		}
		kopts = append(kopts, kgo.DialTLSConfig(cfg))
	}
	kopts = append(kopts, s.extra...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	return cl, nil
}

func tlsConfig(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.TLSInsecureSkipVerify}
	if o.TLSCAFile != "" {
		pem, err := os.ReadFile(o.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file: no PEM certificate in %s", o.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// kgoLogger passes the client's errors to slog; its warnings repeat once per
// retry during an outage, and the forwarder already reports those.
type kgoLogger struct{ l *slog.Logger }

func (kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelError }

func (k kgoLogger) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	k.l.Warn("kafka client error", append([]any{"detail", msg}, keyvals...)...)
}
