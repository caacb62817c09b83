package state

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"opsbot/state/kv"
)

var bFreezes = []byte("freezes")

// Freeze stops new tickets and executions on what it covers while its
// window holds: environments, flows and resources ("service:payments",
// "platform:ios"); an empty list covers every value. Its window is From
// to Until (a zero Until: no end), every week from one day and time to
// another when Weekly is set, in the time zone TZ. A ticket may go
// through as an exception with one more approval from a role of Except.
//
// Freezes written before schema 11 carry one Env and an Until (cleanup
// only); they read back as a freeze of that environment.
type Freeze struct {
	ID        string    `json:"id,omitempty"`
	Envs      []string  `json:"envs,omitempty"`
	Flows     []string  `json:"flows,omitempty"`
	Resources []string  `json:"resources,omitempty"`
	From      time.Time `json:"from,omitempty"`
	Until     time.Time `json:"until"`
	Weekly    *Weekly   `json:"weekly,omitempty"`
	TZ        string    `json:"tz,omitempty"`
	Reason    string    `json:"reason"`
	By        string    `json:"by"`
	At        time.Time `json:"at"`
	// Except are the roles one of whose holders may let a ticket through.
	Except []string `json:"except,omitempty"`
	// Channel is the team channel told when it is set, the day before it
	// starts and when it ends; Milestone the release milestone that set it.
	Channel   string `json:"channel,omitempty"`
	Milestone string `json:"milestone,omitempty"`
	// RemindedFor is the start of the window whose reminder is queued;
	// Ended says the freeze is over and its end notice queued (each once,
	// in the transaction that marks it). LiftedBy lifted it early.
	RemindedFor time.Time `json:"reminded_for,omitempty"`
	Ended       bool      `json:"ended,omitempty"`
	LiftedBy    string    `json:"lifted_by,omitempty"`
	// Env is the pre-schema-11 form (one environment).
	Env string `json:"env,omitempty"`
}

// Weekly is a window that comes back every week: from a weekday and a
// time of day (minutes after midnight) to another.
type Weekly struct {
	FromDay time.Weekday `json:"from_day"`
	FromMin int          `json:"from_min"`
	ToDay   time.Weekday `json:"to_day"`
	ToMin   int          `json:"to_min"`
}

// normFreeze reads the old one-environment form as the new one.
func normFreeze(k string, f Freeze) Freeze {
	if f.Env != "" && len(f.Envs) == 0 {
		f.Envs = []string{f.Env}
	}
	if f.ID == "" {
		f.ID = k
	}
	return f
}

func freezeKey(id string) string { return key(bFreezes, []byte(id)) }

// PutFreeze sets or replaces a freeze by its id (a freeze without one is
// keyed by its first environment, as before schema 11).
func (s *Store) PutFreeze(ctx context.Context, f Freeze) error {
	if f.ID == "" {
		f.ID = f.Env
		if f.ID == "" && len(f.Envs) > 0 {
			f.ID = f.Envs[0]
		}
	}
	return s.db.Update(ctx, func(tx kv.Txn) error {
		if err := bumpCalendar(tx); err != nil {
			return err
		}
		return putJSON(tx, freezeKey(f.ID), f)
	})
}

// DeleteFreeze removes a freeze by id; it reports whether there was one.
func (s *Store) DeleteFreeze(ctx context.Context, id string) (Freeze, bool, error) {
	var f Freeze
	var ok bool
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		var err error
		if ok, err = getJSON(tx, freezeKey(id), &f); err != nil || !ok {
			return err
		}
		if err := bumpCalendar(tx); err != nil {
			return err
		}
		return tx.Delete(freezeKey(id))
	})
	return normFreeze(id, f), ok, err
}

// Freezes lists every freeze, ended ones included, by id.
func (s *Store) Freezes(ctx context.Context) ([]Freeze, error) {
	var out []Freeze
	err := s.db.View(ctx, func(tx kv.Txn) error {
		var err error
		out, err = readFreezes(tx)
		return err
	})
	return out, err
}

func readFreezes(tx kv.Txn) ([]Freeze, error) {
	var out []Freeze
	prefix := key(bFreezes, nil)
	err := each(tx, prefix, func(k string, v []byte) (bool, error) {
		var f Freeze
		if err := json.Unmarshal(v, &f); err != nil {
			return false, err
		}
		out = append(out, normFreeze(k[len(prefix):], f))
		return true, nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}
