package state

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"time"

	"opsbot/state/kv"
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
func recordDelivery(tx kv.Txn, d *delivery) error {
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
	err := s.db.View(ctx, func(tx kv.Txn) error {
		v, _, err := tx.Get(idemKey(key))
		seen = len(v) == 8 && int64(binary.BigEndian.Uint64(v)) > now.UnixNano()
		return err
	})
	return seen, err
}

// inboundMark is recorded input being handled under a context: the first
// ticket write made under it forgets the input in its own transaction,
// which saves the handler a write of its own.
type inboundMark struct {
	id   uint64
	done atomic.Bool
}

type inboundKey struct{}

// WithInbound marks ctx as the handling of recorded input id: the first
// ticket write under ctx (Create or Transition) deletes the record in the
// same transaction. Input whose handling writes no ticket is forgotten by
// DoneInbound as before; InboundForgotten says which happened.
func WithInbound(ctx context.Context, id uint64) context.Context {
	return context.WithValue(ctx, inboundKey{}, &inboundMark{id: id})
}

// InboundForgotten reports whether a write under ctx forgot its input.
func InboundForgotten(ctx context.Context) bool {
	m, _ := ctx.Value(inboundKey{}).(*inboundMark)
	return m != nil && m.done.Load()
}

func pendingInbound(ctx context.Context) *inboundMark {
	m, _ := ctx.Value(inboundKey{}).(*inboundMark)
	if m == nil || m.done.Load() {
		return nil
	}
	return m
}

// forgetInbound deletes the marked input record in tx.
func forgetInbound(tx kv.Txn, m *inboundMark) error {
	if m == nil {
		return nil
	}
	return tx.Delete(key(bInbound, u64(m.id)))
}
