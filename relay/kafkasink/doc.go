// Package kafkasink delivers stored envelopes to a Kafka topic with franz-go.
//
// Each spool record becomes one Kafka record: the key is the envelope id,
// the value is the stored envelope bytes unchanged. The producer is
// idempotent and waits for all in-sync replicas (acks=all).
//
// New checks that the topic exists (or creates it when asked) and learns its
// max.message.bytes, so the client never builds a batch the brokers refuse.
// A Send produces the whole batch, waits for every record's outcome (bounded
// by ProduceTimeout), and reports a settled prefix to the forwarder:
//
//   - every record acknowledged: the batch is done;
//   - MESSAGE_TOO_LARGE: the record is produced again alone; if it is still
//     too large it is dropped as relay.DropOversize and the rest goes on; if
//     it goes through alone, the topic's limit shrank since it was learned,
//     and the Send reads it again before it returns (or, if the brokers
//     cannot be asked just then, the next Send does);
//   - SASL authentication or TOPIC/CLUSTER_AUTHORIZATION_FAILED:
//     *relay.PausedError{Reason: "unauthorized"}; a missing topic, a broker
//     certificate that does not verify, or an unsupported SASL mechanism:
//     Reason "misconfigured". Nothing is lost; the forwarder probes, each
//     probe with a client built afresh from the password and CA files, and
//     Reload ends the pause at once;
//   - anything else (leader moved, broker down, timeout): transient. The
//     prefix before the first failed record is settled; records after it
//     that the brokers did acknowledge are produced again on the retry.
//     Those are duplicates, harmless because the analytics side collapses
//     events by id, and counted (Sink.Duplicates).
//
// Where data can be lost: nowhere in this package. A record leaves the spool
// only when the brokers acknowledged it with acks=all, or when it is dropped
// and counted as oversize.
package kafkasink
