package flows

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"opsbot/state"
	"opsbot/templates"
)

// Executor runs an action or checks a wait condition. Run must honour ctx
// (its deadline is the stage timeout) and must not panic.
type Executor interface {
	Run(ctx context.Context, in ExecInput) ExecResult
}

// ExecInput is what an executor gets: the ticket, the stage's parameters
// and the attempt number (from 1). Kind is "action", "wait", "undo",
// "cleanup", or for a release stage "release" / "revert" of the batch
// whose index is Params["batch"].
type ExecInput struct {
	Ticket  state.Ticket
	Stage   string
	Kind    string
	Params  map[string]string
	Attempt int
}

// ExecResult is what an executor reports. Transient failures are retried
// with backoff up to the stage's max_attempts. Set holds values the action
// wants recorded on the ticket (e.g. the deployed commit), which later
// stages and the rollback receive.
type ExecResult struct {
	OK        bool
	ExitCode  int
	Output    string
	Err       string
	Transient bool
	Set       map[string]string
	// Batch is a release or revert job's batch with its steps recorded.
	Batch *state.Batch
	// Redo says the approved plan is out of date: the ticket goes back to
	// the stage's redo_from stage (a new dry run, then approval again).
	// Err says what changed.
	Redo bool
	// Audit lines are written to the audit log with the step's result:
	// what a destructive step did, target by target.
	Audit []AuditLine
}

// AuditLine is one thing a step did, for the audit log.
type AuditLine struct {
	Text   string
	Failed bool
}

// Config wires an Engine.
type Config struct {
	Store     *state.Store
	Directory *Directory
	Flows     []*Flow
	Executors map[string]Executor
	// Now is the clock; tests inject their own.
	Now func() time.Time
	Log *slog.Logger
	// Redact removes secrets from text before it is stored or shown.
	Redact func(string) string
	// Validators check fields across each other (flows name them).
	Validators map[string]Validator
}

// Engine applies events to tickets through their flow's transitions table.
type Engine struct {
	store *state.Store
	dir   *Directory
	flows map[string]*Flow
	names []string
	exec  map[string]Executor
	now   func() time.Time
	log   *slog.Logger
	clean func(string) string
	// validators and serial: see Validator.
	validators map[string]Validator
	serial     serial
	// jobs and outbox are poked after a commit that queued work.
	jobs   chan struct{}
	outbox chan struct{}
}

// New builds an engine. Flows must already be validated.
func New(cfg Config) *Engine {
	e := &Engine{store: cfg.Store, dir: cfg.Directory, flows: map[string]*Flow{}, exec: cfg.Executors,
		now: cfg.Now, log: cfg.Log, clean: cfg.Redact, validators: cfg.Validators,
		jobs: make(chan struct{}, 1), outbox: make(chan struct{}, 1)}
	if e.now == nil {
		e.now = time.Now
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.clean == nil {
		e.clean = func(s string) string { return s }
	}
	for _, f := range cfg.Flows {
		e.flows[f.Name] = f
		e.names = append(e.names, f.Name)
	}
	sort.Strings(e.names)
	return e
}

// Flow returns a flow by name.
func (e *Engine) Flow(name string) (*Flow, bool) {
	f, ok := e.flows[strings.ToLower(name)]
	return f, ok
}

// FlowNames lists the flows, sorted.
func (e *Engine) FlowNames() []string { return e.names }

// Directory returns the user directory.
func (e *Engine) Directory() *Directory { return e.dir }

// Store returns the state store.
func (e *Engine) Store() *state.Store { return e.store }

// Now returns the engine's clock reading.
func (e *Engine) Now() time.Time { return e.now() }

// OutboxSignal is poked whenever notifications were queued.
func (e *Engine) OutboxSignal() <-chan struct{} { return e.outbox }

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// step accumulates one transition's change.
type step struct {
	e     *Engine
	f     *Flow
	now   time.Time
	old   state.Ticket
	t     state.Ticket
	ch    state.Change
	actor string
	// notices are rendered by finish, once the ticket is in its new stage.
	notices []notice
	// progress events go to the ticket's thread where a platform has one.
	progress []string
}

func (e *Engine) newStep(f *Flow, cur state.Ticket, actor, event string) *step {
	t := cur
	t.Fields = cloneMap(cur.Fields)
	t.Results = cloneResults(cur.Results)
	t.Approvals = slices.Clone(cur.Approvals)
	t.WaitingRoles = slices.Clone(cur.WaitingRoles)
	t.Locks = slices.Clone(cur.Locks)
	t.Outputs = cloneMap(cur.Outputs)
	now := e.now()
	t.Updated = now
	return &step{e: e, f: f, now: now, old: cur, t: t, actor: actor,
		ch: state.Change{Event: state.Event{Type: event, Actor: actor, At: now, From: cur.Stage}}}
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func cloneResults(m map[string]state.Result) map[string]state.Result {
	if m == nil {
		return nil
	}
	out := make(map[string]state.Result, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// version is the ticket version this step writes.
func (s *step) version() int64 { return s.old.Version + 1 }

// finish renders the notifications from the ticket as it ends up and
// returns the change to write.
func (s *step) finish() (state.Change, error) {
	s.t.Version = s.version()
	s.ch.Ticket = s.t
	s.ch.Event.To = s.t.Stage
	s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: s.actor, Action: "transition " + s.ch.Event.Type,
		Ticket: s.t.ID, Args: s.old.Stage + " -> " + s.t.Stage, Result: "ok"})
	view := s.e.view(s.f, s.t, s.t.Version)
	for _, n := range s.notices {
		msg, err := templates.Render("notice", templates.NoticeView{Ticket: view, Event: n.event, Actor: s.actor,
			Comment: s.ch.Event.Comment, Roles: n.roles})
		if err != nil {
			return s.ch, err
		}
		raw, _ := json.Marshal(msg)
		for _, u := range n.users {
			s.ch.Notify = append(s.ch.Notify, state.Notification{User: u, Ticket: s.t.ID, Kind: "message",
				Message: raw, NextAt: s.now, Created: s.now})
		}
	}
	for _, ev := range s.progress {
		msg, err := templates.Render("notice", templates.NoticeView{Ticket: view, Event: ev, Actor: s.actor, Comment: s.ch.Event.Comment})
		if err != nil {
			return s.ch, err
		}
		raw, _ := json.Marshal(msg)
		s.ch.Notify = append(s.ch.Notify, state.Notification{Ticket: s.t.ID, Kind: "progress", Message: raw,
			NextAt: s.now, Created: s.now})
	}
	// Every transition redraws the ticket's cards wherever they were posted.
	card, err := templates.Render("ticket", view)
	if err != nil {
		return s.ch, err
	}
	raw, _ := json.Marshal(card)
	s.ch.Notify = append(s.ch.Notify, state.Notification{Ticket: s.t.ID, Kind: "card_update", Message: raw,
		NextAt: s.now, Created: s.now})
	return s.ch, nil
}

type notice struct {
	users []string
	event string
	roles []string
}

// enter moves the ticket into stage i (len(stages) means done), passing
// over stages whose skip_if matches.
func (s *step) enter(i int) error {
	for i < len(s.f.Stages) && s.f.Stages[i].SkipIf != nil && s.f.Stages[i].SkipIf.match(s.t.Fields) {
		if s.ch.Event.Data == nil {
			s.ch.Event.Data = map[string]string{}
		}
		s.ch.Event.Data["skipped"] = strings.TrimPrefix(s.ch.Event.Data["skipped"]+","+s.f.Stages[i].Name, ",")
		i++
	}
	if i >= len(s.f.Stages) {
		s.terminal(StageDone)
		return nil
	}
	st := &s.f.Stages[i]
	s.t.Stage = st.Name
	s.t.StageVersion = s.version()
	s.t.Open = true
	s.t.Approvals, s.t.WaitingRoles, s.t.Reminders, s.t.Escalated = nil, nil, 0, false
	s.t.FailedStage = ""
	switch st.Kind {
	case KindApproval:
		s.t.WaitingRoles = normRoles(st.Roles)
		if st.RemindEvery > 0 {
			s.timer(EvRemind, s.now.Add(st.RemindEvery.D()))
		}
		if st.ExpireAfter > 0 {
			s.timer(EvExpire, s.now.Add(st.ExpireAfter.D()))
		}
		s.notify(s.approvers(st.Roles), "approval_needed", st.Roles)
	case KindAction, KindWait:
		if st.Window != nil {
			if ok, why := st.Window.check(s.now, s.t.Fields); !ok {
				return Userf("window", fmt.Sprintf("/ops cancel %s", s.t.ID), "%s 不能进入 %s: %s · %s cannot start %s: outside its time window", s.t.ID, st.Title, why, s.t.ID, st.Title)
			}
		}
		job := state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID, Stage: st.Name,
			StageVersion: s.version(), Kind: st.Kind,
			Executor: st.Executor, Params: st.Params, Status: state.JobQueued, MaxAttempts: st.MaxAttempts,
			SafeToRepeat: st.SafeToRepeat, NextAt: s.now}
		if st.Kind == KindWait {
			job.Deadline = s.now.Add(st.Timeout.D())
		}
		s.ch.Jobs = append(s.ch.Jobs, job)
		s.t.Note = ""
		s.progress = append(s.progress, "step_started")
	case KindRelease:
		if len(s.t.Batches) == 0 {
			b, err := ParseBatches(st, s.t.Fields[param(st, "batches_field", "batches")])
			if err != nil {
				return Userf("bad_fields", "", "%v", err)
			}
			s.t.Batches = b
		}
		s.notify(s.operators(st), "release_ready", nil)
	}
	return nil
}

// terminal ends the ticket in stage; failed keeps its locks so that nobody
// else touches the resource before someone retries, rolls back or cancels.
func (s *step) terminal(stage string) {
	if st, _ := s.f.Stage(s.old.Stage); st != nil && st.Kind != KindApproval {
		s.ch.CancelJobs = append(s.ch.CancelJobs, fmt.Sprintf("%s/%d", s.t.ID, s.old.StageVersion))
	}
	s.t.Stage = stage
	s.t.StageVersion = s.version()
	s.t.WaitingRoles, s.t.Approvals = nil, nil
	s.t.Open = stage == StageFailed
	if !s.t.Open {
		s.ch.Release = append(s.ch.Release, s.t.Locks...)
		s.t.Locks = nil
	}
	event := stage
	switch stage {
	case StageFailed:
		if s.ch.Event.Type == EvInterrupt {
			event = "interrupted"
		}
		if s.t.FailedStage == StageRollingBack {
			event = "rollback_failed"
		}
	case StageRolledBack:
		event = "rolled_back"
	}
	s.notify(s.resultAudience(), event, nil)
}

func (s *step) timer(kind string, due time.Time) {
	s.ch.SetTimers = append(s.ch.SetTimers, state.Timer{Due: due, Ticket: s.t.ID, Kind: kind, Stage: s.t.Stage, StageVersion: s.t.StageVersion})
}

// approvers are the holders of roles, without the requester and without
// those who already approved this stage.
func (s *step) approvers(roles []string) []string {
	var out []string
	for _, u := range s.e.dir.Members(roles...) {
		if u != s.t.Requester && !approvedBy(s.t, u) {
			out = append(out, u)
		}
	}
	return out
}

func (s *step) resultAudience() []string {
	out := []string{s.t.Requester}
	if s.t.Operator != "" && s.t.Operator != s.t.Requester {
		out = append(out, s.t.Operator)
	}
	if s.actor != "" && s.actor != "opsbot" && !slices.Contains(out, s.actor) {
		out = append(out, s.actor)
	}
	return out
}

func (s *step) notify(users []string, event string, roles []string) {
	if len(users) > 0 {
		s.notices = append(s.notices, notice{users: users, event: event, roles: roles})
	}
}

func approvedBy(t state.Ticket, user string) bool {
	return slices.ContainsFunc(t.Approvals, func(a state.Approval) bool { return a.User == user })
}

func normRoles(roles []string) []string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = state.NormName(r)
	}
	return out
}

// commit applies a step-building function to a ticket in one transaction
// and wakes the workers that have new work.
func (e *Engine) commit(ctx context.Context, id string, fn func(t state.Ticket) (state.Change, error)) (state.Ticket, error) {
	t, err := e.store.Transition(ctx, id, fn)
	var le *state.LockedError
	if errors.As(err, &le) {
		return t, lockedError(le)
	}
	if errors.Is(err, state.ErrNotFound) {
		return t, Userf("no_ticket", "/ops list open", "没有工单 %s · there is no ticket %s", id, id)
	}
	if err != nil {
		return t, err
	}
	poke(e.jobs)
	poke(e.outbox)
	return t, nil
}

// Create opens a ticket of flow for actor with fields (already parsed into
// names and raw values), checks the fields and locks, and enters the first
// stage.
// The audit entries, if any, are written in the same transaction as the
// ticket (with the ticket's id filled in), so a successful command costs
// one commit.
func (e *Engine) Create(ctx context.Context, actor, flowName string, fields map[string]string, audit ...state.AuditEntry) (state.Ticket, error) {
	f, ok := e.Flow(flowName)
	if !ok {
		return state.Ticket{}, Userf("unknown_flow", "flows: "+strings.Join(e.names, ", ")+suggest(flowName, e.names),
			"没有流程 %s · unknown flow %q", flowName, flowName)
	}
	actor = state.NormName(actor)
	if len(f.RequesterRoles) > 0 && !e.dir.HasRole(actor, f.RequesterRoles...) && !e.dir.HasRole(actor, AdminRole) {
		return state.Ticket{}, Userf("not_requester", "", "%s 需要角色 %s 才能提交 · only holders of %s may open %s tickets",
			f.Name, strings.Join(f.RequesterRoles, ", "), strings.Join(f.RequesterRoles, ", "), f.Name)
	}
	clean, err := f.CheckFields(fields)
	if err != nil {
		return state.Ticket{}, err
	}
	if err := f.checkRelease(clean); err != nil {
		return state.Ticket{}, err
	}
	if f.Validator != "" {
		defer e.serial.lock(f.Name)()
		if clean, err = e.validate(ctx, f, actor, clean, nil); err != nil {
			return state.Ticket{}, err
		}
	}
	for k, v := range clean {
		clean[k] = e.clean(v)
	}
	var locks []string
	for _, l := range f.Locks {
		r := Expand(l, clean)
		locks = append(locks, r)
		// Refuse early, before a ticket number is taken.
		if h, err := e.store.LockHolder(ctx, r); err != nil {
			return state.Ticket{}, err
		} else if h != "" {
			return state.Ticket{}, lockedError(&state.LockedError{Resource: r, Holder: h})
		}
	}
	t, err := e.store.Create(ctx, func(id string) (state.Change, error) {
		now := e.now()
		cur := state.Ticket{ID: id, Flow: f.Name, Stage: StageSubmitted, Requester: actor, Fields: clean,
			Locks: locks, Created: now, Updated: now, Open: true}
		cur.Title = strings.TrimSpace(Expand(f.TitleTemplate, clean))
		if cur.Title == "" {
			cur.Title = f.Title
		}
		s := e.newStep(f, cur, actor, EvSubmit)
		s.old.Version = 0
		s.ch.Acquire = locks
		s.ch.Event.Data = map[string]string{}
		for k, v := range clean {
			s.ch.Event.Data[k] = v
		}
		if err := s.enter(0); err != nil {
			return state.Change{}, err
		}
		ch, err := s.finish()
		for _, a := range audit {
			a.Ticket = id
			ch.Audit = append(ch.Audit, a)
		}
		return ch, err
	})
	var le *state.LockedError
	if errors.As(err, &le) {
		return t, lockedError(le)
	}
	if err != nil {
		return t, err
	}
	poke(e.jobs)
	poke(e.outbox)
	return t, nil
}

func lockedError(le *state.LockedError) error {
	return Userf("locked", fmt.Sprintf("/ops show %s", le.Holder),
		"%s 正被工单 %s 占用 · %s is locked by ticket %s until it ends or is cancelled", le.Resource, le.Holder, le.Resource, le.Holder)
}

// Action is a person's event on a ticket. Version is the ticket version
// the person saw (from a card button); 0 means "as it is now".
type Action struct {
	Actor   string
	Ticket  string
	Event   string
	Version int64
	Comment string
	// Audit entries are written in the same transaction when the action
	// applies.
	Audit []state.AuditEntry
}

// Act applies a person's action: approve, reject, cancel, retry or
// rollback. Every refusal is a *UserError saying why and what to do.
func (e *Engine) Act(ctx context.Context, a Action) (state.Ticket, error) {
	a.Actor = state.NormName(a.Actor)
	id := a.Ticket
	if n, ok := state.ParseID(id); ok {
		id = state.FormatID(n)
	}
	return e.commit(ctx, id, func(cur state.Ticket) (state.Change, error) {
		f, ok := e.flows[cur.Flow]
		if !ok {
			return state.Change{}, fmt.Errorf("ticket %s has unknown flow %s", cur.ID, cur.Flow)
		}
		// A card is stale once the ticket left the stage it was drawn in.
		if a.Version > 0 && a.Version != cur.Version && cur.StageVersion > a.Version {
			return state.Change{}, Userf("stale", fmt.Sprintf("/ops show %s", cur.ID),
				"卡片已过期：%s 现在是 %s · this card is out of date: %s is now %s (v%d)",
				cur.ID, templates.StageLabel(cur.Stage), cur.ID, cur.Stage, cur.Version)
		}
		if !f.allows(a.Event, cur.Stage) {
			return state.Change{}, Userf("not_allowed", fmt.Sprintf("/ops show %s", cur.ID),
				"%s 处于 %s，不能%s · %s is %s: %s is not possible now", cur.ID, templates.StageLabel(cur.Stage), verbZH(a.Event), cur.ID, cur.Stage, a.Event)
		}
		s := e.newStep(f, cur, a.Actor, a.Event)
		s.ch.Event.Comment = e.clean(a.Comment)
		var err error
		switch a.Event {
		case EvApprove, EvReject:
			err = e.decide(s, a)
		case EvCancel:
			err = e.cancel(s)
		case EvRetry:
			err = e.retry(s)
		case EvRelease:
			err = e.release(s, a)
		case EvRollback:
			if st, _ := f.Stage(cur.Stage); st != nil && st.Kind == KindRelease {
				err = e.rollbackBatch(s, a)
			} else {
				err = e.rollback(s)
			}
		default:
			err = Userf("not_allowed", "/ops help", "不支持的操作 %s · %s is not an action people take", a.Event, a.Event)
		}
		if err != nil {
			return state.Change{}, err
		}
		ch, err := s.finish()
		ch.Audit = append(ch.Audit, a.Audit...)
		return ch, err
	})
}

func verbZH(ev string) string {
	switch ev {
	case EvApprove:
		return "同意 approve"
	case EvReject:
		return "驳回 reject"
	case EvCancel:
		return "取消 cancel"
	case EvRetry:
		return "重试 retry"
	case EvRollback:
		return "回滚 roll back"
	}
	return ev
}

func (e *Engine) decide(s *step, a Action) error {
	st, i := s.f.Stage(s.t.Stage)
	t := s.t
	if a.Actor == t.Requester {
		return Userf("self_approval", "请等待 "+strings.Join(t.WaitingRoles, "/")+" 审批 · wait for a holder of "+strings.Join(t.WaitingRoles, ", "),
			"不能审批自己的工单 %s · you cannot approve or reject your own ticket %s", t.ID, t.ID)
	}
	if !e.dir.HasRole(a.Actor, t.WaitingRoles...) {
		holders := strings.Join(s.approvers(t.WaitingRoles), ", ")
		if holders == "" {
			holders = "nobody yet: ask an admin to /ops role grant " + t.WaitingRoles[0] + " <user>"
		}
		return Userf("not_role_holder", "可审批 can approve: "+holders,
			"%s 需要角色 %s 审批，你没有该角色 · %s needs a holder of %s; you are not one",
			t.ID, strings.Join(t.WaitingRoles, "/"), t.ID, strings.Join(t.WaitingRoles, ", "))
	}
	if approvedBy(t, a.Actor) {
		return Userf("already_approved", fmt.Sprintf("%d/%d approvals", len(t.Approvals), st.Need(t.Fields)),
			"你已同意过 %s · you already approved %s; it needs approvals from different people", t.ID, t.ID)
	}
	if a.Event == EvReject {
		if strings.TrimSpace(a.Comment) == "" {
			return Userf("reason_required", fmt.Sprintf("/ops reject %s 原因 reason", t.ID), "驳回需要原因 · a rejection needs a reason")
		}
		s.t.Operator = a.Actor
		s.terminal(StageRejected)
		return nil
	}
	s.t.Approvals = append(s.t.Approvals, state.Approval{User: a.Actor, At: s.now, Comment: s.ch.Event.Comment})
	if len(s.t.Approvals) < st.Need(s.t.Fields) {
		s.notify([]string{t.Requester}, "approved", nil)
		return nil
	}
	s.t.Operator = a.Actor
	return s.enter(i + 1)
}

func (e *Engine) mayOperate(f *Flow, t state.Ticket, actor string) bool {
	return actor == t.Requester || e.dir.HasRole(actor, AdminRole) || e.dir.HasRole(actor, f.Operators...)
}

func (e *Engine) cancel(s *step) error {
	st, _ := s.f.Stage(s.t.Stage)
	isOperator := st != nil && st.Kind == KindRelease && slices.Contains(s.operators(st), s.actor)
	if s.actor != s.t.Requester && !isOperator && !e.dir.HasRole(s.actor, AdminRole) {
		return Userf("not_requester", fmt.Sprintf("ask %s", s.t.Requester),
			"只有申请人 %s 或管理员可以取消 %s · only the requester %s or an admin can cancel %s", s.t.Requester, s.t.ID, s.t.Requester, s.t.ID)
	}
	if st != nil && st.Kind == KindRelease {
		if err := cancellable(s.t); err != nil {
			return err
		}
	}
	s.t.Operator = s.actor
	s.terminal(StageCancelled)
	if oc := s.f.OnCancel; oc != nil {
		s.ch.Jobs = append(s.ch.Jobs, state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID, Stage: StageCancelled,
			StageVersion: s.t.StageVersion, Kind: "cleanup", Executor: oc.Executor, Params: oc.Params, Status: state.JobQueued,
			MaxAttempts: 3, SafeToRepeat: true, NextAt: s.now})
	}
	return nil
}

func (e *Engine) retry(s *step) error {
	if !e.mayOperate(s.f, s.t, s.actor) {
		return Userf("not_operator", "", "只有申请人、操作员或管理员可以重试 · only the requester, an operator (%s) or an admin can retry %s",
			strings.Join(s.f.Operators, ", "), s.t.ID)
	}
	s.t.Operator = s.actor
	if s.t.FailedStage == StageRollingBack {
		return e.startRollback(s)
	}
	_, i := s.f.Stage(s.t.FailedStage)
	if i < 0 {
		return Userf("not_allowed", "", "%s 没有可重试的步骤 · %s has no failed step to retry", s.t.ID, s.t.ID)
	}
	failed := s.t.FailedStage
	if err := s.enter(i); err != nil {
		return err
	}
	s.t.FailedStage = ""
	s.ch.Event.Data = map[string]string{"stage": failed}
	return nil
}

func (e *Engine) rollback(s *step) error {
	rb := s.f.Rollback
	if !e.dir.HasRole(s.actor, append(slices.Clone(rb.Roles), AdminRole)...) {
		return Userf("not_operator", "可回滚 can roll back: "+strings.Join(e.dir.Members(rb.Roles...), ", "),
			"只有 %s 角色可以回滚 · only holders of %s can roll back %s", strings.Join(rb.Roles, "/"), strings.Join(rb.Roles, ", "), s.t.ID)
	}
	s.t.Operator = s.actor
	return e.startRollback(s)
}

func (e *Engine) startRollback(s *step) error {
	rb := s.f.Rollback
	// Take the locks again: the resource must not be changed by anyone else
	// while it is put back.
	if len(s.t.Locks) == 0 {
		for _, l := range s.f.Locks {
			s.t.Locks = append(s.t.Locks, Expand(l, s.t.Fields))
		}
		s.ch.Acquire = s.t.Locks
	}
	s.t.Stage = StageRollingBack
	s.t.StageVersion = s.version()
	s.t.Open = true
	s.t.FailedStage = ""
	s.ch.Jobs = append(s.ch.Jobs, state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID,
		Stage: StageRollingBack, StageVersion: s.version(), Kind: "undo", Executor: rb.Executor, Params: rb.Params, Status: state.JobQueued,
		MaxAttempts: 1, NextAt: s.now})
	s.notify(s.resultAudience(), "rollback_started", nil)
	return nil
}

// Card renders a ticket's card with the buttons its stage allows.
func (e *Engine) Card(f *Flow, t state.Ticket) templates.Message {
	return templates.MustRender("ticket", e.view(f, t, t.Version))
}

// CardFor renders a ticket's card, looking its flow up.
func (e *Engine) CardFor(t state.Ticket) templates.Message {
	f, ok := e.flows[t.Flow]
	if !ok {
		return templates.MustRender("info", templates.InfoView{Level: "warning", Title: t.ID + " (unknown flow " + t.Flow + ")"})
	}
	return e.Card(f, t)
}

// View builds a ticket's view for templates.
func (e *Engine) View(t state.Ticket) templates.TicketView {
	f, ok := e.flows[t.Flow]
	if !ok {
		return templates.TicketView{ID: t.ID, Flow: t.Flow, FlowTitle: t.Flow, Title: t.Title, Stage: t.Stage, StageTitle: t.Stage, Ended: Ended(t.Stage)}
	}
	return e.view(f, t, t.Version)
}

func (e *Engine) view(f *Flow, t state.Ticket, version int64) templates.TicketView {
	v := templates.TicketView{ID: t.ID, Flow: f.Name, FlowTitle: f.Title, Title: t.Title, Stage: t.Stage,
		StageTitle: t.Stage, Open: t.Open, Ended: Ended(t.Stage), Version: version, StageKey: fmt.Sprintf("%s@%d", t.Stage, t.StageVersion), Requester: t.Requester, Operator: t.Operator,
		Waiting: t.WaitingRoles, Note: t.Note, Created: t.Created, Updated: t.Updated}
	st, _ := f.Stage(t.Stage)
	if st != nil {
		v.StageTitle = st.Title
		if st.Kind == KindApproval {
			v.Need, v.Have = st.Need(t.Fields), len(t.Approvals)
		}
		if st.Kind != KindApproval {
			v.Note = strings.TrimSpace("⏳ 执行中 running " + st.Executor + "\n" + t.Note)
		}
	}
	for _, fd := range f.Fields {
		val := t.Fields[fd.Name]
		if val == "" && fd.Computed {
			val = t.Outputs[fd.Name] // computed by an executor (a dry run's plan)
		}
		if val != "" {
			v.Fields = append(v.Fields, templates.Field{Label: fd.Label, Value: val})
		}
	}
	for _, a := range t.Approvals {
		v.Approvals = append(v.Approvals, templates.ApprovalView{User: a.User, At: a.At, Comment: a.Comment})
	}
	last := t.FailedStage
	if last == "" && !t.Open {
		// The most recent result explains a closed ticket.
		var at time.Time
		for name, r := range t.Results {
			if r.Ended.After(at) {
				last, at = name, r.Ended
			}
		}
	}
	if r, ok := t.Results[last]; ok {
		v.Result = &templates.ResultView{Stage: last, OK: r.OK, ExitCode: r.ExitCode, Output: r.Output, Error: r.Error, Attempt: r.Attempt}
	}
	btn := func(label, event, style string) templates.Button {
		return templates.Button{Label: label, Value: fmt.Sprintf("/ops %s %s#%d", event, t.ID, version), Style: style}
	}
	if st != nil && st.Kind == KindRelease {
		v.Fields = append(v.Fields, batchFields(st, t)...)
		v.Buttons = releaseButtons(t, version)
		v.Note = strings.TrimPrefix(v.Note, "⏳ 执行中 running "+st.Executor)
		v.Note = strings.TrimSpace(v.Note)
		return v
	}
	switch {
	case st != nil && st.Kind == KindApproval:
		v.Buttons = []templates.Button{btn("同意 Approve", EvApprove, "primary"), btn("驳回 Reject", EvReject, "danger"),
			btn("取消 Cancel", EvCancel, "")}
	case st != nil && st.Kind == KindWait:
		v.Buttons = []templates.Button{btn("取消 Cancel", EvCancel, "")}
	case t.Stage == StageFailed:
		v.Buttons = []templates.Button{btn("重试 Retry", EvRetry, "primary")}
		if f.Rollback != nil {
			v.Buttons = append(v.Buttons, btn("回滚 Rollback", EvRollback, "danger"))
		}
		v.Buttons = append(v.Buttons, btn("取消 Cancel", EvCancel, ""))
	case t.Stage == StageDone && f.Rollback != nil:
		v.Buttons = []templates.Button{btn("回滚 Rollback", EvRollback, "danger")}
	}
	return v
}
