package flows

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"

	"opsbot/state"
)

// Refresh looks up a waiting ticket's refreshed fields (Flow.Refresh) again
// through the flow's validator and, when one changed, stores them as an
// event of its own: the version goes up, every card is redrawn, and a
// card drawn before it is out of date (its buttons are refused). It does
// nothing (changed false) for a ticket that is not waiting for approval,
// a flow without refreshed fields, or fields that did not change. A
// validator that refuses now does not change the ticket: the step that
// acts checks again.
func (e *Engine) Refresh(ctx context.Context, id string) (t state.Ticket, changed bool, err error) {
	if !e.refreshes {
		return state.Ticket{}, false, nil // no flow looks anything up again: no read on every approval
	}
	if n, ok := state.ParseID(id); ok {
		id = state.FormatID(n)
	}
	cur, err := e.store.Get(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return cur, false, nil // the action that follows says so
	}
	if err != nil {
		return cur, false, err
	}
	f, ok := e.Flow(cur.Flow)
	if !ok || len(f.Refresh) == 0 || !cur.Open {
		return cur, false, nil
	}
	if st, _ := f.Stage(cur.Stage); st == nil || st.Kind != KindApproval {
		return cur, false, nil
	}
	typed := maps.Clone(cur.Fields)
	for _, fd := range f.Fields {
		if fd.Computed {
			delete(typed, fd.Name)
		}
	}
	defer e.serial.lock(f.Name)()
	out, err := e.validate(ctx, f, cur.Requester, typed, &cur)
	if err != nil {
		var ue *UserError
		if errors.As(err, &ue) {
			return cur, false, nil
		}
		return cur, false, err
	}
	fresh := map[string]string{}
	for _, name := range f.Refresh {
		if v := e.clean(out[name]); v != cur.Fields[name] {
			fresh[name] = v
		}
	}
	if len(fresh) == 0 {
		return cur, false, nil
	}
	moved := false
	t, err = e.commit(ctx, id, func(now state.Ticket) (state.Change, error) {
		if moved = now.Version != cur.Version; moved {
			return state.Change{}, state.ErrNoChange // moved on meanwhile; the next look refreshes it
		}
		t := now
		t.Fields = maps.Clone(now.Fields)
		var what []string
		for _, name := range slices.Sorted(maps.Keys(fresh)) {
			t.Fields[name] = fresh[name]
			label := name
			if fd := f.Field(name); fd != nil && fd.Label != "" {
				label = fd.Label
			}
			what = append(what, label+": "+fresh[name])
		}
		t.Updated = e.now()
		t.LookedUp = t.Version + 1
		raw, err := json.Marshal(CardUpdate{Ticket: t.ID, Version: t.Version + 1})
		if err != nil {
			return state.Change{}, err
		}
		return state.Change{Ticket: t,
			Event: state.Event{At: e.now(), Actor: SystemActor, Type: string(EvRefresh), From: t.Stage, To: t.Stage,
				Comment: "已变化 changed: " + strings.Join(what, "; ")},
			Notify: []state.Notification{{Ticket: t.ID, Kind: state.NotifyCardUpdate, Message: raw, NextAt: e.now(), Created: e.now()}}}, nil
	})
	return t, err == nil && !moved, err
}
