package state

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"opsbot/state/kv"
)

// Inbound is chat input a platform was told we received (its request was
// acknowledged) and that is not handled yet. It is written before the ack,
// so a bot that stops right after acknowledging still handles it when it
// starts again. The payload is stored sealed (AES-GCM with the store's
// key) and deleted once handled: what people typed never rests in clear.
type Inbound struct {
	ID       uint64    `json:"id"`
	Platform string    `json:"platform"`
	Kind     string    `json:"kind"`
	Payload  []byte    `json:"-"`
	At       time.Time `json:"at"`
	// Owner is the replica that acknowledged it and handles it; another
	// handles it only once that one lost its lease (ClaimInbound).
	Owner string `json:"owner,omitempty"`
	// Err says why a recorded payload could not be opened (another key).
	Err error `json:"-"`
}

type inboundRecord struct {
	Inbound
	Sealed []byte `json:"sealed,omitempty"`
	// Clear is the payload of a record written before payloads were
	// sealed (schema 5 and earlier): still handled after an upgrade, so an
	// acknowledged command is not lost, and deleted once handled like any.
	Clear []byte `json:"payload,omitempty"`
}

func inboundAD(in Inbound) []byte {
	return fmt.Appendf(nil, "inbound/%d/%s/%s", in.ID, in.Platform, in.Kind)
}

// AddInbound records input before it is acknowledged and returns its id.
// With a dedup key, input whose key was seen before (until ttl passes) is
// not recorded: dup is true and the caller must not handle it again. The
// key and the record are written in one transaction, so a crash between
// them cannot lose the input nor let a replay through.
func (s *Store) AddInbound(ctx context.Context, in Inbound, dedup string, now time.Time, ttl time.Duration) (id uint64, dup bool, err error) {
	err = s.db.Update(ctx, func(tx kv.Txn) error {
		id, dup = 0, false
		if dedup != "" {
			seen, err := remember(tx, dedup, now, ttl)
			if err != nil || seen {
				dup = seen
				return err
			}
		}
		var err error
		if id, err = s.next(ctx, tx, "inbound"); err != nil {
			return err
		}
		in.ID = id
		rec := inboundRecord{Inbound: in, Sealed: s.seal.seal(in.Payload, inboundAD(in))}
		return putJSON(tx, key(bInbound, u64(id)), rec)
	})
	return id, dup, err
}

// ClaimInbound makes replica to the handler of recorded input that
// replica from (which stopped) acknowledged. It reports false when the
// record is gone (handled) or another replica claimed it first.
func (s *Store) ClaimInbound(ctx context.Context, id uint64, from, to string) (bool, error) {
	claimed := false
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		claimed = false
		var rec inboundRecord
		ok, err := getJSON(tx, key(bInbound, u64(id)), &rec)
		if err != nil || !ok || rec.Owner != from {
			return err
		}
		rec.Owner, claimed = to, true
		return putJSON(tx, key(bInbound, u64(id)), rec)
	})
	return claimed, err
}

// DoneInbound forgets handled input.
func (s *Store) DoneInbound(ctx context.Context, id uint64) error {
	return s.db.Update(ctx, func(tx kv.Txn) error { return tx.Delete(key(bInbound, u64(id))) })
}

// PendingInbound returns a platform's unhandled input, oldest first. A
// record that cannot be opened (sealed with another key) comes back with
// Err set and no payload.
func (s *Store) PendingInbound(ctx context.Context, platform string) ([]Inbound, error) {
	var out []Inbound
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		return each(tx, key(bInbound, nil), func(_ string, v []byte) (bool, error) {
			var rec inboundRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return false, err
			}
			if rec.Platform != platform {
				return true, nil
			}
			in := rec.Inbound
			if rec.Sealed == nil && rec.Clear != nil {
				in.Payload = rec.Clear
			} else {
				in.Payload, in.Err = s.seal.open(rec.Sealed, inboundAD(in))
			}
			out = append(out, in)
			return true, nil
		})
	})
	return out, err
}
