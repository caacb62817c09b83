package state

import (
	"context"
	"encoding/binary"
	"fmt"

	"opsbot/state/kv"
)

// bChatLog keeps the local chat's history, so the page shows it again
// after a restart: key box NUL id (8 bytes, big endian), value the sealed
// entry. A box is a person or a team channel ("#infra"). The transport
// bounds each box; the store keeps what it is given.
var bChatLog = []byte("chat_log")

// ChatRecord is one kept chat entry: its box, its id (its order in the
// box), its revision (a redrawn card gets a higher one) and the entry as
// the transport encodes it.
type ChatRecord struct {
	Box  string
	ID   int64
	Rev  int64
	Data []byte
}

func chatKey(box string, id int64) []byte {
	k := make([]byte, 0, len(box)+9)
	k = append(append(k, box...), 0)
	return binary.BigEndian.AppendUint64(k, uint64(id))
}

func chatAD(key []byte) []byte { return append([]byte("chat/"), key...) }

// chatValue is a stored entry: the revision in clear (so a late write of
// an older revision is skipped without opening it) and the entry sealed,
// since it holds what people typed.
func chatValue(rev int64, sealed []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(rev)), sealed...)
}

// SaveChat writes entries (an entry already kept at the same or a newer
// revision is left as it is) and deletes the entries named in drop, in
// one transaction.
func (s *Store) SaveChat(ctx context.Context, put []ChatRecord, drop []ChatRecord) error {
	type sealed struct {
		key []byte
		rev int64
		val []byte
	}
	puts := make([]sealed, len(put))
	for i, r := range put {
		k := chatKey(r.Box, r.ID)
		puts[i] = sealed{k, r.Rev, chatValue(r.Rev, s.seal.seal(r.Data, chatAD(k)))}
	}
	// A transaction stays inside kv.MaxOps: each put is read and written.
	const chunk = kv.MaxOps / 2
	for len(puts) > 0 || len(drop) > 0 {
		p := puts[:min(len(puts), chunk)]
		puts = puts[len(p):]
		d := drop[:min(len(drop), chunk-len(p))]
		drop = drop[len(d):]
		err := s.db.Update(ctx, func(tx kv.Txn) error {
			for _, p := range p {
				old, _, err := tx.Get(key(bChatLog, p.key))
				if err != nil {
					return err
				}
				if len(old) >= 8 && int64(binary.BigEndian.Uint64(old)) >= p.rev {
					continue
				}
				if err := tx.Put(key(bChatLog, p.key), p.val); err != nil {
					return err
				}
			}
			for _, r := range d {
				if err := tx.Delete(key(bChatLog, chatKey(r.Box, r.ID))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ChatLog returns every kept chat entry, box by box in id order. An entry
// that cannot be opened (the state key was changed) is skipped and
// counted in lost: history is a convenience, not a record.
func (s *Store) ChatLog(ctx context.Context) (out []ChatRecord, lost int, err error) {
	prefix := key(bChatLog, nil)
	err = s.db.View(ctx, func(tx kv.Txn) error {
		out, lost = out[:0], 0
		return each(tx, prefix, func(full string, v []byte) (bool, error) {
			k := []byte(full[len(prefix):])
			if len(k) < 9 || k[len(k)-9] != 0 || len(v) < 8 {
				return false, corrupt(s.Path(), "chat_log has a malformed record %q", k)
			}
			plain, err := s.seal.open(v[8:], chatAD(k))
			if err != nil {
				lost++
				return true, nil
			}
			out = append(out, ChatRecord{Box: string(k[:len(k)-9]), ID: int64(binary.BigEndian.Uint64(k[len(k)-8:])),
				Rev: int64(binary.BigEndian.Uint64(v)), Data: plain})
			return true, nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read chat history: %w", err)
	}
	return out, lost, nil
}
