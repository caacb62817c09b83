package flows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/flows"
	"opsbot/state"
)

// The engine alone: a real store in a temporary file, a fake presenter that
// records what it was asked to draw, a fake clock and fake executors whose
// results each test sets.

type drawn struct {
	Kind   string            `json:"kind"`
	Ticket string            `json:"ticket"`
	Stage  string            `json:"stage"`
	Event  flows.NoticeEvent `json:"event,omitempty"`
	Offers []flows.Offer     `json:"offers,omitempty"`
	Roles  []string          `json:"roles,omitempty"`
}

type fakePresenter struct {
	mu     sync.Mutex
	notice []flows.Notice
}

func (p *fakePresenter) Notice(f *flows.Flow, t state.Ticket, n flows.Notice) (json.RawMessage, error) {
	p.mu.Lock()
	p.notice = append(p.notice, n)
	p.mu.Unlock()
	return json.Marshal(drawn{Kind: "notice", Ticket: t.ID, Stage: t.Stage, Event: n.Event, Roles: n.Roles})
}

// fakeExec answers each run with the next scripted result of its stage
// (the last one repeats) and records the inputs.
type fakeExec struct {
	mu      sync.Mutex
	results map[string][]flows.ExecResult
	inputs  []flows.ExecInput
}

func (x *fakeExec) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.inputs = append(x.inputs, in)
	key := in.Stage
	if in.Kind == state.JobUndo || in.Kind == state.JobRevert || in.Kind == state.JobCleanup {
		key = string(in.Kind)
	}
	rs := x.results[key]
	if len(rs) == 0 {
		return flows.ExecResult{OK: true, Output: "ok " + key}
	}
	r := rs[0]
	if len(rs) > 1 {
		x.results[key] = rs[1:]
	}
	return r
}

func (x *fakeExec) script(key string, rs ...flows.ExecResult) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.results[key] = rs
}

func (x *fakeExec) last(kind state.JobKind) flows.ExecInput {
	x.mu.Lock()
	defer x.mu.Unlock()
	for i := len(x.inputs) - 1; i >= 0; i-- {
		if x.inputs[i].Kind == kind {
			return x.inputs[i]
		}
	}
	return flows.ExecInput{}
}

type rig struct {
	t     *testing.T
	ctx   context.Context
	e     *flows.Engine
	store *state.Store
	p     *fakePresenter
	x     *fakeExec
	now   time.Time
	mu    sync.Mutex
}

func (r *rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *rig) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// testFlows: "deploy" has every kind of stage; "rel" is a batch release.
func testFlows(t *testing.T) []*flows.Flow {
	d := func(s string) flows.Duration {
		var x flows.Duration
		if err := x.UnmarshalText([]byte(s)); err != nil {
			t.Fatal(err)
		}
		return x
	}
	deploy := &flows.Flow{Name: "deploy", Title: "Deploy", TitleTemplate: "{service}", Editable: true,
		Locks: []string{"service:{service}"}, Operators: []string{"ops"},
		Fields: []flows.Field{
			{Name: "service", Required: true},
			{Name: "env", Enum: []string{"dev", "prod"}, Default: "dev"},
			{Name: "from", Type: flows.TypeDateTime},
			{Name: "to", Type: flows.TypeDateTime},
		},
		Stages: []flows.Stage{
			{Name: "review", Title: "Review", Kind: flows.KindApproval, Roles: []string{"lead"},
				ApprovalsIf: &flows.CondApprovals{Cond: flows.Cond{Field: "env", Equals: "prod"}, Approvals: 2},
				RemindEvery: d("1h"), EscalateTo: "boss", EscalateAfter: 1, ExpireAfter: d("3h")},
			{Name: "qa", Title: "QA", Kind: flows.KindApproval, Roles: []string{"qa"}, SkipIf: &flows.Cond{Field: "env", Equals: "dev"}},
			{Name: "run", Title: "Run", Kind: flows.KindAction, Executor: "fake", MaxAttempts: 2, Backoff: d("10s"), RedoFrom: "review"},
			{Name: "check", Title: "Check", Kind: flows.KindWait, Executor: "fake", Poll: d("30s"), Timeout: d("5m")},
		},
		Rollback: &flows.Rollback{Executor: "fake", Roles: []string{"ops"}},
		OnCancel: &flows.Rollback{Executor: "fake"},
	}
	rel := &flows.Flow{Name: "rel", Title: "Release",
		Fields: []flows.Field{{Name: "batches", Required: true}, {Name: "operators", Required: true}},
		Stages: []flows.Stage{
			{Name: "approve", Kind: flows.KindApproval, Roles: []string{"lead"}},
			{Name: "ship", Kind: flows.KindRelease, Executor: "fake", Params: map[string]string{"path": "uat"}},
		},
	}
	for _, f := range []*flows.Flow{deploy, rel} {
		if err := f.Validate([]string{"fake"}); err != nil {
			t.Fatal(err)
		}
	}
	return []*flows.Flow{deploy, rel}
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx := context.Background()
	st, err := state.Open(state.Options{Path: filepath.Join(t.TempDir(), "s.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	dir, err := flows.NewDirectory(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	for name, roles := range map[string][]string{"alice": nil, "bob": {"lead"}, "carol": {"lead"}, "dave": {"ops"},
		"erin": {"qa"}, "root": {flows.AdminRole}, "boss": {"boss"}} {
		if err := dir.Put(ctx, state.User{Name: name}); err != nil {
			t.Fatal(err)
		}
		for _, role := range roles {
			if _, err := dir.SetRole(ctx, role, name, true, state.AuditEntry{User: "root", Action: "role grant"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	r := &rig{t: t, ctx: ctx, store: st, p: &fakePresenter{}, x: &fakeExec{results: map[string][]flows.ExecResult{}},
		now: time.Date(2026, 5, 9, 10, 0, 0, 0, time.UTC)}
	r.e = flows.New(flows.Config{Store: st, Directory: dir, Flows: testFlows(t), Executors: map[string]flows.Executor{"fake": r.x},
		Now: r.clock, Presenter: r.p})
	return r
}

func (r *rig) create(actor, flow string, fields map[string]string) state.Ticket {
	r.t.Helper()
	tk, err := r.e.Create(r.ctx, actor, flow, fields)
	if err != nil {
		r.t.Fatal(err)
	}
	return tk
}

func (r *rig) act(a flows.Action) (state.Ticket, error) { return r.e.Act(r.ctx, a) }

func (r *rig) must(a flows.Action) state.Ticket {
	r.t.Helper()
	tk, err := r.act(a)
	if err != nil {
		r.t.Fatalf("%s %s by %s: %v", a.Event, a.Ticket, a.Actor, err)
	}
	return tk
}

// run runs every due job to its end, as often as they come due.
func (r *rig) run() state.Ticket {
	r.t.Helper()
	run := r.e.NewRunner()
	for i := 0; i < 20; i++ {
		run.RunDue(r.ctx)
		run.Wait()
	}
	return r.get("T-1")
}

func (r *rig) get(id string) state.Ticket {
	r.t.Helper()
	tk, err := r.store.Get(r.ctx, id)
	if err != nil {
		r.t.Fatal(err)
	}
	return tk
}

func (r *rig) notified(ev flows.NoticeEvent) bool {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	return slices.ContainsFunc(r.p.notice, func(n flows.Notice) bool { return n.Event == ev })
}

// TestGuardsRefuseWithTheirCode: every refusal of a person's action comes
// from a guard of the table and says what it is.
func TestGuardsRefuseWithTheirCode(t *testing.T) {
	r := newRig(t)
	tk := r.create("alice", "deploy", map[string]string{"service": "pay", "env": "prod"})
	if tk.Stage != "review" || !tk.Open || tk.Title != "pay" {
		t.Fatalf("created %+v", tk)
	}
	cases := []struct {
		a    flows.Action
		code string
	}{
		{flows.Action{Actor: "alice", Ticket: "T-1", Event: flows.EvApprove}, "self_approval"},
		{flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvApprove}, "not_role_holder"},
		{flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvReject}, "reason_required"},
		{flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvRetry}, "not_allowed"},
		{flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvRelease}, "not_allowed"},
		{flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvSucceed}, "not_allowed"},
		{flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvCancel}, "not_requester"},
		{flows.Action{Actor: "bob", Ticket: "T-9", Event: flows.EvApprove}, "no_ticket"},
	}
	for _, c := range cases {
		if _, err := r.act(c.a); flows.CodeOf(err) != c.code {
			t.Errorf("%s by %s: %v, want %s", c.a.Event, c.a.Actor, err, c.code)
		}
	}
	// N of M: production needs two distinct leads; the first stays.
	tk = r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove, Comment: "ok"})
	if tk.Stage != "review" || len(tk.Approvals) != 1 || !r.notified(flows.NoticeApproved) {
		t.Fatalf("after one approval: %s %v", tk.Stage, tk.Approvals)
	}
	if _, err := r.act(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove}); flows.CodeOf(err) != "already_approved" {
		t.Fatalf("second approval by bob: %v", err)
	}
	// A card drawn before the stage changed is stale.
	old := tk.Version
	tk = r.must(flows.Action{Actor: "carol", Ticket: "T-1", Event: flows.EvApprove, Version: tk.Version})
	if tk.Stage != "qa" || tk.Operator != "" {
		t.Fatalf("after two approvals: %s, operator %q (production does not skip qa; an approval that starts nothing executes nothing)", tk.Stage, tk.Operator)
	}
	if _, err := r.act(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvApprove, Version: old - 1}); flows.CodeOf(err) != "stale" {
		t.Fatalf("stale card: %v", err)
	}
	// A second ticket on the same service is locked out.
	if _, err := r.e.Create(r.ctx, "alice", "deploy", map[string]string{"service": "pay"}); flows.CodeOf(err) != "locked" {
		t.Fatalf("same service: %v", err)
	}
	if _, err := r.e.Create(r.ctx, "alice", "nope", nil); flows.CodeOf(err) != "unknown_flow" {
		t.Fatalf("unknown flow: %v", err)
	}
	if _, err := r.e.Create(r.ctx, "alice", "deploy", map[string]string{"env": "qa"}); flows.CodeOf(err) != "bad_fields" {
		t.Fatalf("bad fields: %v", err)
	}
	tk = r.must(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvReject, Comment: "not now"})
	if tk.Stage != flows.StageRejected || tk.Open || len(tk.Locks) != 0 || !r.notified(flows.NoticeRejected) {
		t.Fatalf("rejected: %+v", tk)
	}
	// The lock went with the reject.
	r.create("alice", "deploy", map[string]string{"service": "pay"})
}

// TestActionsWaitsRetryAndRollback drives a ticket through every machine
// event: skip, an action that fails transiently then for good, a retry,
// a wait that polls until true, a rollback that reverses the saga.
func TestActionsWaitsRetryAndRollback(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	r.x.script("run",
		flows.ExecResult{ExitCode: -1, Err: flows.Transient(errors.New("connection reset"))},
		flows.ExecResult{ExitCode: 2, Err: &flows.UserError{Message: "disk full", Hint: "free /var"}})
	tk := r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	if tk.Stage != "run" {
		t.Fatalf("dev skips qa: %s", tk.Stage)
	}
	r.run() // the transient failure is queued again after its backoff
	if tk = r.get("T-1"); tk.Stage != "run" {
		t.Fatalf("after a transient failure: %s", tk.Stage)
	}
	r.advance(time.Minute)
	tk = r.run()
	res := tk.Results["run"]
	if tk.Stage != flows.StageFailed || tk.FailedStage != "run" || res.Error != "disk full" || res.Hint != "free /var" || res.Attempt != 2 {
		t.Fatalf("failed: %s %+v", tk.Stage, res)
	}
	if !r.notified(flows.NoticeStepFailed) || !r.notified(flows.NoticeFailed) {
		t.Fatal("nobody heard of the failure")
	}
	if _, err := r.act(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvRetry}); flows.CodeOf(err) != "not_operator" {
		t.Fatalf("retry by erin: %v", err)
	}
	// The action now registers how to undo it; the wait is false once.
	r.x.script("run", flows.ExecResult{OK: true, Set: map[string]string{"commit": "abc"},
		Undo: []state.UndoStep{{What: "first", Values: map[string]string{"n": "1"}}, {What: "second", Values: map[string]string{"n": "2"}}}})
	r.x.script("check", flows.ExecResult{ExitCode: 1, Err: errors.New("not yet")}, flows.ExecResult{OK: true})
	tk = r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRetry})
	if tk.Stage != "run" {
		t.Fatalf("retry went to %s", tk.Stage)
	}
	tk = r.run()
	if tk.Stage != "check" || tk.Outputs["commit"] != "abc" || len(tk.Saga) != 1 {
		t.Fatalf("after the action: %s %v saga %v", tk.Stage, tk.Outputs, tk.Saga)
	}
	r.advance(time.Minute)
	tk = r.run()
	if tk.Stage != flows.StageDone || tk.Open || len(tk.Locks) != 0 {
		t.Fatalf("after the wait: %+v", tk)
	}
	if _, err := r.act(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvRollback}); flows.CodeOf(err) != "not_operator" {
		t.Fatalf("rollback by erin: %v", err)
	}
	tk = r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRollback})
	if tk.Stage != flows.StageRollingBack || len(tk.Locks) != 1 {
		t.Fatalf("rollback: %+v", tk)
	}
	tk = r.run()
	undo := r.x.last(state.JobUndo).Undo
	if len(undo) != 2 || undo[0].What != "second" || undo[1].What != "first" {
		t.Fatalf("the rollback got %+v, want the saga newest first", undo)
	}
	if tk.Stage != flows.StageRolledBack || !tk.Saga[0].Undone || !r.notified(flows.NoticeRolledBack) {
		t.Fatalf("rolled back: %s saga %+v", tk.Stage, tk.Saga)
	}
}

// TestRollbackThatFailsCanBeRetried: a failed rollback leaves the ticket
// failed at rolling_back; retry runs the rollback again, with the steps
// not yet undone.
func TestRollbackThatFailsCanBeRetried(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	r.x.script("run", flows.ExecResult{OK: true, Undo: []state.UndoStep{{What: "one"}}})
	r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	r.run()
	r.run()
	r.x.script("undo", flows.ExecResult{ExitCode: 1, Err: errors.New("target gone")}, flows.ExecResult{OK: true})
	r.must(flows.Action{Actor: "root", Ticket: "T-1", Event: flows.EvRollback})
	tk := r.run()
	if tk.Stage != flows.StageFailed || tk.FailedStage != flows.StageRollingBack || !r.notified(flows.NoticeRollbackFailed) {
		t.Fatalf("failed rollback: %s %s", tk.Stage, tk.FailedStage)
	}
	if tk = r.must(flows.Action{Actor: "alice", Ticket: "T-1", Event: flows.EvRetry}); tk.Stage != flows.StageRollingBack {
		t.Fatalf("retry of a rollback went to %s", tk.Stage)
	}
	if tk = r.run(); tk.Stage != flows.StageRolledBack || len(r.x.last(state.JobUndo).Undo) != 1 {
		t.Fatalf("retried rollback: %s", tk.Stage)
	}
}

// TestTimersRemindEscalateExpire: reminders go to the approvers, the
// escalation adds its role, and the stage expires, each once.
func TestTimersRemindEscalateExpire(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	r.advance(61 * time.Minute)
	if err := r.e.Tick(r.ctx); err != nil {
		t.Fatal(err)
	}
	tk := r.get("T-1")
	if tk.Reminders != 1 || !tk.Escalated || !slices.Contains(tk.WaitingRoles, "boss") || !r.notified(flows.NoticeEscalated) {
		t.Fatalf("after an hour: %+v", tk)
	}
	// The escalated role may now approve.
	if _, err := r.act(flows.Action{Actor: "boss", Ticket: "T-1", Event: flows.EvApprove, Version: tk.Version}); err != nil {
		t.Fatalf("boss: %v", err)
	}
	r2 := newRig(t)
	r2.create("alice", "deploy", map[string]string{"service": "pay"})
	for i := 0; i < 4; i++ {
		r2.advance(61 * time.Minute)
		if err := r2.e.Tick(r2.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if tk := r2.get("T-1"); tk.Stage != flows.StageExpired || tk.Open || !r2.notified(flows.NoticeExpired) {
		t.Fatalf("after four hours: %s", tk.Stage)
	}
}

// TestEditStartsTheStageOver: the requester edits a ticket waiting for
// approval; approvals start over, approvers hear it was edited.
func TestEditStartsTheStageOver(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay", "env": "prod"})
	tk := r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	if _, err := r.e.Edit(r.ctx, flows.Action{Actor: "bob", Ticket: "T-1"}, map[string]string{"env": "dev"}); flows.CodeOf(err) != "not_requester" {
		t.Fatalf("edit by bob: %v", err)
	}
	if _, err := r.e.Edit(r.ctx, flows.Action{Actor: "alice", Ticket: "T-1", Version: tk.Version - 1}, map[string]string{"env": "dev"}); flows.CodeOf(err) != "stale" {
		t.Fatalf("stale edit: %v", err)
	}
	if _, err := r.e.Edit(r.ctx, flows.Action{Actor: "alice", Ticket: "T-1"}, map[string]string{"env": "prod"}); flows.CodeOf(err) != "no_change" {
		t.Fatalf("no change: %v", err)
	}
	tk, err := r.e.Edit(r.ctx, flows.Action{Actor: "alice", Ticket: "T-1"}, map[string]string{"service": "pay2", "env": "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if tk.Stage != "review" || len(tk.Approvals) != 0 || tk.Title != "pay2" || !slices.Equal(tk.Locks, []string{"service:pay2"}) || !r.notified(flows.NoticeEdited) {
		t.Fatalf("edited: %+v", tk)
	}
	// The old service is free again.
	r.create("carol", "deploy", map[string]string{"service": "pay"})
}

// TestRedoGoesBackForApproval: an action that finds the approved plan out
// of date sends the ticket back to approval.
func TestRedoGoesBackForApproval(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	r.x.script("run", flows.ExecResult{ExitCode: 1, Redo: true, Err: errors.New("changed since the plan")})
	r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	tk := r.run()
	if tk.Stage != "review" || !strings.Contains(tk.Note, "changed since the plan") || !r.notified(flows.NoticeRedo) {
		t.Fatalf("redo: %s %q", tk.Stage, tk.Note)
	}
}

// TestRecoverSettlesInterruptedJobs: a job left running by a dead process
// is not repeated unless safe; its ticket fails with a retry prompt.
func TestRecoverSettlesInterruptedJobs(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	tk := r.get("T-1")
	id := fmt.Sprintf("T-1/%d", tk.StageVersion)
	if _, err := r.store.UpdateJob(r.ctx, id, func(j *state.Job) error { j.Status = state.JobRunning; j.Attempt = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Recover(r.ctx); err != nil {
		t.Fatal(err)
	}
	tk = r.get("T-1")
	if tk.Stage != flows.StageFailed || !strings.Contains(tk.Note, "/ops retry T-1") || !r.notified(flows.NoticeInterrupted) {
		t.Fatalf("interrupted: %s %q", tk.Stage, tk.Note)
	}
}

// TestCancelRunsTheCleanUp: cancel releases the locks and queues the
// flow's on_cancel clean-up, which reports when it is done.
func TestCancelRunsTheCleanUp(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	tk := r.must(flows.Action{Actor: "alice", Ticket: "T-1", Event: flows.EvCancel})
	if tk.Stage != flows.StageCancelled || len(tk.Locks) != 0 {
		t.Fatalf("cancelled: %+v", tk)
	}
	r.run()
	if r.x.last(state.JobCleanup).Ticket.ID != "T-1" || !r.notified(flows.NoticeCleanupDone) {
		t.Fatal("the clean-up did not run")
	}
}

// TestReleaseBatches: batches go out in order, a stale button cannot hit
// another batch, rollback goes newest first, and nothing releases after
// a rollback.
func TestReleaseBatches(t *testing.T) {
	r := newRig(t)
	r.create("alice", "rel", map[string]string{"batches": "z1;z2", "operators": "dave"})
	tk := r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	if tk.Stage != "ship" || len(tk.Batches) != 2 || !slices.Equal(tk.Batches[0].Targets, []string{"uat", "z1"}) {
		t.Fatalf("release stage: %+v", tk)
	}
	f, _ := r.e.Flow("rel")
	if o := f.Offers(tk); !slices.Equal(o, []flows.Offer{{Event: flows.EvRelease, Batch: 1}, {Event: flows.EvCancel}}) {
		t.Fatalf("offers %+v", o)
	}
	if _, err := r.act(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvRelease}); flows.CodeOf(err) != "not_operator" {
		t.Fatalf("release by bob: %v", err)
	}
	if _, err := r.act(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRelease, Batch: 2}); flows.CodeOf(err) != "stale" {
		t.Fatalf("batch 2 first: %v", err)
	}
	merged := func(target string) *state.Batch {
		return &state.Batch{Steps: []state.Step{{Target: target, Result: "merged", MergeSHA: "sha-" + target}}}
	}
	r.x.script("ship", flows.ExecResult{OK: true, Batch: merged("z1"), Undo: []state.UndoStep{{What: "z1", Values: map[string]string{"target": "z1"}}}},
		flows.ExecResult{ExitCode: 1, Err: &flows.ConflictError{Files: []string{"a.pp"}, Err: errors.New("conflict")}, Batch: merged("z2"),
			Undo: []state.UndoStep{{What: "z2", Values: map[string]string{"target": "z2"}}}})
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRelease, Batch: 1})
	if _, err := r.act(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRelease}); flows.CodeOf(err) != "busy" {
		t.Fatalf("release while a batch runs: %v", err)
	}
	tk = r.run()
	if tk.Batches[0].State != state.BatchSucceeded || tk.Stage != "ship" || !r.notified(flows.NoticeBatchDone) {
		t.Fatalf("batch 1: %+v", tk.Batches[0])
	}
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRelease})
	tk = r.run()
	if tk.Batches[1].State != state.BatchFailed || !slices.Equal(tk.Results["ship"].Files, []string{"a.pp"}) {
		t.Fatalf("batch 2: %+v %+v", tk.Batches[1], tk.Results["ship"])
	}
	if _, err := r.act(flows.Action{Actor: "alice", Ticket: "T-1", Event: flows.EvCancel}); flows.CodeOf(err) != "rollback_first" {
		t.Fatalf("cancel with batches in place: %v", err)
	}
	if _, err := r.act(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRollback, Batch: 1}); flows.CodeOf(err) != "stale" {
		t.Fatalf("rollback of batch 1 first: %v", err)
	}
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRollback, Batch: 2})
	r.x.script("revert", flows.ExecResult{OK: true, Batch: &state.Batch{Steps: []state.Step{{Target: "z2", Result: "reverted"}}}})
	tk = r.run()
	if in := r.x.last(state.JobRevert); len(in.Undo) != 1 || in.Undo[0].What != "z2" {
		t.Fatalf("the revert of batch 2 got %+v", in.Undo)
	}
	if tk.Batches[1].State != state.BatchRolledBack {
		t.Fatalf("after rollback: %+v", tk.Batches[1])
	}
	if _, err := r.act(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRelease}); flows.CodeOf(err) != "rolled_back" {
		t.Fatalf("release after a rollback: %v", err)
	}
}

// TestReleaseDoneWhenEveryBatchSucceeded.
func TestReleaseDoneWhenEveryBatchSucceeded(t *testing.T) {
	r := newRig(t)
	r.create("alice", "rel", map[string]string{"batches": "z1", "operators": "dave"})
	r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRelease})
	if tk := r.run(); tk.Stage != flows.StageDone || !r.notified(flows.NoticeDone) {
		t.Fatalf("one batch: %s", tk.Stage)
	}
	if _, err := r.e.Create(r.ctx, "alice", "rel", map[string]string{"batches": "uat", "operators": "dave"}); flows.CodeOf(err) != "bad_fields" {
		t.Fatalf("uat as a zone: %v", err)
	}
}

// TestWindowClosedFailsTheStep: an action whose next stage is outside its
// window fails there with the reason instead of running.
func TestWindowClosedFailsTheStep(t *testing.T) {
	f := &flows.Flow{Name: "w", Fields: []flows.Field{{Name: "from", Type: flows.TypeDateTime}, {Name: "to", Type: flows.TypeDateTime}},
		Stages: []flows.Stage{
			{Name: "prep", Kind: flows.KindAction, Executor: "fake"},
			{Name: "go", Kind: flows.KindAction, Executor: "fake", Window: &flows.Window{FromField: "from", ToField: "to"}},
		}}
	if err := f.Validate([]string{"fake"}); err != nil {
		t.Fatal(err)
	}
	r := newRig(t)
	r.e = flows.New(flows.Config{Store: r.store, Directory: r.e.Directory(), Flows: []*flows.Flow{f},
		Executors: map[string]flows.Executor{"fake": r.x}, Now: r.clock, Presenter: r.p})
	r.create("alice", "w", map[string]string{"from": "2026-05-10 20:00", "to": "2026-05-10 22:00"})
	tk := r.run()
	if tk.Stage != flows.StageFailed || tk.FailedStage != "go" || !strings.Contains(tk.Note, "window") {
		t.Fatalf("closed window: %s %s %q", tk.Stage, tk.FailedStage, tk.Note)
	}
}

// TestEveryStepQueuesOneCardUpdate: each transition queues one card
// update naming the ticket and the version it made; notices go only where
// the table's notices say.
func TestEveryStepQueuesOneCardUpdate(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	r.run()
	r.run()
	evs, err := r.store.Events(r.ctx, "T-1")
	if err != nil {
		t.Fatal(err)
	}
	n, err := r.store.Pending(r.ctx, r.clock().Add(time.Hour), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, x := range n {
		if x.Kind == state.NotifyCardUpdate {
			var u flows.CardUpdate
			if err := json.Unmarshal(x.Message, &u); err != nil || u.Ticket != "T-1" {
				t.Fatalf("card update %s: %v", x.Message, err)
			}
			versions = append(versions, u.Version)
			continue
		}
		var d drawn
		if err := json.Unmarshal(x.Message, &d); err != nil {
			t.Fatalf("stored %s: %v", x.Message, err)
		}
		if d.Kind == "notice" && d.Event == flows.NoticeApprovalNeeded && (x.User == "alice" || x.User == "") {
			t.Fatalf("approval notice to %q", x.User)
		}
	}
	if len(versions) != len(evs) || versions[len(versions)-1] != int64(len(evs)) {
		t.Fatalf("card updates for versions %v after %d transitions", versions, len(evs))
	}
}

// TestTableRowsAreEdges: one To per row, every stage named is one of the
// flow's or a built-in one, and the diagram draws the table.
func TestTableRowsAreEdges(t *testing.T) {
	for _, f := range testFlows(t) {
		names := []string{flows.StageSubmitted, flows.StageDone, flows.StageRejected, flows.StageCancelled, flows.StageExpired,
			flows.StageFailed, flows.StageRollingBack, flows.StageRolledBack}
		for _, st := range f.Stages {
			names = append(names, st.Name)
		}
		d := f.Mermaid()
		for _, row := range f.Table() {
			if !slices.Contains(names, row.From) || !slices.Contains(names, row.To) {
				t.Errorf("%s: row %s %s -> %s names an unknown stage", f.Name, row.Event, row.From, row.To)
			}
			if !strings.Contains(d, fmt.Sprintf("%s --> %s: %s", row.From, row.To, row.Event)) {
				t.Errorf("%s: the diagram lacks %s %s -> %s", f.Name, row.Event, row.From, row.To)
			}
			if slices.Contains(flows.PersonEvents, row.Event) && len(row.Checks) == 0 {
				t.Errorf("%s: a person's %s from %s has no guard", f.Name, row.Event, row.From)
			}
		}
	}
}

// deployVerify is a flow whose verification comes after the deploy: a
// reject there finds changes to undo.
func deployVerify(t *testing.T, undo string) *flows.Flow {
	f := &flows.Flow{Name: "dv", Title: "Deploy and verify", UndoOnStop: undo, Locks: []string{"service:{service}"},
		Fields: []flows.Field{{Name: "service", Required: true}},
		Stages: []flows.Stage{
			{Name: "go", Title: "运维确认 Ops go-ahead", Kind: flows.KindApproval, Roles: []string{"ops"}},
			{Name: "deploy", Title: "部署 Deploy", Kind: flows.KindAction, Executor: "fake"},
			{Name: "verify", Title: "生产验证 Verification", Kind: flows.KindApproval, Roles: []string{"qa"}},
		},
		Rollback: &flows.Rollback{Executor: "fake", Roles: []string{"ops"}}}
	if err := f.Validate([]string{"fake"}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (r *rig) with(f *flows.Flow) *rig {
	r.e = flows.New(flows.Config{Store: r.store, Directory: r.e.Directory(), Flows: []*flows.Flow{f},
		Executors: map[string]flows.Executor{"fake": r.x}, Now: r.clock, Presenter: r.p})
	return r
}

// TestRejectAfterChangesUndoesThem: the deploy succeeded and registered its
// undo; the verifier rejects; the rollback runs with those steps and the
// ticket ends rolled back, the operator still the deployer.
func TestRejectAfterChangesUndoesThem(t *testing.T) {
	r := newRig(t).with(deployVerify(t, ""))
	r.create("alice", "dv", map[string]string{"service": "pay"})
	r.x.script("deploy", flows.ExecResult{OK: true, Undo: []state.UndoStep{{What: "restore v1"}}})
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvApprove})
	tk := r.run()
	if tk.Stage != "verify" || tk.Operator != "dave" || !r.notified(flows.NoticeStagePassed) {
		t.Fatalf("after the deploy: %s operator %q", tk.Stage, tk.Operator)
	}
	tk = r.must(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvReject, Comment: "checkout returns 500"})
	if tk.Stage != flows.StageRollingBack || tk.Operator != "dave" || !strings.Contains(tk.Note, "checkout returns 500") || len(tk.Locks) != 1 {
		t.Fatalf("reject after the deploy: %s operator %q note %q locks %v", tk.Stage, tk.Operator, tk.Note, tk.Locks)
	}
	tk = r.run()
	if tk.Stage != flows.StageRolledBack || len(r.x.last(state.JobUndo).Undo) != 1 || !tk.Saga[0].Undone {
		t.Fatalf("after the undo: %s %+v", tk.Stage, tk.Saga)
	}
	evs, _ := r.store.Events(r.ctx, "T-1")
	var actors []string
	for _, ev := range evs {
		actors = append(actors, ev.Actor)
	}
	if !slices.Contains(actors, "erin") || !slices.Contains(actors, "dave") {
		t.Fatalf("history actors %v", actors)
	}
	// Before any change a reject just rejects.
	r2 := newRig(t).with(deployVerify(t, ""))
	r2.create("alice", "dv", map[string]string{"service": "pay"})
	if tk := r2.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvReject, Comment: "no"}); tk.Stage != flows.StageRejected {
		t.Fatalf("reject before changes: %s", tk.Stage)
	}
}

// TestCancelAfterAFailedStepUndoesWhatItDid: a failed deploy registered
// what it did before failing; cancel undoes it.
func TestCancelAfterAFailedStepUndoesWhatItDid(t *testing.T) {
	r := newRig(t).with(deployVerify(t, ""))
	r.create("alice", "dv", map[string]string{"service": "pay"})
	r.x.script("deploy", flows.ExecResult{ExitCode: 1, Err: errors.New("half done"), Undo: []state.UndoStep{{What: "half"}}})
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvApprove})
	if tk := r.run(); tk.Stage != flows.StageFailed {
		t.Fatalf("deploy: %s", tk.Stage)
	}
	if tk := r.must(flows.Action{Actor: "alice", Ticket: "T-1", Event: flows.EvCancel}); tk.Stage != flows.StageRollingBack {
		t.Fatalf("cancel after a partial deploy: %s", tk.Stage)
	}
	r.x.script("undo", flows.ExecResult{ExitCode: 1, Err: errors.New("cannot reach host")})
	if tk := r.run(); tk.Stage != flows.StageFailed || tk.FailedStage != flows.StageRollingBack || !r.notified(flows.NoticeRollbackFailed) {
		t.Fatalf("failed undo: %s %s", tk.Stage, tk.FailedStage)
	}
}

// TestUndoOnStopOffer: with undo_on_stop: offer the reject ends the ticket
// and the card offers the rollback, which runs with one press.
func TestUndoOnStopOffer(t *testing.T) {
	r := newRig(t).with(deployVerify(t, flows.UndoOffer))
	r.create("alice", "dv", map[string]string{"service": "pay"})
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvApprove})
	r.run()
	tk := r.must(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvReject, Comment: "500s"})
	f, _ := r.e.Flow("dv")
	if tk.Stage != flows.StageRejected || !slices.Contains(f.Offers(tk), flows.Offer{Event: flows.EvRollback}) {
		t.Fatalf("rejected: %s offers %v", tk.Stage, f.Offers(tk))
	}
	if _, err := r.act(flows.Action{Actor: "erin", Ticket: "T-1", Event: flows.EvRollback}); flows.CodeOf(err) != "not_operator" {
		t.Fatalf("rollback by erin: %v", err)
	}
	r.must(flows.Action{Actor: "dave", Ticket: "T-1", Event: flows.EvRollback})
	if tk := r.run(); tk.Stage != flows.StageRolledBack {
		t.Fatalf("offered rollback: %s", tk.Stage)
	}
}

// TestRequesterHearsProgressUnlessMuted.
func TestRequesterHearsProgressUnlessMuted(t *testing.T) {
	r := newRig(t)
	r.create("alice", "deploy", map[string]string{"service": "pay"})
	if _, err := r.e.Mute(r.ctx, "alice", "T-1", true); err != nil {
		t.Fatal(err)
	}
	r.must(flows.Action{Actor: "bob", Ticket: "T-1", Event: flows.EvApprove})
	if r.notified(flows.NoticeStagePassed) {
		t.Fatal("a muted requester heard a stage pass")
	}
	if _, err := r.e.Mute(r.ctx, "alice", "T-1", false); err != nil {
		t.Fatal(err)
	}
	r.run()
	if !r.notified(flows.NoticeStagePassed) {
		t.Fatal("the requester did not hear the step pass")
	}
}
