package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// CorruptError means a state file failed its consistency check: it is
// refused, never used and never overwritten.
type CorruptError struct {
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is damaged (%s); opsbot does not use a damaged state and changed nothing in it", e.Path, e.Reason)
}

func corrupt(path, format string, a ...any) error {
	return &CorruptError{Path: path, Reason: fmt.Sprintf(format, a...)}
}

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
	// A meta page: the 16-byte page header, then magic, version, page
	// size, flags (4 bytes each), the root bucket (16), the freelist page,
	// the high-water page id, the transaction id and the checksum (8 each).
	metaOff      = 16
	metaLen      = 64
	noFreelist   = ^uint64(0)
	fallbackPage = 4096
)

type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readMeta decodes and validates the meta page at off.
func readMeta(f *os.File, off int64) (boltMeta, error) {
	buf := make([]byte, metaOff+metaLen)
	if _, err := f.ReadAt(buf, off); err != nil {
		return boltMeta{}, fmt.Errorf("read meta page at %d: %w", off, err)
	}
	m := buf[metaOff:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return boltMeta{}, fmt.Errorf("meta page at %d is not a bbolt meta page", off)
	}
	if v := le.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, fmt.Errorf("meta page at %d has format version %d, want %d", off, v, boltVersion)
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if le.Uint64(m[56:]) != h.Sum64() {
		return boltMeta{}, fmt.Errorf("meta page at %d fails its checksum", off)
	}
	return boltMeta{pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, nil
}

// preflight checks what can be checked without mapping the file: that it
// is not empty, that both meta pages are intact, and that the file is as
// long as its pages say (a truncated file would crash the process with
// SIGBUS on first access). A missing file is fine: it is created.
func preflight(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return corrupt(path, "not a regular file")
	}
	size := st.Size()
	if size == 0 {
		return corrupt(path, "the file is empty (0 bytes): it was truncated or never written")
	}
	if size < 2*fallbackPage {
		return corrupt(path, "the file is %d bytes, shorter than its two meta pages", size)
	}
	m0, err0 := readMeta(f, 0)
	ps := int64(fallbackPage)
	if err0 == nil {
		ps = int64(m0.pageSize)
	}
	if ps < 512 || ps > 1<<20 || ps&(ps-1) != 0 {
		return corrupt(path, "meta page 0 has an impossible page size %d", ps)
	}
	m1, err1 := readMeta(f, ps)
	if err0 != nil {
		return corrupt(path, "%v", err0)
	}
	if err1 != nil {
		return corrupt(path, "%v", err1)
	}
	for _, m := range []boltMeta{m0, m1} {
		if int64(m.pageSize) != ps {
			return corrupt(path, "the meta pages disagree on the page size (%d, %d)", m0.pageSize, m1.pageSize)
		}
		if end := int64(m.pgid) * ps; size < end {
			return corrupt(path, "the file is %d bytes but its pages end at %d: it was truncated", size, end)
		}
		if m.root >= m.pgid || (m.freelist != noFreelist && m.freelist >= m.pgid) {
			return corrupt(path, "a meta page points past the end of the data (root %d, freelist %d, pages %d)", m.root, m.freelist, m.pgid)
		}
	}
	return nil
}

// valueKind says what a bucket's values must look like.
type valueKind int

const (
	anyValue valueKind = iota
	jsonValue
	emptyValue
)

// bucketValues lists the buckets whose values can be checked.
var bucketValues = map[string]valueKind{
	string(bTickets): jsonValue, string(bEvents): jsonValue, string(bJobs): jsonValue, string(bOutbox): jsonValue,
	string(bTimers): jsonValue, string(bAudit): jsonValue, string(bUsers): jsonValue, string(bCardRefs): jsonValue,
	string(bInbound): jsonValue, string(bClusters): jsonValue, string(bStores): jsonValue, string(bFreezes): jsonValue, string(bCalendar): jsonValue,
	string(bIdxOpen): emptyValue, string(bIdxFlow): emptyValue, string(bIdxReq): emptyValue, string(bIdxWait): emptyValue,
	string(bAuditTicket): emptyValue, string(bAuditUser): emptyValue, string(bRoleMembers): emptyValue,
	string(bJobsActive): emptyValue, string(bClusterIndex): emptyValue,
}

// check runs bbolt's page-level consistency check (every reachable page
// once, no page both used and free, keys in order) and then reads every
// value of the buckets whose shape is known.
func check(db *bolt.DB) error {
	return db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return corrupt(db.Path(), "%v", err)
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			kind := bucketValues[string(name)]
			return b.ForEach(func(k, v []byte) error {
				switch {
				case v == nil && b.Bucket(k) != nil:
					return nil // a nested bucket
				case kind == jsonValue && !json.Valid(v):
					return corrupt(db.Path(), "bucket %s holds a record that is not valid JSON (key %x)", name, clip(k))
				case kind == emptyValue && len(v) != 0:
					return corrupt(db.Path(), "index %s holds a value where none belongs (key %x)", name, clip(k))
				}
				return nil
			})
		})
	})
}

func clip(b []byte) []byte {
	if len(b) > 32 {
		return b[:32]
	}
	return b
}

// Summary describes a state file that passed its check.
type Summary struct {
	Path    string
	Bytes   int64
	Schema  int
	Tickets int
	Audit   int
}

// Verify checks a state file or backup without changing it: the same
// check Open runs, plus the schema version. It fails with a CorruptError
// when the file is damaged.
func Verify(path string) (Summary, error) {
	sum := Summary{Path: path}
	if _, err := os.Lstat(path); err != nil {
		return sum, fmt.Errorf("verify %s: %w", path, err)
	}
	if err := preflight(path); err != nil {
		return sum, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: openTimeout})
	if err != nil {
		return sum, openError(path, err)
	}
	defer db.Close()
	if err := check(db); err != nil {
		return sum, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		v, err := schemaVersion(tx)
		if err != nil {
			return corrupt(path, "unreadable schema version: %v", err)
		}
		sum.Schema = v
		if b := tx.Bucket(bTickets); b != nil {
			sum.Tickets = b.Stats().KeyN
		}
		if b := tx.Bucket(bAudit); b != nil {
			sum.Audit = b.Stats().KeyN
		}
		sum.Bytes = tx.Size()
		return nil
	})
	return sum, err
}

// copyFile copies src into a new file dst (which must not exist), synced.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := createExclusive(dst)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}
