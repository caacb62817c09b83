package state

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
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
	return s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bChatLog)
		for _, p := range puts {
			if old := b.Get(p.key); len(old) >= 8 && int64(binary.BigEndian.Uint64(old)) >= p.rev {
				continue
			}
			if err := b.Put(p.key, p.val); err != nil {
				return err
			}
		}
		for _, r := range drop {
			if err := b.Delete(chatKey(r.Box, r.ID)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ChatLog returns every kept chat entry, box by box in id order. An entry
// that cannot be opened (the state key was changed) is skipped and
// counted in lost: history is a convenience, not a record.
func (s *Store) ChatLog(ctx context.Context) (out []ChatRecord, lost int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bChatLog).ForEach(func(k, v []byte) error {
			if len(k) < 9 || k[len(k)-9] != 0 || len(v) < 8 {
				return corrupt(s.db.Path(), "chat_log has a malformed record %q", k)
			}
			plain, err := s.seal.open(v[8:], chatAD(k))
			if err != nil {
				lost++
				return nil
			}
			out = append(out, ChatRecord{Box: string(k[:len(k)-9]), ID: int64(binary.BigEndian.Uint64(k[len(k)-8:])),
				Rev: int64(binary.BigEndian.Uint64(v)), Data: plain})
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("read chat history: %w", err)
	}
	return out, lost, nil
}
