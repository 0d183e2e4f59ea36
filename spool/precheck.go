package spool

import (
	"encoding/binary"
	"hash/fnv"
	"io"
	"os"
)

// precheck validates the structure of the bbolt file f (of size bytes) by
// reading it, not mapping it, before bbolt maps it: the newest valid meta
// page, the freelist page, and every page of the tree: page ids, types,
// element offsets and key and value bounds, child page numbers, nested
// buckets (inline ones too), with each page reached once.
//
// bbolt trusts all of these. A damaged file makes it read outside its
// mapping: a fault, which debug.SetPanicOnFault turns into a panic only in
// the goroutine that set it, and tx.Check runs in a goroutine of its own.
// After precheck, every page bbolt and tx.Check will touch is known to lie
// inside the file, and no cycle can send them round forever.
func precheck(f *os.File, size int64) error {
	var best *boltMeta
	if m, ok := readMeta(f, 0); ok {
		best = &m
	}
	// Meta 1 sits one page in: at the page size meta 0 gives, else at each
	// size bbolt itself would try.
	for i := 0; i <= 14; i++ {
		ps := int64(1024) << i
		if best != nil {
			ps = int64(best.pageSize)
		}
		if m, ok := readMeta(f, ps); ok && int64(m.pageSize) == ps && (best == nil || m.txid > best.txid) {
			best = &m
		}
		if best != nil {
			break
		}
	}
	if best == nil {
		return corruptf("no valid meta page")
	}
	pc := pageChecker{f: f, ps: uint64(best.pageSize), hwm: best.pgid}
	if best.pgid > uint64(size)/pc.ps {
		return corruptf("file is %d bytes but its meta page says %d pages of %d: truncated", size, best.pgid, pc.ps)
	}
	pc.seen = make([]bool, best.pgid)
	pc.seen[0], pc.seen[1] = true, true
	if best.freelist != noFreelist {
		p, err := pc.page(best.freelist)
		if err != nil {
			return err
		}
		ne := binary.NativeEndian
		count := uint64(ne.Uint16(p[10:]))
		if count == 0xFFFF && len(p) >= 24 {
			count = ne.Uint64(p[16:]) + 1
		}
		if ne.Uint16(p[8:]) != flagFreelist || count > uint64(len(p)-pageHeader)/8 {
			return corruptf("freelist page %d is damaged", best.freelist)
		}
	}
	return pc.tree(best.root, 0)
}

const (
	pageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	elemSize     = 16 // branch {pos u32, ksize u32, pgid u64}; leaf {flags u32, pos u32, ksize u32, vsize u32}
	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagFreelist = 0x10
	flagBucket   = 0x01 // leaf element flag: the value is a nested bucket
	inBucketSize = 16   // a bucket value: root pgid u64, sequence u64, then the inline page if root is 0
	maxDepth     = 64
	noFreelist   = 1<<64 - 1
)

type pageChecker struct {
	f    *os.File
	ps   uint64
	hwm  uint64
	seen []bool
}

// page reads page id with its overflow pages, checking that it lies below
// the high-water mark, carries its own id, and is reached for the first time.
func (pc *pageChecker) page(id uint64) ([]byte, error) {
	if id < 2 || id >= pc.hwm {
		return nil, corruptf("page %d is outside the file (%d pages)", id, pc.hwm)
	}
	var hdr [pageHeader]byte
	if _, err := pc.f.ReadAt(hdr[:], int64(id*pc.ps)); err != nil {
		return nil, corruptf("page %d: %v", id, err)
	}
	ne := binary.NativeEndian
	overflow := uint64(ne.Uint32(hdr[12:]))
	if ne.Uint64(hdr[:]) != id || overflow >= pc.hwm-id {
		return nil, corruptf("page %d: header says id %d, %d overflow pages", id, ne.Uint64(hdr[:]), overflow)
	}
	for i := id; i <= id+overflow; i++ {
		if pc.seen[i] {
			return nil, corruptf("page %d is reached twice", i)
		}
		pc.seen[i] = true
	}
	p := make([]byte, (overflow+1)*pc.ps)
	if _, err := pc.f.ReadAt(p, int64(id*pc.ps)); err != nil && err != io.EOF {
		return nil, corruptf("page %d: %v", id, err)
	}
	return p, nil
}

// tree checks the subtree of a bucket rooted at page id.
func (pc *pageChecker) tree(id uint64, depth int) error {
	if depth > maxDepth {
		return corruptf("tree deeper than %d at page %d", maxDepth, id)
	}
	p, err := pc.page(id)
	if err != nil {
		return err
	}
	return pc.nodes(p, id, depth)
}

// nodes checks the elements of page p (a page of the file, or an inline
// bucket's page inside a value).
func (pc *pageChecker) nodes(p []byte, id uint64, depth int) error {
	ne := binary.NativeEndian
	flags, count := ne.Uint16(p[8:]), uint64(ne.Uint16(p[10:]))
	if pageHeader+count*elemSize > uint64(len(p)) {
		return corruptf("page %d: %d elements do not fit", id, count)
	}
	for i := range count {
		e := pageHeader + i*elemSize
		switch flags {
		case flagBranch:
			pos, ksize, child := uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:])), ne.Uint64(p[e+8:])
			if e+pos+ksize > uint64(len(p)) {
				return corruptf("page %d: branch key %d out of the page", id, i)
			}
			if err := pc.tree(child, depth+1); err != nil {
				return err
			}
		case flagLeaf:
			eflags, pos, ksize, vsize := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:])), uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
			start := e + pos + ksize
			if start+vsize > uint64(len(p)) {
				return corruptf("page %d: leaf element %d out of the page", id, i)
			}
			if eflags&flagBucket == 0 {
				continue
			}
			v := p[start : start+vsize]
			if len(v) < inBucketSize {
				return corruptf("page %d: bucket value %d too short", id, i)
			}
			if root := ne.Uint64(v); root != 0 {
				if err := pc.tree(root, depth+1); err != nil {
					return err
				}
			} else if len(v) < inBucketSize+pageHeader {
				return corruptf("page %d: inline bucket %d too short", id, i)
			} else if err := pc.nodes(v[inBucketSize:], id, depth+1); err != nil {
				return err
			}
		default:
			return corruptf("page %d: type %#x where a branch or leaf page belongs", id, flags)
		}
	}
	if count == 0 && flags != flagLeaf && flags != flagBranch {
		return corruptf("page %d: type %#x where a branch or leaf page belongs", id, flags)
	}
	return nil
}

// boltMeta is the part of bbolt's meta page precheck needs.
type boltMeta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
}

// readMeta reads the meta page at off: a 16-byte page header, then magic,
// version, page size, flags, root bucket {pgid, sequence}, freelist, pgid,
// txid and an FNV-64a checksum of the fields before it, in native byte
// order.
func readMeta(f *os.File, off int64) (boltMeta, bool) {
	var b [pageHeader + 64]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return boltMeta{}, false
	}
	m := b[pageHeader:]
	ne := binary.NativeEndian
	h := fnv.New64a()
	_, _ = h.Write(m[:56])
	if ne.Uint32(m[0:]) != 0xED0CDAED || ne.Uint32(m[4:]) != 2 || ne.Uint64(m[56:]) != h.Sum64() {
		return boltMeta{}, false
	}
	ps := ne.Uint32(m[8:])
	if ps < 1024 || ps > 1<<24 || ps&(ps-1) != 0 {
		return boltMeta{}, false
	}
	return boltMeta{pageSize: ps, root: ne.Uint64(m[16:]), freelist: ne.Uint64(m[32:]), pgid: ne.Uint64(m[40:]), txid: ne.Uint64(m[48:])}, true
}
