package state

// Idempotency keys: deliveries and requests seen, until they expire.

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"time"

	"opsbot/state/kv"
)

// Remember records an idempotency key until ttl passes. It returns true
// when the key was already recorded and has not expired: the caller has
// seen this request before and must not apply it again. With replicas the
// key is one record in etcd: of two replicas given the same request, one
// records it and the other sees it.
func (s *Store) Remember(ctx context.Context, key string, now time.Time, ttl time.Duration) (bool, error) {
	var seen bool
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		var err error
		seen, err = remember(tx, key, now, ttl)
		return err
	})
	return seen, err
}

func idemKey(k string) string { return key(bIdem, []byte(k)) }

func remember(tx kv.Txn, k string, now time.Time, ttl time.Duration) (bool, error) {
	v, _, err := tx.Get(idemKey(k))
	if err != nil {
		return false, err
	}
	if len(v) == 8 {
		if int64(binary.BigEndian.Uint64(v)) > now.UnixNano() {
			return true, nil
		}
		if err := tx.Delete(key(bIdemExp, append(v, k...))); err != nil {
			return false, err
		}
	}
	exp := u64(uint64(now.Add(ttl).UnixNano()))
	if err := tx.Put(idemKey(k), exp); err != nil {
		return false, err
	}
	return false, tx.Put(key(bIdemExp, append(exp, k...)), nil)
}

// SweepIdempotency deletes expired idempotency keys and returns how many,
// a bounded number per transaction.
func (s *Store) SweepIdempotency(ctx context.Context, now time.Time) (int, error) {
	total := 0
	limit := u64(uint64(now.UnixNano()))
	prefix := key(bIdemExp, nil)
	for {
		n := 0
		err := s.db.Update(ctx, func(tx kv.Txn) error {
			n = 0
			// Each is read and takes two deletes.
			olds, err := tx.Range(prefix, "", kv.MaxOps/4)
			if err != nil {
				return err
			}
			for _, x := range olds {
				k := x.Key[len(prefix):]
				if len(k) < 8 || bytes.Compare([]byte(k[:8]), limit) > 0 {
					return nil
				}
				if err := tx.Delete(idemKey(k[8:])); err != nil {
					return err
				}
				if strings.HasPrefix(k[8:], "api:") {
					if err := tx.Delete(key(bAPIIdem, []byte(k[8:]))); err != nil {
						return err
					}
				}
				if err := tx.Delete(x.Key); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		total += n
		if err != nil || n < kv.MaxOps/4 {
			return total, err
		}
	}
}
