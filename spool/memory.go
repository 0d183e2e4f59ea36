package spool

import (
	"maps"
	"slices"
	"sync"
)

// Memory is the memory-only spool: the same contract as Spool without
// durability. Everything it holds is lost when the process exits. It is used
// when EDGERELAY_SPOOL=off.
//
// Memory is safe for concurrent use. Records are contiguous: the held records
// are exactly the sequence numbers first..last, so pending counts are
// arithmetic, not scans.
type Memory struct {
	mu       sync.Mutex // guards everything below
	recs     []Record   // held records; recs[head:] are live
	head     int
	bytes    int64
	maxBytes int64
	lastSeq  uint64
	sinks    map[string]*memSink
	closed   bool
}

type memSink struct {
	cursor   uint64
	received uint64
	acked    uint64
	evicted  uint64
	ready    chan struct{}
}

// NewMemory returns an empty memory spool holding at most maxBytes of record
// data (maxBytes <= 0 means unbounded).
func NewMemory(maxBytes int64) *Memory {
	return &Memory{maxBytes: maxBytes, sinks: make(map[string]*memSink)}
}

// AddSink registers a sink. A new sink starts at the end of the log: it
// receives only records appended after this call. Adding a known sink is a
// no-op.
func (m *Memory) AddSink(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.sinks[name]; !ok {
		m.sinks[name] = &memSink{cursor: m.lastSeq, ready: make(chan struct{}, 1)}
	}
	return nil
}

// RemoveSink forgets a sink and returns its final accounting; its pending
// records are no longer kept for it.
func (m *Memory) RemoveSink(name string) (SinkStat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sinks[name]
	if !ok {
		return SinkStat{}, ErrUnknownSink
	}
	st := m.sinkStatLocked(s)
	delete(m.sinks, name)
	m.collectLocked()
	return st, nil
}

// Append adds records in order. It never fails for lack of room: over the
// cap the oldest records are evicted and counted for every sink that had not
// acked them.
func (m *Memory) Append(data [][]byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	for _, d := range data {
		m.lastSeq++
		m.recs = append(m.recs, Record{Seq: m.lastSeq, Data: d})
		m.bytes += int64(len(d))
	}
	for _, s := range m.sinks {
		s.received += uint64(len(data))
	}
	for m.maxBytes > 0 && m.bytes > m.maxBytes && m.head < len(m.recs) {
		r := m.recs[m.head]
		for _, s := range m.sinks {
			if s.cursor < r.Seq {
				s.evicted++
				s.cursor = r.Seq
			}
		}
		m.popLocked()
	}
	m.collectLocked()
	for _, s := range m.sinks {
		select {
		case s.ready <- struct{}{}:
		default:
		}
	}
	return nil
}

// Read returns up to max records after the sink's cursor, stopping before
// maxBytes would be exceeded; the first record is returned even when it alone
// is larger. It does not move the cursor. The Data slices are shared and must
// not be modified.
func (m *Memory) Read(sink string, max, maxBytes int) ([]Record, error) {
	var b Batch
	err := m.ReadBatch(sink, 0, max, maxBytes, &b)
	if len(b.Recs) == 0 {
		return nil, err
	}
	return b.Recs, err
}

// ReadBatch is Read into a reusable Batch, after position after or the
// sink's cursor, whichever is further (see Spool.ReadBatch). The records
// share the slices given to Append.
func (m *Memory) ReadBatch(sink string, after uint64, limit, maxBytes int, b *Batch) error {
	b.Recs, b.Cut = b.Recs[:0], false
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sinks[sink]
	if !ok {
		return ErrUnknownSink
	}
	live := m.recs[m.head:]
	if len(live) == 0 {
		return nil
	}
	start := 0
	if from := max(after, s.cursor) + 1; from > live[0].Seq {
		start = int(min(from-live[0].Seq, uint64(len(live))))
	}
	size := 0
	for i := start; i < len(live) && len(b.Recs) < limit; i++ {
		n := len(live[i].Data)
		if len(b.Recs) > 0 && maxBytes > 0 && size+n > maxBytes {
			b.Cut = true
			break
		}
		size += n
		b.Recs = append(b.Recs, live[i])
	}
	return nil
}

// Ack moves the sink's cursor to seq (records up to seq are done for it).
// Acking behind the cursor is a no-op.
func (m *Memory) Ack(sink string, seq uint64) error {
	_, err := m.AckFrom(sink, seq)
	return err
}

// AckFrom is Ack that also returns the cursor it moved from. Records at or
// before that position that the caller had read were evicted over the cap
// while in flight: they are counted as Evicted, not acked.
func (m *Memory) AckFrom(sink string, seq uint64) (prev uint64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sinks[sink]
	if !ok {
		return 0, ErrUnknownSink
	}
	prev = s.cursor
	if seq > m.lastSeq {
		seq = m.lastSeq
	}
	if seq <= s.cursor {
		return prev, nil
	}
	s.acked += seq - s.cursor
	s.cursor = seq
	m.collectLocked()
	return prev, nil
}

// Ready returns a channel that receives a value after records are appended.
// It returns nil for an unknown sink.
func (m *Memory) Ready(sink string) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.sinks[sink]; ok {
		return s.ready
	}
	return nil
}

// SinkStat returns one sink's accounting.
func (m *Memory) SinkStat(sink string) (SinkStat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sinks[sink]
	if !ok {
		return SinkStat{}, ErrUnknownSink
	}
	return m.sinkStatLocked(s), nil
}

// Sinks returns the names of the registered sinks, sorted.
func (m *Memory) Sinks() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.sinks))
}

// Stat describes the spool.
func (m *Memory) Stat() Stat {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := Stat{
		Records: uint64(len(m.recs) - m.head),
		Bytes:   m.bytes,
		LastSeq: m.lastSeq,
		Sinks:   make(map[string]SinkStat, len(m.sinks)),
	}
	if st.Records > 0 {
		st.FirstSeq = m.recs[m.head].Seq
	}
	for name, s := range m.sinks {
		st.Sinks[name] = m.sinkStatLocked(s)
	}
	return st
}

// Close releases the records. Later calls return ErrClosed.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.recs, m.head, m.bytes = nil, 0, 0
	return nil
}

func (m *Memory) sinkStatLocked(s *memSink) SinkStat {
	return SinkStat{
		Received: s.received,
		Acked:    s.acked,
		Evicted:  s.evicted,
		Pending:  m.lastSeq - s.cursor,
		Cursor:   s.cursor,
	}
}

// collectLocked deletes records that every sink has passed.
func (m *Memory) collectLocked() {
	min := m.lastSeq
	for _, s := range m.sinks {
		if s.cursor < min {
			min = s.cursor
		}
	}
	for m.head < len(m.recs) && m.recs[m.head].Seq <= min {
		m.popLocked()
	}
}

func (m *Memory) popLocked() {
	m.bytes -= int64(len(m.recs[m.head].Data))
	m.recs[m.head] = Record{}
	m.head++
	// Compact once the dead prefix dominates, so the backing array does not
	// grow without bound while the log slides forward.
	if m.head > 1024 && m.head*2 > len(m.recs) {
		n := copy(m.recs, m.recs[m.head:])
		clear(m.recs[n:])
		m.recs = m.recs[:n]
		m.head = 0
	}
}
