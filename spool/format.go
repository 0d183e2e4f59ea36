package spool

import (
	"encoding/binary"
	"hash/crc32"
)

// Bucket and key names of the disk layout (see the package doc's diagram).
var (
	bucketRecords = []byte("records")
	bucketCursors = []byte("cursors")
	bucketMeta    = []byte("meta")
	keyVersion    = []byte("version")
	keyLastSeq    = []byte("last_seq")
	keyGaps       = []byte("gaps")
	keyCounters   = []byte("counters")
)

// formatVersion is the layout in the package doc. A file with another
// version is treated as damaged: it is moved aside, not misread.
const formatVersion = 1

// recordOverhead is what one record costs in a bbolt leaf page besides its
// envelope bytes: the 8-byte key, the 4-byte checksum and bbolt's 16-byte
// leaf element header. The cap is measured in envelope bytes plus this, so
// that it tracks the pages the records occupy (see Spool.Append).
const recordOverhead = 8 + crcSize + 16

const crcSize = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// recordCost is what a record of n envelope bytes counts against the cap.
func recordCost(n int) int64 { return int64(n) + recordOverhead }

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func u64(v uint64) []byte { return seqKey(v) }

// decodeU64 reads an 8-byte big-endian value; ok is false for any other length.
func decodeU64(b []byte) (v uint64, ok bool) {
	if len(b) != 8 {
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

// encodeValue writes the stored form of data (checksum, then the bytes) into
// dst, which must be len(data)+crcSize long.
func encodeValue(dst, data []byte) {
	binary.BigEndian.PutUint32(dst, crc32.Checksum(data, castagnoli))
	copy(dst[crcSize:], data)
}

// decodeValue returns the envelope bytes of a stored value (aliasing v) and
// whether its checksum holds.
func decodeValue(v []byte) (data []byte, ok bool) {
	if len(v) < crcSize {
		return nil, false
	}
	data = v[crcSize:]
	return data, binary.BigEndian.Uint32(v) == crc32.Checksum(data, castagnoli)
}
