package state

// Feeds read the audit log in order from a cursor (webhooks, the audit
// stream): the cursor and the entries given up on (dead letters) are
// kept here, so a restart resumes where delivery stopped.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"time"

	"opsbot/state/kv"
)

var bDeadLetters = []byte("dead_letters") // feed \x00 u64(seq) -> DeadLetter

// AuditAfter returns up to limit audit entries whose sequence is above
// after, oldest first.
func (s *Store) AuditAfter(ctx context.Context, after uint64, limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = nil
		prefix := key(bAudit, nil)
		xs, err := tx.Range(prefix, prefix+string(u64(after)), limit)
		if err != nil {
			return err
		}
		for _, x := range xs {
			var a AuditEntry
			if err := json.Unmarshal(x.Value, &a); err != nil {
				return err
			}
			a.Seq = binary.BigEndian.Uint64([]byte(x.Key[len(prefix):]))
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// LastAuditSeq is the sequence of the newest audit entry (0: none).
func (s *Store) LastAuditSeq(ctx context.Context) (uint64, error) {
	var n uint64
	err := s.db.View(ctx, func(tx kv.Txn) error {
		prefix := key(bAudit, nil)
		xs, err := tx.RangeRev(prefix, "", 1)
		if err != nil || len(xs) == 0 {
			n = 0
			return err
		}
		n = binary.BigEndian.Uint64([]byte(xs[0].Key[len(prefix):]))
		return nil
	})
	return n, err
}

func cursorKey(feed string) string { return metaKey("cursor." + feed) }

// Cursor is the last audit sequence a feed has delivered (0: none).
func (s *Store) Cursor(ctx context.Context, feed string) (uint64, bool, error) {
	var n uint64
	var ok bool
	err := s.db.View(ctx, func(tx kv.Txn) error {
		raw, found, err := tx.Get(cursorKey(feed))
		if err != nil || !found {
			ok = false
			return err
		}
		ok = true
		n, err = strconv.ParseUint(string(raw), 10, 64)
		return err
	})
	return n, ok, err
}

// SetCursor records that a feed delivered everything up to seq; dead,
// when given, is kept as given up on in the same transaction.
func (s *Store) SetCursor(ctx context.Context, feed string, seq uint64, dead ...DeadLetter) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		if err := putDead(tx, feed, dead); err != nil {
			return err
		}
		return tx.Put(cursorKey(feed), []byte(strconv.FormatUint(seq, 10)))
	})
}

// StartCursor gives a feed without a cursor one at the newest entry (a
// new subscription hears what happens from now on); a feed that has one
// keeps it.
func (s *Store) StartCursor(ctx context.Context, feed string) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		if _, ok, err := tx.Get(cursorKey(feed)); err != nil || ok {
			return err
		}
		prefix := key(bAudit, nil)
		xs, err := tx.RangeRev(prefix, "", 1)
		if err != nil {
			return err
		}
		var n uint64
		if len(xs) > 0 {
			n = binary.BigEndian.Uint64([]byte(xs[0].Key[len(prefix):]))
		}
		return tx.Put(cursorKey(feed), []byte(strconv.FormatUint(n, 10)))
	})
}

// AddDeadLetters keeps entries a feed gave up on again (a retry of dead
// letters that failed once more).
func (s *Store) AddDeadLetters(ctx context.Context, feed string, dead ...DeadLetter) error {
	return s.db.Update(ctx, func(tx kv.Txn) error { return putDead(tx, feed, dead) })
}

func putDead(tx kv.Txn, feed string, dead []DeadLetter) error {
	for _, d := range dead {
		raw, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := tx.Put(key(bDeadLetters, append([]byte(feed+"\x00"), u64(d.Seq)...)), raw); err != nil {
			return err
		}
	}
	return nil
}

// DeadLetter is an entry a feed gave up delivering.
type DeadLetter struct {
	Seq      uint64    `json:"seq"`
	EventID  string    `json:"event_id"`
	Ticket   string    `json:"ticket,omitempty"`
	What     string    `json:"what"`
	Error    string    `json:"error"`
	Attempts int       `json:"attempts"`
	At       time.Time `json:"at"`
}

// DeadLetters lists a feed's dead letters, newest first, at most limit,
// and how many there are in all.
func (s *Store) DeadLetters(ctx context.Context, feed string, limit int) ([]DeadLetter, int, error) {
	var out []DeadLetter
	total := 0
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out, total = nil, 0
		prefix := key(bDeadLetters, []byte(feed+"\x00"))
		before := ""
		for {
			xs, err := tx.RangeRev(prefix, before, 256)
			if err != nil {
				return err
			}
			for _, x := range xs {
				total++
				if len(out) < limit {
					var d DeadLetter
					if err := json.Unmarshal(x.Value, &d); err != nil {
						return err
					}
					out = append(out, d)
				}
				before = x.Key
			}
			if len(xs) < 256 {
				return nil
			}
		}
	})
	return out, total, err
}

// RequeueDeadLetters deletes a feed's dead letters and returns them,
// oldest first, for delivery again.
func (s *Store) RequeueDeadLetters(ctx context.Context, feed string) ([]DeadLetter, error) {
	var out []DeadLetter
	prefix := key(bDeadLetters, []byte(feed+"\x00"))
	for {
		n := 0
		err := s.db.Update(ctx, func(tx kv.Txn) error {
			n = 0
			xs, err := tx.Range(prefix, "", kv.MaxOps/2)
			if err != nil {
				return err
			}
			for _, x := range xs {
				var d DeadLetter
				if err := json.Unmarshal(x.Value, &d); err != nil {
					return err
				}
				if err := tx.Delete(x.Key); err != nil {
					return err
				}
				out = append(out, d)
				n++
			}
			return nil
		})
		if err != nil || n < kv.MaxOps/2 {
			return out, err
		}
	}
}
