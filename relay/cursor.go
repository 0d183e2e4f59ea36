package relay

import "github.com/livepeer/edgerelay/spool"

// Cursor is one sink's view of the spool: what it has still to deliver.
type Cursor interface {
	// Read returns up to max records (and about maxBytes of data) after the
	// acknowledged position, without blocking and without moving it.
	Read(max, maxBytes int) ([]spool.Record, error)
	// Ack marks every record up to and including seq as done.
	Ack(seq uint64) error
	// Ready receives a value when records may have been appended.
	Ready() <-chan struct{}
}

// Store is the part of a spool (disk or memory) a cursor needs.
type Store interface {
	Read(sink string, max, maxBytes int) ([]spool.Record, error)
	Ack(sink string, seq uint64) error
	Ready(sink string) <-chan struct{}
}

// NewCursor returns the cursor of sink in st. The sink must be registered in
// the store (AddSink) first.
func NewCursor(st Store, sink string) Cursor {
	return storeCursor{st: st, sink: sink, ready: st.Ready(sink)}
}

type storeCursor struct {
	st    Store
	sink  string
	ready <-chan struct{}
}

func (c storeCursor) Read(max, maxBytes int) ([]spool.Record, error) {
	return c.st.Read(c.sink, max, maxBytes)
}
func (c storeCursor) Ack(seq uint64) error { return c.st.Ack(c.sink, seq) }

// AckFrom acks and returns the cursor it moved from, when the store can
// tell (spool.Memory and spool.Spool can).
func (c storeCursor) AckFrom(seq uint64) (uint64, error) {
	if af, ok := c.st.(interface {
		AckFrom(sink string, seq uint64) (uint64, error)
	}); ok {
		return af.AckFrom(c.sink, seq)
	}
	return 0, c.st.Ack(c.sink, seq)
}

// AckFrom acknowledges up to seq on c and returns the position it moved
// from: records at or before it were evicted by the spool while in flight.
// A cursor that cannot tell reports 0 (nothing evicted).
func AckFrom(c Cursor, seq uint64) (prev uint64, err error) {
	if af, ok := c.(interface {
		AckFrom(seq uint64) (uint64, error)
	}); ok {
		return af.AckFrom(seq)
	}
	return 0, c.Ack(seq)
}
func (c storeCursor) Ready() <-chan struct{} { return c.ready }
