package state

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

func putJob(tx *bolt.Tx, j Job) error {
	if err := putJSON(tx.Bucket(bJobs), []byte(j.ID), j); err != nil {
		return err
	}
	if j.Active() {
		return tx.Bucket(bJobsActive).Put([]byte(j.ID), nil)
	}
	return tx.Bucket(bJobsActive).Delete([]byte(j.ID))
}

// Job returns a job by id.
func (s *Store) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bJobs), []byte(id), &j)
		if err == nil && !ok {
			err = fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		return err
	})
	return j, err
}

// ActiveJobs returns the jobs that are queued or running, oldest due first.
func (s *Store) ActiveJobs(ctx context.Context) ([]Job, error) {
	var out []Job
	err := s.db.View(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		return tx.Bucket(bJobsActive).ForEach(func(k, _ []byte) error {
			var j Job
			if _, err := getJSON(jobs, k, &j); err != nil {
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].NextAt.Before(out[b].NextAt) })
	return out, err
}

// UpdateJob changes a job in its own transaction; fn sees the stored job.
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(j *Job) error) (Job, error) {
	var out Job
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var j Job
		ok, err := getJSON(tx.Bucket(bJobs), []byte(id), &j)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		if err := fn(&j); err != nil {
			return err
		}
		out = j
		return putJob(tx, j)
	})
	return out, err
}

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

func appendAudit(tx *bolt.Tx, a AuditEntry) error {
	b := tx.Bucket(bAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	a.Seq = seq
	a.User = NormName(a.User)
	if err := putJSON(b, u64(seq), a); err != nil {
		return err
	}
	if a.Ticket != "" {
		if err := tx.Bucket(bAuditTicket).Put(idxKey(a.Ticket, seq), nil); err != nil {
			return err
		}
	}
	if a.User != "" {
		return tx.Bucket(bAuditUser).Put(idxKey(a.User, seq), nil)
	}
	return nil
}

// Audit appends audit entries.
func (s *Store) Audit(ctx context.Context, entries ...AuditEntry) error {
	return s.db.Batch(func(tx *bolt.Tx) error {
		for _, a := range entries {
			if err := appendAudit(tx, a); err != nil {
				return err
			}
		}
		return nil
	})
}

// AuditQuery selects audit entries: by ticket, by user, or all when both
// are empty. Names match case-insensitively.
type AuditQuery struct {
	Ticket string
	User   string
}

// AuditLog returns a page of audit entries, newest first.
func (s *Store) AuditLog(ctx context.Context, q AuditQuery, offset, limit int) ([]AuditEntry, bool, error) {
	var out []AuditEntry
	more := false
	err := s.db.View(func(tx *bolt.Tx) error {
		entries := tx.Bucket(bAudit)
		var next func() (uint64, bool)
		switch {
		case q.Ticket != "":
			id := strings.ToUpper(q.Ticket)
			if n, ok := ParseID(q.Ticket); ok {
				id = FormatID(n)
			}
			next = mergeDesc(tx.Bucket(bAuditTicket), []string{id})
		case q.User != "":
			next = mergeDesc(tx.Bucket(bAuditUser), []string{NormName(q.User)})
		default:
			c := entries.Cursor()
			k, _ := c.Last()
			next = func() (uint64, bool) {
				if k == nil {
					return 0, false
				}
				n := binary.BigEndian.Uint64(k)
				k, _ = c.Prev()
				return n, true
			}
		}
		for i := 0; ; i++ {
			seq, ok := next()
			if !ok {
				return nil
			}
			if i < offset {
				continue
			}
			if len(out) == limit {
				more = true
				return nil
			}
			var a AuditEntry
			if _, err := getJSON(entries, u64(seq), &a); err != nil {
				return err
			}
			out = append(out, a)
		}
	})
	return out, more, err
}

// PruneAudit deletes up to max of the oldest audit entries written before
// before, with their index entries, in one short transaction, and returns
// how many it deleted. Callers loop in small batches so that retention
// never holds the writer long enough to delay a transition.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, max int) (int, error) {
	var n int
	err := s.db.Update(func(tx *bolt.Tx) error {
		n = 0
		entries := tx.Bucket(bAudit)
		c := entries.Cursor()
		for k, v := c.First(); k != nil && n < max; k, v = c.First() {
			var a AuditEntry
			if err := json.Unmarshal(v, &a); err != nil {
				return fmt.Errorf("audit entry %x: %w", k, err)
			}
			if !a.At.Before(before) {
				return nil
			}
			seq := binary.BigEndian.Uint64(k)
			if a.Ticket != "" {
				if err := tx.Bucket(bAuditTicket).Delete(idxKey(a.Ticket, seq)); err != nil {
					return err
				}
			}
			if a.User != "" {
				if err := tx.Bucket(bAuditUser).Delete(idxKey(a.User, seq)); err != nil {
					return err
				}
			}
			if err := c.Delete(); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
