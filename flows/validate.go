package flows

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"opsbot/state"
)

// Validator checks a ticket's fields together, beyond what each field's
// type says: rules across fields, look-ups in other systems, the
// inventory. It returns the fields to store, with computed fields filled
// in, or a *UserError naming each bad field.
type Validator interface {
	Validate(ctx context.Context, in Validation) (map[string]string, error)
}

// Validation is what a validator gets.
type Validation struct {
	Flow  *Flow
	Actor string
	// Fields are the typed fields, already checked one by one and
	// normalized; computed fields are absent.
	Fields map[string]string
	// Edit is the ticket being edited, or nil when a ticket is created.
	Edit *state.Ticket
	// Open lists the other open tickets of the same flow (the edited one
	// left out), for checks that count what tickets in flight hold.
	Open []state.Ticket
}

// ValidatorFunc adapts a function to Validator.
type ValidatorFunc func(ctx context.Context, in Validation) (map[string]string, error)

// Validate implements Validator.
func (f ValidatorFunc) Validate(ctx context.Context, in Validation) (map[string]string, error) {
	return f(ctx, in)
}

// serial holds one mutex per flow with a validator: validation and the
// commit that follows are one step, so two tickets checked at the same
// instant see each other (a reservation, a duplicate).
type serial struct {
	mu sync.Mutex
	m  map[string]*sync.Mutex
}

func (s *serial) lock(flow string) func() {
	s.mu.Lock()
	if s.m == nil {
		s.m = map[string]*sync.Mutex{}
	}
	m := s.m[flow]
	if m == nil {
		m = &sync.Mutex{}
		s.m[flow] = m
	}
	s.mu.Unlock()
	m.Lock()
	return m.Unlock
}

// OpenTickets lists the open tickets of a flow, newest first.
func (e *Engine) OpenTickets(ctx context.Context, flow string) ([]state.Ticket, error) {
	page, err := e.store.List(ctx, state.Index{Kind: "open"}, func(t state.Ticket) bool { return t.Flow == flow }, 0, 1<<30)
	return page.Tickets, err
}

// validate runs the flow's validator, if it has one; the caller holds the
// flow's serial lock.
func (e *Engine) validate(ctx context.Context, f *Flow, actor string, fields map[string]string, edit *state.Ticket) (map[string]string, error) {
	if f.Validator == "" {
		return fields, nil
	}
	v, ok := e.validators[f.Validator]
	if !ok {
		return nil, fmt.Errorf("flow %s: validator %q is not available", f.Name, f.Validator)
	}
	open, err := e.OpenTickets(ctx, f.Name)
	if err != nil {
		return nil, err
	}
	if edit != nil {
		open = slices.DeleteFunc(open, func(t state.Ticket) bool { return t.ID == edit.ID })
	}
	out, err := v.Validate(ctx, Validation{Flow: f, Actor: actor, Fields: maps.Clone(fields), Edit: edit, Open: open})
	if err != nil {
		return nil, err
	}
	// A validator may only fill declared fields.
	for k := range out {
		if f.Field(k) == nil {
			return nil, fmt.Errorf("flow %s: validator %s set undeclared field %q", f.Name, f.Validator, k)
		}
	}
	return out, nil
}

// Edit changes fields of a ticket that waits for approval. Only the
// requester (or an admin) edits; the changed fields are checked like new
// ones, the flow's validator runs again (look-ups are made again), and the
// stage's approvals start over so that nobody's approval covers what they
// did not see.
func (e *Engine) Edit(ctx context.Context, a Action, changes map[string]string) (state.Ticket, error) {
	a.Actor = state.NormName(a.Actor)
	id := a.Ticket
	if n, ok := state.ParseID(id); ok {
		id = state.FormatID(n)
	}
	if len(changes) == 0 {
		return state.Ticket{}, Userf("usage", fmt.Sprintf("/ops edit %s key=value ...", id), "没有要修改的字段 · nothing to change: give key=value pairs")
	}
	cur, err := e.store.Get(ctx, id)
	if err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return cur, Userf("no_ticket", "/ops list open", "没有工单 %s · there is no ticket %s", id, id)
		}
		return cur, err
	}
	f, ok := e.flows[cur.Flow]
	if !ok {
		return cur, fmt.Errorf("ticket %s has unknown flow %s", cur.ID, cur.Flow)
	}
	if f.Validator != "" {
		defer e.serial.lock(f.Name)()
		if cur, err = e.store.Get(ctx, id); err != nil {
			return cur, err
		}
	}
	if err := e.mayEdit(f, cur, a); err != nil {
		return cur, err
	}
	// Typed fields as they are, with the changes over them; computed
	// fields are left for the validator to fill again.
	raw := map[string]string{}
	for k, v := range cur.Fields {
		if fd := f.Field(k); fd != nil && !fd.Computed {
			raw[k] = v
		}
	}
	for k, v := range changes {
		k = strings.ToLower(k)
		if fd := f.Field(k); fd != nil && !fd.Computed && strings.TrimSpace(v) == "" {
			delete(raw, k) // key= clears an optional field
			continue
		}
		raw[k] = v
	}
	clean, err := f.CheckFields(raw)
	if err != nil {
		return cur, err
	}
	if clean, err = e.validate(ctx, f, a.Actor, clean, &cur); err != nil {
		return cur, err
	}
	for k, v := range clean {
		clean[k] = e.clean(v)
	}
	return e.commit(ctx, id, func(t state.Ticket) (state.Change, error) {
		if t.Version != cur.Version {
			return state.Change{}, Userf("stale", fmt.Sprintf("/ops show %s", id),
				"%s 刚刚被修改，请重新编辑 · %s changed while you edited it; look at it again and repeat the edit", id, id)
		}
		s := e.newStep(f, t, a.Actor, EvEdit)
		s.ch.Event.Comment = e.clean(a.Comment)
		s.ch.Event.Data = map[string]string{}
		for k, v := range clean {
			if t.Fields[k] != v {
				s.ch.Event.Data[k] = v
			}
		}
		for k := range t.Fields {
			if _, still := clean[k]; !still {
				s.ch.Event.Data[k] = ""
			}
		}
		if len(s.ch.Event.Data) == 0 {
			return state.Change{}, Userf("no_change", fmt.Sprintf("/ops show %s", id), "字段没有变化 · %s already has these values", id)
		}
		s.t.Fields = clean
		if title := strings.TrimSpace(Expand(f.TitleTemplate, clean)); title != "" {
			s.t.Title = title
		}
		// Locks follow the fields they are named after.
		var locks []string
		for _, l := range f.Locks {
			locks = append(locks, Expand(l, clean))
		}
		for _, l := range t.Locks {
			if !slices.Contains(locks, l) {
				s.ch.Release = append(s.ch.Release, l)
			}
		}
		for _, l := range locks {
			if !slices.Contains(t.Locks, l) {
				s.ch.Acquire = append(s.ch.Acquire, l)
			}
		}
		s.t.Locks = locks
		// The stage starts over: approvals, reminders and expiry; cards drawn
		// before the edit are stale. Approvers hear that it was edited.
		_, i := f.Stage(t.Stage)
		if err := s.enter(i); err != nil {
			return state.Change{}, err
		}
		for j := range s.notices {
			if s.notices[j].event == "approval_needed" {
				s.notices[j].event = "edited"
			}
		}
		ch, err := s.finish()
		ch.Audit = append(ch.Audit, a.Audit...)
		return ch, err
	})
}

func (e *Engine) mayEdit(f *Flow, t state.Ticket, a Action) error {
	if !f.Editable {
		return Userf("not_editable", fmt.Sprintf("/ops cancel %s", t.ID), "%s 流程的工单不能修改 · %s tickets cannot be edited; cancel and open a new one", f.Name, f.Name)
	}
	if !f.allows(EvEdit, t.Stage) {
		return Userf("not_allowed", fmt.Sprintf("/ops show %s", t.ID),
			"%s 已不在审批中，不能修改 · %s can only be edited while it waits for approval (it is %s)", t.ID, t.ID, t.Stage)
	}
	if a.Version > 0 && a.Version != t.Version {
		return Userf("stale", fmt.Sprintf("/ops show %s", t.ID), "卡片已过期 · this card is out of date: %s is now v%d", t.ID, t.Version)
	}
	if a.Actor != t.Requester && !e.dir.HasRole(a.Actor, AdminRole) {
		return Userf("not_requester", fmt.Sprintf("ask %s", t.Requester),
			"只有申请人 %s 可以修改 %s · only the requester %s can edit %s", t.Requester, t.ID, t.Requester, t.ID)
	}
	return nil
}
