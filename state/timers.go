package state

// Timers: reminders, escalations, expiries and polls, keyed by due time.

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

func timerKey(t Timer) []byte {
	k := u64(uint64(t.Due.UnixNano()))
	k = append(k, t.Ticket...)
	k = append(k, 0)
	return append(k, t.Kind...)
}

// DueTimers returns the timers due at now, earliest first.
func (s *Store) DueTimers(ctx context.Context, now time.Time) ([]Timer, error) {
	var out []Timer
	limit := u64(uint64(now.UnixNano()))
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bTimers).Cursor()
		for k, v := c.First(); k != nil && bytes.Compare(k[:8], limit) <= 0; k, v = c.Next() {
			var t Timer
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

// DeleteTimer removes a timer that no longer applies.
func (s *Store) DeleteTimer(ctx context.Context, t Timer) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bTimers).Delete(timerKey(t)) })
}
