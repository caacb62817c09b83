package state

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrDuplicate means a write was asked for by a delivery whose key was
// already recorded: a platform's retry, or input replayed after a restart
// whose first handling already committed.
var ErrDuplicate = errors.New("this delivery was applied before")

// delivery is one chat delivery's idempotency key, carried by the context
// of its handling.
type delivery struct {
	key  string
	now  time.Time
	ttl  time.Duration
	used atomic.Bool
}

type deliveryKey struct{}

// WithDelivery marks ctx as the handling of one delivery. The first ticket
// write made under it (Create or Transition) records key in its own
// transaction, or fails with ErrDuplicate when key was recorded before; so
// a crash between the write and forgetting the recorded input can neither
// lose the command (the key is not written without it) nor apply it twice.
func WithDelivery(ctx context.Context, key string, now time.Time, ttl time.Duration) context.Context {
	return context.WithValue(ctx, deliveryKey{}, &delivery{key: key, now: now, ttl: ttl})
}

// DeliveryRecorded reports whether a write under ctx recorded its key.
func DeliveryRecorded(ctx context.Context) bool {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	return d != nil && d.used.Load()
}

// pendingDelivery is the key the next write under ctx must record.
func pendingDelivery(ctx context.Context) *delivery {
	d, _ := ctx.Value(deliveryKey{}).(*delivery)
	if d == nil || d.used.Load() {
		return nil
	}
	return d
}

// recordDelivery writes d's key in tx, or fails with ErrDuplicate.
func recordDelivery(tx *bolt.Tx, d *delivery) error {
	if d == nil {
		return nil
	}
	seen, err := remember(tx, d.key, d.now, d.ttl)
	if err != nil {
		return err
	}
	if seen {
		return ErrDuplicate
	}
	return nil
}

// Seen reports, without writing, whether key is recorded and unexpired.
func (s *Store) Seen(ctx context.Context, key string, now time.Time) (bool, error) {
	var seen bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bIdem).Get([]byte(key))
		seen = len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now.UnixNano()
		return nil
	})
	return seen, err
}
