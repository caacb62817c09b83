package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"opsbot/state"
)

// TestCalendarEdits: one edit writes freezes (ids handed out), milestones,
// absences, duty, its notifications and audit together; an empty edit
// writes nothing; a freeze of the old one-environment form reads back as
// the new one.
func TestCalendarEdits(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		now := time.Date(2026, 5, 9, 10, 0, 0, 0, time.UTC)
		if err := s.PutFreeze(ctx, state.Freeze{Env: "tdev", Until: now.Add(time.Hour), Reason: "old form", By: "erin"}); err != nil {
			t.Fatal(err)
		}
		id, err := s.NewFreezeID(ctx)
		if err != nil || id != "F-1" {
			t.Fatalf("first freeze id %q %v", id, err)
		}
		ch, err := s.EditCalendar(ctx, func(c state.Calendar) (state.CalendarChange, error) {
			if len(c.Freezes) != 1 || c.Freezes[0].ID != "tdev" || c.Freezes[0].Envs[0] != "tdev" {
				t.Errorf("the old form reads back as %+v", c.Freezes)
			}
			return state.CalendarChange{
				PutFreezes:    []state.Freeze{{ID: id, Envs: []string{"prod"}, Until: now.Add(time.Hour), Reason: "r"}, {Flows: []string{"golive"}, Reason: "no id yet"}},
				PutMilestones: []state.Milestone{{Version: "5.9", Date: "2026-05-26", Name: "封版"}, {Version: "5.9", Date: "2026-05-23", Name: "封需求"}},
				PutAway:       []state.Away{{User: "bert", Delegate: "bob", Until: now.Add(48 * time.Hour), Since: now}},
				PutDuties:     []state.Duty{{Role: "ops", People: []string{"dave", "ivan"}, Every: "weekly", Anchor: now}},
				Notify:        []state.Notification{{User: "game", Kind: state.NotifyChannel, Message: []byte(`{"title":"x"}`), NextAt: now, Created: now}},
				Audit:         []state.AuditEntry{{At: now, User: "erin", Action: "freeze", Result: "ok"}},
			}, nil
		})
		if err != nil || ch.PutFreezes[1].ID != "F-2" {
			t.Fatalf("edit: %+v %v", ch.PutFreezes, err)
		}
		c, err := s.ReadCalendar(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Freezes) != 3 || len(c.Milestones) != 2 || c.Milestones[0].Name != "封需求" || len(c.Away) != 1 || len(c.Duties) != 1 {
			t.Fatalf("calendar %+v", c)
		}
		if a, ok := c.AwayOf("bert", now.Add(47*time.Hour)); !ok || a.Delegate != "bob" {
			t.Fatalf("away %+v %v", a, ok)
		}
		if _, ok := c.AwayOf("bert", now.Add(48*time.Hour)); ok {
			t.Fatal("an absence lasts past its end")
		}
		d, _ := c.DutyOf("ops")
		if who, _, to := d.OnDuty(now.Add(6 * 24 * time.Hour)); who != "dave" || !to.Equal(now.Add(7*24*time.Hour)) {
			t.Fatalf("first week %s until %s", who, to)
		}
		if who, _, _ := d.OnDuty(now.Add(8 * 24 * time.Hour)); who != "ivan" {
			t.Fatalf("second week %s", who)
		}
		if n, _ := s.OutboxLen(ctx); n != 1 {
			t.Fatalf("%d notifications queued, want 1", n)
		}
		if _, err := s.EditCalendar(ctx, func(state.Calendar) (state.CalendarChange, error) { return state.CalendarChange{}, nil }); !errors.Is(err, state.ErrNoChange) {
			t.Fatalf("an empty edit: %v", err)
		}
		if _, err := s.EditCalendar(ctx, func(state.Calendar) (state.CalendarChange, error) {
			return state.CalendarChange{DeleteAway: []string{"bert"}, DeleteDuties: []string{"ops"}, DeleteMilestones: []string{"5.9/2026-05-23/封需求"},
				DeleteFreezes: []string{"tdev"}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if c, _ := s.ReadCalendar(ctx); len(c.Freezes) != 2 || len(c.Milestones) != 1 || len(c.Away) != 0 || len(c.Duties) != 0 {
			t.Fatalf("after deletes %+v", c)
		}
	})
}

// TestCalendarCacheSeesOtherReplicas: a replica keeps the calendar it
// read, and reads it again once another replica changed it.
func TestCalendarCacheSeesOtherReplicas(t *testing.T) {
	prefix := newPrefix()
	a, b := openEtcdAt(t, prefix), openEtcdAt(t, prefix)
	ctx := context.Background()
	if c, err := b.ReadCalendar(ctx); err != nil || len(c.Freezes) != 0 {
		t.Fatalf("%+v %v", c, err)
	}
	if err := a.PutFreeze(ctx, state.Freeze{ID: "F-1", Envs: []string{"prod"}, Reason: "r"}); err != nil {
		t.Fatal(err)
	}
	if c, _ := b.ReadCalendar(ctx); len(c.Freezes) != 1 {
		t.Fatalf("replica b still has %+v", c.Freezes)
	}
	if _, err := a.EditCalendar(ctx, func(state.Calendar) (state.CalendarChange, error) {
		return state.CalendarChange{PutAway: []state.Away{{User: "bert", Delegate: "bob", Until: time.Now().Add(time.Hour)}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if c, _ := b.ReadCalendar(ctx); len(c.Away) != 1 {
		t.Fatalf("replica b does not see the absence: %+v", c)
	}
	if _, _, err := a.DeleteFreeze(ctx, "F-1"); err != nil {
		t.Fatal(err)
	}
	if c, _ := b.ReadCalendar(ctx); len(c.Freezes) != 0 {
		t.Fatalf("replica b still has the lifted freeze: %+v", c.Freezes)
	}
}
