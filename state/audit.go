package state

// The audit log: entries by sequence, indexed by ticket and by user,
// pruned by retention.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"opsbot/state/kv"
)

func (s *Store) appendAudit(ctx context.Context, tx kv.Txn, a AuditEntry) error {
	a.Seq, a.User = 0, NormName(a.User)
	raw, err := json.Marshal(a)
	if err != nil {
		return err
	}
	return s.putAudit(ctx, tx, a.Ticket, a.User, raw)
}

// putAudit appends an entry encoded with a zero sequence number, and
// indexes it by ticket and user.
func (s *Store) putAudit(ctx context.Context, tx kv.Txn, ticket, user string, raw []byte) error {
	seq, err := s.next(ctx, tx, "audit")
	if err != nil {
		return err
	}
	v, err := seqJSON(raw, "seq", seq)
	if err != nil {
		return err
	}
	if err := tx.Put(key(bAudit, u64(seq)), v); err != nil {
		return err
	}
	if ticket != "" {
		if err := tx.Put(key(bAuditTicket, idxKey(ticket, seq)), nil); err != nil {
			return err
		}
	}
	if user != "" {
		return tx.Put(key(bAuditUser, idxKey(user, seq)), nil)
	}
	return nil
}

// Audit appends audit entries.
func (s *Store) Audit(ctx context.Context, entries ...AuditEntry) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		for _, a := range entries {
			if err := s.appendAudit(ctx, tx, a); err != nil {
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
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out, more = nil, false
		var next func() (uint64, bool, error)
		switch {
		case q.Ticket != "":
			id := strings.ToUpper(q.Ticket)
			if n, ok := ParseID(q.Ticket); ok {
				id = FormatID(n)
			}
			next = mergeDesc(tx, bAuditTicket, []string{id})
		case q.User != "":
			next = mergeDesc(tx, bAuditUser, []string{NormName(q.User)})
		default:
			next = descNumbers(tx, bAudit)
		}
		for i := 0; ; i++ {
			seq, ok, err := next()
			if err != nil || !ok {
				return err
			}
			if i < offset {
				continue
			}
			if len(out) == limit {
				more = true
				return nil
			}
			var a AuditEntry
			if _, err := getJSON(tx, key(bAudit, u64(seq)), &a); err != nil {
				return err
			}
			out = append(out, a)
		}
	})
	return out, more, err
}

// PruneBatch is the most entries PruneAudit deletes at a time: each is
// read and takes three deletes, and a transaction stays inside kv.MaxOps.
const PruneBatch = kv.MaxOps / 5

// PruneAudit deletes up to max of the oldest audit entries written before
// before, with their index entries, in one short transaction, and returns
// how many it deleted. Callers loop in small batches so that retention
// never holds the writer long enough to delay a transition.
func (s *Store) PruneAudit(ctx context.Context, before time.Time, max int) (int, error) {
	max = min(max, PruneBatch)
	var n int
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		n = 0
		olds, err := tx.Range(key(bAudit, nil), "", max)
		if err != nil {
			return err
		}
		for _, x := range olds {
			var a AuditEntry
			if err := json.Unmarshal(x.Value, &a); err != nil {
				return fmt.Errorf("audit entry %x: %w", x.Key, err)
			}
			if !a.At.Before(before) {
				return nil
			}
			seq := a.Seq
			if a.Ticket != "" {
				if err := tx.Delete(key(bAuditTicket, idxKey(a.Ticket, seq))); err != nil {
					return err
				}
			}
			if a.User != "" {
				if err := tx.Delete(key(bAuditUser, idxKey(a.User, seq))); err != nil {
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
	return n, err
}
