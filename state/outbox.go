package state

// The notification outbox: entries written with their transition,
// delivered and retried with backoff, never dropped.

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

func enqueue(tx *bolt.Tx, n Notification) (uint64, error) {
	b := tx.Bucket(bOutbox)
	id, err := b.NextSequence()
	if err != nil {
		return 0, err
	}
	n.ID = id
	return id, putJSON(b, u64(id), n)
}

// Enqueue adds a notification to the outbox.
func (s *Store) Enqueue(ctx context.Context, n Notification) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		_, err := enqueue(tx, n)
		return err
	})
}

// Pending returns up to limit outbox entries due at now, oldest first.
func (s *Store) Pending(ctx context.Context, now time.Time, limit int) ([]Notification, error) {
	var out []Notification
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bOutbox).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit; k, v = c.Next() {
			var n Notification
			if err := json.Unmarshal(v, &n); err != nil {
				return err
			}
			if !n.NextAt.After(now) {
				out = append(out, n)
			}
		}
		return nil
	})
	return out, err
}

// OutboxLen counts the undelivered notifications.
func (s *Store) OutboxLen(ctx context.Context) (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bOutbox).Stats().KeyN
		return nil
	})
	return n, err
}

// Delivered removes notifications from the outbox.
func (s *Store) Delivered(ctx context.Context, ids ...uint64) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		for _, id := range ids {
			if err := tx.Bucket(bOutbox).Delete(u64(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// Deferred records a failed delivery: when to try again, why, and the
// platforms that already have it, so the retry does not send it twice.
func (s *Store) Deferred(ctx context.Context, id uint64, next time.Time, reason string, reached []string) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bOutbox)
		var n Notification
		ok, err := getJSON(b, u64(id), &n)
		if err != nil || !ok {
			return err
		}
		n.Attempts++
		n.NextAt = next
		n.LastError = reason
		for _, p := range reached {
			if !slices.Contains(n.Reached, p) {
				n.Reached = append(n.Reached, p)
			}
		}
		return putJSON(b, u64(id), n)
	})
}
