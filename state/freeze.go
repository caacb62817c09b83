package state

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"opsbot/state/kv"
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
	return s.db.Update(ctx, func(tx kv.Txn) error { return putJSON(tx, key(bFreezes, []byte(f.Env)), f) })
}

// DeleteFreeze lifts a freeze; it reports whether there was one.
func (s *Store) DeleteFreeze(ctx context.Context, env string) (Freeze, bool, error) {
	var f Freeze
	var ok bool
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		var err error
		if ok, err = getJSON(tx, key(bFreezes, []byte(env)), &f); err != nil || !ok {
			return err
		}
		return tx.Delete(key(bFreezes, []byte(env)))
	})
	return f, ok, err
}

// Freezes lists the freezes, by environment.
func (s *Store) Freezes(ctx context.Context) ([]Freeze, error) {
	var out []Freeze
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, key(bFreezes, nil), func(_ string, v []byte) (bool, error) {
			var f Freeze
			if err := json.Unmarshal(v, &f); err != nil {
				return false, err
			}
			out = append(out, f)
			return true, nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Env < out[j].Env })
	return out, err
}
