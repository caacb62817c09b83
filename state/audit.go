package state

// The audit log: entries by sequence, indexed by ticket and by user,
// pruned by retention.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

func appendAudit(tx *bolt.Tx, a AuditEntry) error {
	a.Seq, a.User = 0, NormName(a.User)
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return putAudit(tx, a.Ticket, a.User, raw)
}

// putAudit appends an entry encoded with a zero sequence number, and
// indexes it by ticket and user.
func putAudit(tx *bolt.Tx, ticket, user string, raw []byte) error {
	b := tx.Bucket(bAudit)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	v, err := seqJSON(raw, "seq", seq)
	if err != nil {
		return err
	}
	if err := b.Put(u64(seq), v); err != nil {
		return err
	}
	if ticket != "" {
		if err := tx.Bucket(bAuditTicket).Put(idxKey(ticket, seq), nil); err != nil {
			return err
		}
	}
	if user != "" {
		return tx.Bucket(bAuditUser).Put(idxKey(user, seq), nil)
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
			next = descNumbers(entries)
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
