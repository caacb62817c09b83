package state

import (
	"context"
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Inbound is chat input a platform was told we received (its request was
// acknowledged) and that is not handled yet. It is written before the ack,
// so a bot that stops right after acknowledging still handles it when it
// starts again.
type Inbound struct {
	ID       uint64    `json:"id"`
	Platform string    `json:"platform"`
	Kind     string    `json:"kind"`
	Payload  []byte    `json:"payload"`
	At       time.Time `json:"at"`
}

// AddInbound records input before it is acknowledged and returns its id.
func (s *Store) AddInbound(ctx context.Context, in Inbound) (uint64, error) {
	var id uint64
	err := s.db.Batch(func(tx *bolt.Tx) error {
		b := tx.Bucket(bInbound)
		var err error
		if id, err = b.NextSequence(); err != nil {
			return err
		}
		in.ID = id
		return putJSON(b, u64(id), in)
	})
	return id, err
}

// DoneInbound forgets handled input.
func (s *Store) DoneInbound(ctx context.Context, id uint64) error {
	return s.db.Batch(func(tx *bolt.Tx) error { return tx.Bucket(bInbound).Delete(u64(id)) })
}

// PendingInbound returns a platform's unhandled input, oldest first.
func (s *Store) PendingInbound(ctx context.Context, platform string) ([]Inbound, error) {
	var out []Inbound
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bInbound).ForEach(func(k, v []byte) error {
			var in Inbound
			if err := json.Unmarshal(v, &in); err != nil {
				return err
			}
			if in.Platform == platform {
				out = append(out, in)
			}
			return nil
		})
	})
	return out, err
}
