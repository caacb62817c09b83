package state

// The notification outbox: entries written with their transition,
// delivered and retried with backoff, never dropped.

import (
	"context"
	"encoding/json"
	"slices"
	"sort"
	"time"

	"opsbot/state/kv"
)

func (s *Store) enqueue(ctx context.Context, tx kv.Txn, n Notification) (uint64, error) {
	id, err := s.next(ctx, tx, "outbox")
	if err != nil {
		return 0, err
	}
	n.ID = id
	return id, putJSON(tx, key(bOutbox, u64(id)), n)
}

// Enqueue adds a notification to the outbox.
func (s *Store) Enqueue(ctx context.Context, n Notification) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		_, err := s.enqueue(ctx, tx, n)
		return err
	})
}

// Pending returns up to limit outbox entries due at now, oldest first.
// One ticket's entries come in the order of the ticket's versions: with
// replicas, numbers from two replicas' blocks need not be.
func (s *Store) Pending(ctx context.Context, now time.Time, limit int) ([]Notification, error) {
	var out []Notification
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, key(bOutbox, nil), func(_ string, v []byte) (bool, error) {
			var n Notification
			if err := json.Unmarshal(v, &n); err != nil {
				return false, err
			}
			if !n.NextAt.After(now) {
				out = append(out, n)
			}
			return len(out) < limit, nil
		})
	})
	byTicketVersion(out)
	return out, err
}

// byTicketVersion orders each ticket's notifications by the ticket's
// version, in the places they hold: other entries keep their order.
func byTicketVersion(ns []Notification) {
	slots := map[string][]int{}
	for i, n := range ns {
		if n.Ticket != "" {
			slots[n.Ticket] = append(slots[n.Ticket], i)
		}
	}
	for _, idx := range slots {
		if len(idx) < 2 {
			continue
		}
		group := make([]Notification, len(idx))
		for j, i := range idx {
			group[j] = ns[i]
		}
		sort.SliceStable(group, func(a, b int) bool { return group[a].Version < group[b].Version })
		for j, i := range idx {
			ns[i] = group[j]
		}
	}
}

// OldestUndelivered is when the oldest undelivered notification was
// written (zero when the outbox is empty).
func (s *Store) OldestUndelivered(ctx context.Context) (time.Time, error) {
	var oldest time.Time
	err := s.db.View(ctx, func(tx kv.Txn) error {
		oldest = time.Time{}
		return each(tx, key(bOutbox, nil), func(_ string, v []byte) (bool, error) {
			var n struct {
				Created time.Time `json:"created"`
			}
			if err := json.Unmarshal(v, &n); err != nil {
				return false, err
			}
			if oldest.IsZero() || n.Created.Before(oldest) {
				oldest = n.Created
			}
			return true, nil
		})
	})
	return oldest, err
}

// OutboxLen counts the undelivered notifications.
func (s *Store) OutboxLen(ctx context.Context) (int, error) {
	var n int
	err := s.db.View(ctx, func(tx kv.Txn) error {
		n = 0
		return each(tx, key(bOutbox, nil), func(string, []byte) (bool, error) {
			n++
			return true, nil
		})
	})
	return n, err
}

// Delivered removes notifications from the outbox.
func (s *Store) Delivered(ctx context.Context, ids ...uint64) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), kv.MaxOps)]
		ids = ids[len(chunk):]
		if err := s.db.Update(ctx, func(tx kv.Txn) error {
			for _, id := range chunk {
				if err := tx.Delete(key(bOutbox, u64(id))); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// Deferred records a failed delivery: when to try again, why, and the
// platforms that already have it, so the retry does not send it twice.
// Reached records the platforms a notification reached before a
// shutdown cut its delivery short: not a failed attempt, so neither its
// attempts nor its next try change.
func (s *Store) Reached(ctx context.Context, id uint64, reached []string) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		var n Notification
		ok, err := getJSON(tx, key(bOutbox, u64(id)), &n)
		if err != nil || !ok {
			return err
		}
		n.Reached = addReached(n.Reached, reached)
		return putJSON(tx, key(bOutbox, u64(id)), n)
	})
}

func addReached(have, more []string) []string {
	for _, p := range more {
		if !slices.Contains(have, p) {
			have = append(have, p)
		}
	}
	return have
}

func (s *Store) Deferred(ctx context.Context, id uint64, next time.Time, reason string, reached []string) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		var n Notification
		ok, err := getJSON(tx, key(bOutbox, u64(id)), &n)
		if err != nil || !ok {
			return err
		}
		n.Attempts++
		n.NextAt = next
		n.LastError = reason
		n.Reached = addReached(n.Reached, reached)
		return putJSON(tx, key(bOutbox, u64(id)), n)
	})
}
