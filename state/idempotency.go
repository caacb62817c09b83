package state

// Idempotency keys: deliveries and requests seen, until they expire.

import (
	"bytes"
	"context"
	"encoding/binary"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Remember records an idempotency key until ttl passes. It returns true
// when the key was already recorded and has not expired: the caller has
// seen this request before and must not apply it again.
func (s *Store) Remember(ctx context.Context, key string, now time.Time, ttl time.Duration) (bool, error) {
	var seen bool
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var err error
		seen, err = remember(tx, key, now, ttl)
		return err
	})
	return seen, err
}

func remember(tx *bolt.Tx, key string, now time.Time, ttl time.Duration) (bool, error) {
	b := tx.Bucket(bIdem)
	if v := b.Get([]byte(key)); len(v) == 8 {
		if int64(binary.BigEndian.Uint64(v)) > now.UnixNano() {
			return true, nil
		}
		if err := tx.Bucket(bIdemExp).Delete(append(append([]byte{}, v...), key...)); err != nil {
			return false, err
		}
	}
	exp := u64(uint64(now.Add(ttl).UnixNano()))
	if err := b.Put([]byte(key), exp); err != nil {
		return false, err
	}
	return false, tx.Bucket(bIdemExp).Put(append(exp, key...), nil)
}

// SweepIdempotency deletes expired idempotency keys and returns how many.
func (s *Store) SweepIdempotency(ctx context.Context, now time.Time) (int, error) {
	var n int
	limit := u64(uint64(now.UnixNano()))
	err := s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		exp := tx.Bucket(bIdemExp)
		c := exp.Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k[:8], limit) <= 0; k, _ = c.First() {
			key := append([]byte{}, k[8:]...)
			if err := tx.Bucket(bIdem).Delete(key); err != nil {
				return err
			}
			if err := exp.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
