package state

import (
	"context"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bFreezes = []byte("freezes")

// Freeze forbids destructive work (data cleanup) on an environment until
// a time, with a reason; /ops freeze sets it, /ops unfreeze lifts it.
type Freeze struct {
	Env    string    `json:"env"`
	Until  time.Time `json:"until"`
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// PutFreeze sets or replaces an environment's freeze.
func (s *Store) PutFreeze(ctx context.Context, f Freeze) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bFreezes), []byte(f.Env), f) })
}

// DeleteFreeze lifts a freeze; it reports whether there was one.
func (s *Store) DeleteFreeze(ctx context.Context, env string) (Freeze, bool, error) {
	var f Freeze
	var ok bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		var err error
		if ok, err = getJSON(tx.Bucket(bFreezes), []byte(env), &f); err != nil || !ok {
			return err
		}
		return tx.Bucket(bFreezes).Delete([]byte(env))
	})
	return f, ok, err
}

// Freezes lists the freezes, by environment.
func (s *Store) Freezes(ctx context.Context) ([]Freeze, error) {
	var out []Freeze
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bFreezes).ForEach(func(k, _ []byte) error {
			var f Freeze
			if _, err := getJSON(tx.Bucket(bFreezes), k, &f); err != nil {
				return err
			}
			out = append(out, f)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Env < out[j].Env })
	return out, err
}
