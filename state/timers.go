package state

// Timers: reminders, escalations, expiries and polls, keyed by due time.

import (
	"bytes"
	"context"
	"encoding/json"
	"time"

	"opsbot/state/kv"
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
	prefix := key(bTimers, nil)
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, prefix, func(k string, v []byte) (bool, error) {
			if len(k) < len(prefix)+8 || bytes.Compare([]byte(k[len(prefix):len(prefix)+8]), limit) > 0 {
				return false, nil
			}
			var t Timer
			if err := json.Unmarshal(v, &t); err != nil {
				return false, err
			}
			out = append(out, t)
			return true, nil
		})
	})
	return out, err
}

// DeleteTimer removes a timer that no longer applies.
func (s *Store) DeleteTimer(ctx context.Context, t Timer) error {
	return s.db.Update(ctx, func(tx kv.Txn) error { return tx.Delete(key(bTimers, timerKey(t))) })
}
