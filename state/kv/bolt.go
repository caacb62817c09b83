package kv

import (
	"bytes"
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

var boltBucket = []byte("kv")

// Bolt is the embedded backend: one bbolt file. bbolt has one writer at a
// time, so an Update never conflicts; the limits are checked all the same.
type Bolt struct{ db *bolt.DB }

// OpenBolt opens (or creates) the file.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(boltBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, err
	}
	return &Bolt{db: db}, nil
}

// Close closes the file.
func (b *Bolt) Close() error { return b.db.Close() }

// View implements DB.
func (b *Bolt) View(ctx context.Context, fn func(Txn) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(&boltTxn{b: tx.Bucket(boltBucket)}) })
}

// Update implements DB.
func (b *Bolt) Update(ctx context.Context, fn func(Txn) error) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		t := &boltTxn{b: tx.Bucket(boltBucket), buffered: buffered{write: true}}
		if err := fn(t); err != nil {
			return err
		}
		if len(t.w.order) > 0 && len(t.got)+t.ranged+len(t.w.order) > MaxOps {
			return ErrTooLarge
		}
		for _, k := range t.w.order {
			var err error
			if t.w.dels[k] {
				err = t.b.Delete([]byte(k))
			} else {
				err = t.b.Put([]byte(k), t.w.vals[k])
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

type boltTxn struct {
	buffered
	b *bolt.Bucket
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
	if t.got == nil {
		t.got = map[string]bool{}
	}
	t.got[key] = true
	v := t.b.Get([]byte(key))
	if v == nil {
		return nil, false, nil
	}
	return bytes.Clone(v), true, nil
}

func (t *boltTxn) Range(prefix, after string, limit int) ([]KV, error) {
	want := limit
	if want > 0 {
		want += len(t.w.order) // writes may hide some
	}
	c := t.b.Cursor()
	var out []KV
	k, v := c.Seek([]byte(max(prefix, after)))
	if after != "" && string(k) == after {
		k, v = c.Next()
	}
	for ; k != nil && bytes.HasPrefix(k, []byte(prefix)); k, v = c.Next() {
		if want > 0 && len(out) >= want {
			break
		}
		out = append(out, KV{Key: string(k), Value: bytes.Clone(v)})
	}
	t.ranged += 1 + len(out)
	return t.w.overlay(out, prefix, after, limit), nil
}
