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
func (c storeCursor) Ack(seq uint64) error   { return c.st.Ack(c.sink, seq) }
func (c storeCursor) Ready() <-chan struct{} { return c.ready }
