package state_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"opsbot/state"
)

// The work queues and side records, on every backend: jobs written with
// their transition and claimed once, the outbox (ordered, deferred with
// the platforms reached, acknowledged in batches past a transaction's
// limit), timers due in order, card references, freezes, recorded input
// and the local chat's history.
func TestWorkQueuesAndRecords(t *testing.T) {
	backends(t, func(t *testing.T, open opener) {
		s := open(t)
		ctx := context.Background()
		now := time.Date(2026, 5, 9, 10, 0, 0, 0, time.UTC)

		// Jobs: queued with a transition, claimed once.
		tk := create(t, s, "golive", "alice", nil)
		job := state.Job{ID: tk.ID + "/deploy/1", Ticket: tk.ID, Stage: "deploy", Status: state.JobQueued, NextAt: now}
		if _, err := s.Transition(ctx, tk.ID, func(cur state.Ticket) (state.Change, error) {
			return state.Change{Ticket: cur, Event: state.Event{Type: "approve"}, Jobs: []state.Job{job}}, nil
		}); err != nil {
			t.Fatal(err)
		}
		claim := func(x *state.Job) error {
			if x.Status != state.JobQueued {
				return errors.New("taken")
			}
			x.Status, x.Owner = state.JobRunning, "replica-a"
			return nil
		}
		if j, err := s.UpdateJob(ctx, job.ID, claim); err != nil || j.Owner != "replica-a" {
			t.Fatalf("claim: %+v %v", j, err)
		}
		if _, err := s.UpdateJob(ctx, job.ID, claim); err == nil {
			t.Fatal("a running job was claimed twice")
		}
		if act, _ := s.ActiveJobs(ctx); len(act) != 1 || act[0].Status != state.JobRunning {
			t.Fatalf("active jobs: %+v", act)
		}
		s.UpdateJob(ctx, job.ID, func(x *state.Job) error { x.Status = state.JobSucceeded; return nil })
		if act, _ := s.ActiveJobs(ctx); len(act) != 0 {
			t.Fatalf("a finished job is still active: %+v", act)
		}

		// Outbox: 300 notices (more than one transaction acknowledges).
		for i := 0; i < 300; i++ {
			if err := s.Enqueue(ctx, state.Notification{User: "bob", Kind: state.NotifyMessage, Message: []byte(fmt.Sprintf(`"n%d"`, i)), NextAt: now, Created: now}); err != nil {
				t.Fatal(err)
			}
		}
		pend, err := s.Pending(ctx, now, 1000)
		if err != nil || len(pend) != 300 || string(pend[0].Message) != `"n0"` || string(pend[299].Message) != `"n299"` {
			t.Fatalf("pending: %d %v", len(pend), err)
		}
		first := pend[0]
		if err := s.Deferred(ctx, first.ID, now.Add(time.Minute), "slack: ratelimited", []string{"wecom"}); err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, n := range pend {
			if n.ID != first.ID {
				ids = append(ids, n.ID)
			}
		}
		if err := s.Delivered(ctx, ids...); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.OutboxLen(ctx); n != 1 {
			t.Fatalf("outbox after acknowledging all but one: %d", n)
		}
		if due, _ := s.Pending(ctx, now, 10); len(due) != 0 {
			t.Fatalf("a deferred notice is due before its time: %+v", due)
		}
		later, _ := s.Pending(ctx, now.Add(time.Minute), 10)
		if len(later) != 1 || later[0].Attempts != 1 || later[0].Done()[0] != "wecom" || later[0].LastError == "" {
			t.Fatalf("the deferred notice: %+v", later)
		}

		// Timers: due in order, deleted once fired.
		var timers []state.Timer
		for i, d := range []time.Duration{3 * time.Minute, time.Minute, 2 * time.Minute} {
			timers = append(timers, state.Timer{Due: now.Add(d), Ticket: tk.ID, Kind: fmt.Sprintf("k%d", i)})
		}
		if _, err := s.Transition(ctx, tk.ID, func(cur state.Ticket) (state.Change, error) {
			return state.Change{Ticket: cur, SetTimers: timers}, nil
		}); err != nil {
			t.Fatal(err)
		}
		due, _ := s.DueTimers(ctx, now.Add(2*time.Minute))
		if len(due) != 2 || due[0].Kind != "k1" || due[1].Kind != "k2" {
			t.Fatalf("due timers: %+v", due)
		}
		s.DeleteTimer(ctx, due[0])
		if due, _ = s.DueTimers(ctx, now.Add(time.Hour)); len(due) != 2 {
			t.Fatalf("after a delete: %+v", due)
		}

		// Card references.
		s.AddCardRef(ctx, tk.ID, state.CardRef{Platform: "wecom", Channel: "c", TS: "code1", Task: "task1"})
		s.AddCardRef(ctx, tk.ID, state.CardRef{Platform: "wecom", Channel: "c", TS: "code1", Task: "task1"})
		if err := s.SpendCardCode(ctx, tk.ID, "wecom", "task1"); err != nil {
			t.Fatal(err)
		}
		if refs, _ := s.CardRefs(ctx, tk.ID, "wecom"); len(refs) != 1 || refs[0].TS != "" {
			t.Fatalf("card refs: %+v", refs)
		}

		// Freezes.
		s.PutFreeze(ctx, state.Freeze{Env: "tdev", Until: now.Add(time.Hour), Reason: "release test", By: "erin"})
		s.PutFreeze(ctx, state.Freeze{Env: "prod", Until: now.Add(time.Hour), Reason: "holiday", By: "erin"})
		if fz, _ := s.Freezes(ctx); len(fz) != 2 || fz[0].Env != "prod" {
			t.Fatalf("freezes: %+v", fz)
		}
		if f, ok, _ := s.DeleteFreeze(ctx, "tdev"); !ok || f.Reason != "release test" {
			t.Fatalf("lift: %+v %v", f, ok)
		}

		// Recorded input, sealed, replayed by platform, de-duplicated.
		id, dup, err := s.AddInbound(ctx, state.Inbound{Platform: "slack", Kind: "slash", Payload: []byte("/ops list")}, "slack:1", now, time.Hour)
		if err != nil || dup {
			t.Fatal(err, dup)
		}
		if _, dup, _ := s.AddInbound(ctx, state.Inbound{Platform: "slack", Kind: "slash", Payload: []byte("/ops list")}, "slack:1", now, time.Hour); !dup {
			t.Fatal("a retried delivery was recorded twice")
		}
		if in, _ := s.PendingInbound(ctx, "slack"); len(in) != 1 || string(in[0].Payload) != "/ops list" {
			t.Fatalf("pending input: %+v", in)
		}
		s.DoneInbound(ctx, id)
		if in, _ := s.PendingInbound(ctx, "slack"); len(in) != 0 {
			t.Fatalf("handled input kept: %+v", in)
		}

		// The chat history: 200 entries (several transactions), an older
		// revision never over a newer one.
		var recs []state.ChatRecord
		for i := 0; i < 200; i++ {
			recs = append(recs, state.ChatRecord{Box: "bob", ID: int64(i), Rev: 2, Data: []byte(fmt.Sprint("entry ", i))})
		}
		if err := s.SaveChat(ctx, recs, nil); err != nil {
			t.Fatal(err)
		}
		s.SaveChat(ctx, []state.ChatRecord{{Box: "bob", ID: 5, Rev: 1, Data: []byte("stale")}}, []state.ChatRecord{{Box: "bob", ID: 0}})
		got, lost, err := s.ChatLog(ctx)
		if err != nil || lost != 0 || len(got) != 199 || got[0].ID != 1 || string(got[4].Data) != "entry 5" {
			t.Fatalf("chat log: %d entries, lost %d, %v", len(got), lost, err)
		}
	})
}
