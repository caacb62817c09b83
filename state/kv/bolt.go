package kv

import (
	"bytes"
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded backend: one bbolt file, a bucket per table. bbolt
// has one writer at a time, so an Update never conflicts; the limits are
// checked all the same. Writers that come together share one commit
// (bbolt's Batch).
type Bolt struct {
	db  *bolt.DB
	own bool
}

// OpenBolt opens (or creates) a file of its own.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	return &Bolt{db: db, own: true}, nil
}

// NewBolt uses a file its caller opened and closes.
func NewBolt(db *bolt.DB) *Bolt { return &Bolt{db: db} }

// Close closes the file if OpenBolt opened it.
func (b *Bolt) Close() error {
	if b.own {
		return b.db.Close()
	}
	return nil
}

// View implements DB.
func (b *Bolt) View(ctx context.Context, fn func(Txn) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(&boltTxn{tx: tx}) })
}

// Update implements DB.
func (b *Bolt) Update(ctx context.Context, fn func(Txn) error) error {
	return b.db.Batch(func(tx *bolt.Tx) error {
		t := &boltTxn{tx: tx, buffered: buffered{write: true}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.w.order) > 0 && len(t.got)+t.ranged+len(t.w.order) > MaxOps {
			return ErrTooLarge
		}
		for _, k := range t.w.order {
			table, rest, _ := Table(k) // checked by Put and Delete
			bk := tx.Bucket([]byte(table))
			if t.w.dels[k] {
				if bk == nil {
					continue
				}
				if err := bk.Delete([]byte(rest)); err != nil {
					return err
				}
				continue
			}
			if bk == nil {
				var err error
				if bk, err = tx.CreateBucket([]byte(table)); err != nil {
					return err
				}
			}
			if err := bk.Put([]byte(rest), t.w.vals[k]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Export implements DB: bucket by bucket, in name order.
func (b *Bolt) Export(ctx context.Context, fn func(key string, value []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			return bk.ForEach(func(k, v []byte) error {
				if v == nil && bk.Bucket(k) != nil {
					return nil // a nested bucket: not a table's key
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				return fn(string(name)+"/"+string(k), v)
			})
		})
	})
}

type boltTxn struct {
	buffered
	tx *bolt.Tx
	// The checks an optimistic backend makes at commit, counted the same
	// way here so the limits hold alike: each key read, and each range
	// with each key it returned.
	got    map[string]bool
	ranged int
}

func (t *boltTxn) Get(key string) ([]byte, bool, error) {
	if v, ok, found := t.w.get(key); found {
		return v, ok, nil
	}
	table, rest, err := Table(key)
	if err != nil {
		return nil, false, err
	}
	if t.got == nil {
		t.got = map[string]bool{}
	}
	t.got[key] = true
	bk := t.tx.Bucket([]byte(table))
	if bk == nil {
		return nil, false, nil
	}
	v := bk.Get([]byte(rest))
	if v == nil {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

func (t *boltTxn) Range(prefix, after string, limit int) ([]KV, error) {
	return t.scan(prefix, after, limit, false)
}

func (t *boltTxn) RangeRev(prefix, before string, limit int) ([]KV, error) {
	return t.scan(prefix, before, limit, true)
}

// scan reads the keys with prefix after bound (forward) or before it
// (rev; "" is no bound), in order, then lays the transaction's writes
// over them.
func (t *boltTxn) scan(prefix, bound string, limit int, rev bool) ([]KV, error) {
	table, pre, err := Table(prefix)
	if err != nil {
		return nil, err
	}
	want := limit
	if want > 0 {
		want += len(t.w.order) // writes may hide some
	}
	var out []KV
	if bk := t.tx.Bucket([]byte(table)); bk != nil {
		head := table + "/"
		var b []byte
		if bound != "" {
			_, r, err := Table(bound)
			if err != nil {
				return nil, err
			}
			b = []byte(r)
		}
		c := bk.Cursor()
		var k, v []byte
		var next func() ([]byte, []byte)
		if !rev {
			next = c.Next
			k, v = c.Seek([]byte(max(pre, string(b))))
			if b != nil && bytes.Equal(k, b) {
				k, v = c.Next()
			}
		} else {
			next = c.Prev
			end := []byte(prefixEnd(pre))
			if b != nil && (len(end) == 0 || bytes.Compare(b, end) < 0) {
				end = b
			}
			if len(end) == 0 {
				k, v = c.Last()
			} else if k, _ = c.Seek(end); k == nil {
				k, v = c.Last()
			} else {
				k, v = c.Prev()
			}
		}
		for ; k != nil && bytes.HasPrefix(k, []byte(pre)); k, v = next() {
			if want > 0 && len(out) >= want {
				break
			}
			if v == nil && bk.Bucket(k) != nil {
				continue
			}
			out = append(out, KV{Key: head + string(k), Value: bytes.Clone(v)})
		}
	}
	t.ranged += 1 + len(out)
	if rev {
		return t.w.overlayRev(out, prefix, bound, limit), nil
	}
	return t.w.overlay(out, prefix, bound, limit), nil
}
