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
	"sync/atomic"
	"time"

	"opsbot/state"
)

// Executor runs an action or checks a wait condition. Run must honour ctx
// (its deadline is the stage timeout) and must not panic.
type Executor interface {
	Run(ctx context.Context, in ExecInput) ExecResult
}

// ExecInput is what an executor gets: the ticket, the stage's parameters
// and the attempt number (from 1). Kind says what the job does; for a
// batch release it is release or revert of the batch whose index is
// Params["batch"].
type ExecInput struct {
	Ticket  state.Ticket
	Stage   string
	Kind    state.JobKind
	Params  map[string]string
	Attempt int
	// Undo is what the side effects to reverse registered, newest first:
	// for the flow's rollback every step of the ticket not undone yet, for
	// a batch revert the steps of that batch's release.
	Undo []state.UndoStep
}

// ExecResult is what an executor reports. Err keeps its type: a
// *UserError (what to fix, with a hint), a transient error (Transient;
// retried with backoff up to the stage's max_attempts) or a
// *ConflictError naming the files. Set holds values the action wants
// recorded on the ticket (e.g. the deployed commit), which later stages
// receive.
type ExecResult struct {
	OK       bool
	ExitCode int
	Output   string
	Err      error
	Set      map[string]string
	// Undo registers how to reverse what this run changed, one step per
	// side effect, in the order they were made (saga style): kept on the
	// job and the ticket, and handed to the rollback in reverse order.
	// A failed run registers the steps it made before it failed.
	Undo []state.UndoStep
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

// Presenter words what happened to a ticket. The engine calls it inside a
// transition, with the ticket as it ends up, and stores what it returns in
// the outbox: notices to people or to the ticket's thread, which tell of
// that moment. The ticket's card is not drawn here: every transition
// queues a card update that names the ticket and its version, and the
// outbox draws the card as the ticket is when it is delivered, so a late
// or retried update never draws an older state over a newer one. The
// engine never reads what the presenter returns.
type Presenter interface {
	Notice(f *Flow, t state.Ticket, n Notice) (json.RawMessage, error)
}

// CardUpdate is what a card update notification carries: which ticket to
// redraw, and the version that asked for it.
type CardUpdate struct {
	Ticket  string `json:"ticket"`
	Version int64  `json:"version"`
}

// Notice is what happened, for the presenter to word.
type Notice struct {
	Event   NoticeEvent
	Actor   string
	Comment string
	// Roles are the roles the notice is addressed as (approvals needed).
	Roles []string
	// Stage is the title of the stage a stage_passed notice is about.
	Stage string
	// Personal says the notice goes to people directly: its card offers
	// Offers, the actions they may take, not every action of the stage.
	Personal bool
	Offers   []Offer
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
	// Presenter draws cards and notices; required.
	Presenter Presenter
	// Replicas says which processes share the state; nil: this one only.
	Replicas Replicas
	// Observer hears what happened, for metrics; nil: nobody listens.
	Observer Observer
	// DutyWiden is when an approval told only to the people on duty is
	// told to the whole role, for a stage without remind_every (default
	// 30 minutes).
	DutyWiden time.Duration
}

// Observer hears the engine's outcomes (the bot's metrics). Its methods
// must be quick and must not fail.
type Observer interface {
	// Transition: a ticket of flow moved from stage from (of kind
	// fromKind, entered waited ago; negative when not known) to stage to
	// on event.
	Transition(flow, from, fromKind, to, event string, waited time.Duration)
	// Job: a job of executor ended with result (succeeded, failed,
	// interrupted, retried) after took.
	Job(executor, result string, took time.Duration)
}

type noObserver struct{}

func (noObserver) Transition(flow, from, fromKind, to, event string, waited time.Duration) {}
func (noObserver) Job(executor, result string, took time.Duration)                         {}

// Replicas is what the engine knows of the processes sharing its state:
// its own name, which it writes on each job it claims, and whether
// another is alive (holds its lease).
type Replicas interface {
	Self() string
	Alive(ctx context.Context, id string) (bool, error)
}

// single is the only process of a state (bbolt): nobody else is alive.
type single struct{}

func (single) Self() string                                       { return "" }
func (single) Alive(ctx context.Context, id string) (bool, error) { return false, nil }

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
	present    Presenter
	// refreshes says some flow looks fields up again (Flow.Refresh); when
	// none does, Refresh reads nothing.
	refreshes bool
	// jobs and outbox are poked after a commit that queued work.
	jobs     chan struct{}
	outbox   chan struct{}
	replicas Replicas
	observe  Observer
	// cal is the calendar as last read (Calendar); dutyWiden is when a
	// notice told only the people on duty goes to the whole role, for a
	// stage without reminders of its own.
	cal       atomic.Pointer[state.Calendar]
	dutyWiden time.Duration
}

// New builds an engine. Flows must already be validated.
func New(cfg Config) *Engine {
	e := &Engine{store: cfg.Store, dir: cfg.Directory, flows: map[string]*Flow{}, exec: cfg.Executors,
		now: cfg.Now, log: cfg.Log, clean: cfg.Redact, validators: cfg.Validators, present: cfg.Presenter,
		jobs: make(chan struct{}, 1), outbox: make(chan struct{}, 1), replicas: cfg.Replicas, dutyWiden: cfg.DutyWiden}
	if e.dutyWiden <= 0 {
		e.dutyWiden = 30 * time.Minute
	}
	if e.replicas == nil {
		e.replicas = single{}
	}
	if e.observe = cfg.Observer; e.observe == nil {
		e.observe = noObserver{}
	}
	if e.present == nil {
		panic("flows.New: a Presenter is required")
	}
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
		e.refreshes = e.refreshes || len(f.Refresh) > 0
	}
	sort.Strings(e.names)
	return e
}

// Flow returns a flow by name, or by its title as people say it: the
// whole title ("软件上线 Software go-live"), its Chinese part ("软件上线") or
// its English part ("software go-live").
func (e *Engine) Flow(name string) (*Flow, bool) {
	if f, ok := e.flows[strings.ToLower(name)]; ok {
		return f, true
	}
	name = strings.TrimSpace(name)
	if name == "" {
		return nil, false
	}
	for _, n := range e.names {
		f := e.flows[n]
		zh, en, _ := strings.Cut(f.Title, " ")
		if strings.EqualFold(f.Title, name) || zh == name || strings.EqualFold(en, name) {
			return f, true
		}
	}
	return nil, false
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
	// event is the table's event this step applies.
	event Event
	// notices are rendered by finish, once the ticket is in its new stage.
	notices []notice
	// progress events go to the ticket's thread where a platform has one.
	progress []NoticeEvent
	// extra are notices already rendered (a step's own result).
	extra []state.Notification
	// cal is the calendar read for a person's step (freezes decide);
	// nil: the cached one routes notices and nothing is refused.
	cal *state.Calendar
	// actorLabel names the actor in notices when not just by name
	// ("bob for libo").
	actorLabel string
}

func (e *Engine) newStep(f *Flow, cur state.Ticket, actor string, event Event) *step {
	t := cur
	t.Fields = cloneMap(cur.Fields)
	t.Results = cloneResults(cur.Results)
	t.Approvals = slices.Clone(cur.Approvals)
	t.WaitingRoles = slices.Clone(cur.WaitingRoles)
	t.Locks = slices.Clone(cur.Locks)
	t.Outputs = cloneMap(cur.Outputs)
	t.Saga = slices.Clone(cur.Saga)
	t.Offered = slices.Clone(cur.Offered)
	if cur.Exception != nil {
		ex := *cur.Exception
		t.Exception = &ex
	}
	now := e.now()
	t.Updated = now
	return &step{e: e, f: f, now: now, old: cur, t: t, actor: actor, event: event,
		ch: state.Change{Event: state.Event{Type: string(event), Actor: actor, At: now, From: cur.Stage}}}
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

func (s *step) label() string {
	if s.actorLabel != "" {
		return s.actorLabel
	}
	return s.actor
}

// version is the ticket version this step writes.
func (s *step) version() int64 { return s.old.Version + 1 }

// finish checks the step against the flow's transitions table, renders
// the notifications from the ticket as it ends up and returns the change
// to write.
func (s *step) finish() (state.Change, error) {
	if s.t.Stage != s.old.Stage || s.event == EvSubmit {
		if !s.f.leads(s.event, s.old.Stage, s.t.Stage) {
			return s.ch, fmt.Errorf("flow %s: %s took %s from %s to %s, which its transitions table does not list",
				s.f.Name, s.event, s.t.ID, s.old.Stage, s.t.Stage)
		}
	} else if !s.f.allows(s.event, s.old.Stage) {
		return s.ch, fmt.Errorf("flow %s: %s is not in the transitions table of stage %s", s.f.Name, s.event, s.old.Stage)
	}
	s.t.Version = s.version()
	s.ch.Ticket = s.t
	s.ch.Event.To = s.t.Stage
	s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: s.actor, Action: "transition " + s.ch.Event.Type,
		Ticket: s.t.ID, Args: s.old.Stage + " -> " + s.t.Stage, Result: "ok", Version: s.t.Version})
	p := s.e.present
	s.ch.Notify = append(s.ch.Notify, s.extra...)
	for _, n := range s.notices {
		// Each person's card offers what that person may do: drawn once
		// per set of actions, not once per person.
		drawn := map[string]json.RawMessage{}
		for _, u := range n.users {
			offers := s.e.OffersFor(s.f, s.t, u)
			key := fmt.Sprint(offers)
			raw, ok := drawn[key]
			if !ok {
				var err error
				raw, err = p.Notice(s.f, s.t, Notice{Event: n.event, Actor: s.label(), Comment: s.ch.Event.Comment, Roles: n.roles,
					Stage: n.stage, Personal: true, Offers: offers})
				if err != nil {
					return s.ch, err
				}
				drawn[key] = raw
			}
			s.ch.Notify = append(s.ch.Notify, state.Notification{User: u, Ticket: s.t.ID, Kind: state.NotifyMessage,
				Message: raw, NextAt: s.now, Created: s.now})
		}
	}
	for _, ev := range s.progress {
		raw, err := p.Notice(s.f, s.t, Notice{Event: ev, Actor: s.label(), Comment: s.ch.Event.Comment})
		if err != nil {
			return s.ch, err
		}
		s.ch.Notify = append(s.ch.Notify, state.Notification{Ticket: s.t.ID, Kind: state.NotifyProgress, Message: raw,
			NextAt: s.now, Created: s.now})
	}
	// Every transition redraws the ticket's cards wherever they were posted.
	raw, err := json.Marshal(CardUpdate{Ticket: s.t.ID, Version: s.t.Version})
	if err != nil {
		return s.ch, err
	}
	s.ch.Notify = append(s.ch.Notify, state.Notification{Ticket: s.t.ID, Kind: state.NotifyCardUpdate, Message: raw,
		NextAt: s.now, Created: s.now})
	return s.ch, nil
}

type notice struct {
	users []string
	event NoticeEvent
	roles []string
	stage string
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
	s.t.StageVersion, s.t.StageAt = s.version(), s.now
	s.t.Open = true
	s.t.Approvals, s.t.WaitingRoles, s.t.Reminders, s.t.Escalated = nil, nil, 0, false
	s.t.FailedStage, s.t.DutyTold, s.t.Offered = "", nil, nil
	switch st.Kind {
	case KindApproval:
		s.t.WaitingRoles = normRoles(st.Roles)
		users, onDuty := s.route(st.Roles, true)
		s.markHandovers(st.Roles, users)
		if st.RemindEvery > 0 {
			s.timer(EvRemind, s.now.Add(st.RemindEvery.D()))
		} else if len(onDuty) > 0 {
			s.timer(EvRemind, s.now.Add(s.e.dutyWiden))
		}
		if len(onDuty) > 0 {
			// Told to the people on duty first; the first reminder tells
			// the whole role. The audit says who was on duty.
			s.t.DutyTold = users
			s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: SystemActor, Action: "on duty", Ticket: s.t.ID,
				Args: st.Name + ": " + strings.Join(onDuty, ", "), Result: "ok", Version: s.version()})
		}
		if st.ExpireAfter > 0 {
			s.timer(EvExpire, s.now.Add(st.ExpireAfter.D()))
		}
		s.notify(users, NoticeApprovalNeeded, st.Roles)
	case KindAction, KindWait:
		if st.Kind == KindAction {
			if err := s.checkFreeze(st.Title, st.Title); err != nil {
				return err
			}
		}
		if st.Window != nil {
			if ok, why := st.Window.check(s.now, s.t.Fields); !ok {
				return Userf("window", fmt.Sprintf("/ops cancel %s", s.t.ID), "%s 不能进入 %s: %s · %s cannot start %s: outside its time window", s.t.ID, st.Title, why, s.t.ID, st.Title)
			}
		}
		kind := state.JobAction
		if st.Kind == KindWait {
			kind = state.JobWait
		}
		job := state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID, Stage: st.Name,
			StageVersion: s.version(), Kind: kind,
			Executor: st.Executor, Params: st.Params, Status: state.JobQueued, MaxAttempts: st.MaxAttempts,
			SafeToRepeat: st.SafeToRepeat, NextAt: s.now}
		if st.Kind == KindWait {
			job.Deadline = s.now.Add(st.Timeout.D())
		}
		s.ch.Jobs = append(s.ch.Jobs, job)
		s.t.Note = ""
		s.progress = append(s.progress, NoticeStepStarted)
	case KindRelease:
		if len(s.t.Batches) == 0 {
			b, err := ParseBatches(st, s.t.Fields[param(st, "batches_field", "batches")])
			if err != nil {
				return Userf("bad_fields", "", "%v", err)
			}
			s.t.Batches = b
		}
		s.notify(operators(st, s.t), NoticeReleaseReady, nil)
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
	s.t.StageVersion, s.t.StageAt = s.version(), s.now
	s.t.WaitingRoles, s.t.Approvals = nil, nil
	s.t.Open = stage == StageFailed
	if !s.t.Open {
		s.ch.Release = append(s.ch.Release, s.t.Locks...)
		s.t.Locks = nil
	}
	event := NoticeEvent(stage)
	switch stage {
	case StageFailed:
		if s.event == EvInterrupt {
			event = NoticeInterrupted
		}
		if s.t.FailedStage == StageRollingBack {
			event = NoticeRollbackFailed
		}
	case StageRolledBack:
		event = NoticeRolledBack
	}
	s.notify(s.resultAudience(), event, nil)
}

func (s *step) timer(kind Event, due time.Time) {
	s.ch.SetTimers = append(s.ch.SetTimers, state.Timer{Due: due, Ticket: s.t.ID, Kind: string(kind), Stage: s.t.Stage, StageVersion: s.t.StageVersion})
}

// approvers are the holders of roles, without the requester and without
// those who already approved this stage; someone away is replaced by
// their delegate.
func (s *step) approvers(roles []string) []string {
	users, _ := s.route(roles, false)
	return users
}

func (s *step) resultAudience() []string {
	out := []string{s.t.Requester}
	if s.t.Operator != "" && s.t.Operator != s.t.Requester {
		out = append(out, s.t.Operator)
	}
	if s.actor != "" && s.actor != SystemActor && !slices.Contains(out, s.actor) {
		out = append(out, s.actor)
	}
	return out
}

// progressPassed tells the requester that stage st is passed, unless
// they muted the ticket's progress.
func (s *step) progressPassed(st *Stage) {
	s.notify([]string{s.t.Requester}, NoticeStagePassed, nil)
	if n := len(s.notices); n > 0 && s.notices[n-1].event == NoticeStagePassed {
		s.notices[n-1].stage = st.Title
	}
}

// progress notices are the ones a person can mute per ticket.
var progressNotices = []NoticeEvent{NoticeApproved, NoticeStagePassed}

func (s *step) notify(users []string, event NoticeEvent, roles []string) {
	if slices.Contains(progressNotices, event) {
		users = slices.DeleteFunc(slices.Clone(users), func(u string) bool { return slices.Contains(s.t.Muted, u) })
	}
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
	var made state.Change
	var before state.Ticket
	t, err := e.store.Transition(ctx, id, func(cur state.Ticket) (state.Change, error) {
		ch, err := fn(cur)
		made, before = ch, cur
		return ch, err
	})
	if err == nil {
		e.logEvent(ctx, t, made.Event)
		e.observeEvent(before, t, made.Event)
	}
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
	// The runner looks for work only when this change queued or stopped
	// some (it also wakes on its own for jobs coming due).
	if len(made.Jobs) > 0 || len(made.CancelJobs) > 0 {
		poke(e.jobs)
	}
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
	exception := ""
	if f.Field(ExceptionField) == nil {
		if v, ok := fields[ExceptionField]; ok {
			exception = strings.TrimSpace(v)
			fields = cloneMap(fields)
			delete(fields, ExceptionField)
			if exception == "" {
				return state.Ticket{}, Userf("bad_fields", `例 e.g. exception="hotfix for the payment outage"`, "冻结例外需要原因 · a freeze exception needs a reason")
			}
		}
	}
	clean, err := f.CheckFields(fields)
	if err != nil {
		return state.Ticket{}, err
	}
	if err := f.checkRelease(clean); err != nil {
		return state.Ticket{}, err
	}
	cal, err := e.Calendar(ctx)
	if err != nil {
		return state.Ticket{}, err
	}
	var ex *state.Exception
	if fz, end, ok := frozen(cal, f, clean, f.expandLocks(clean), e.now()); ok {
		switch {
		case exception == "":
			return state.Ticket{}, frozenError(fz, end, "新的 "+f.Name+" 工单", "a new "+f.Name+" ticket", "")
		case len(fz.Except) == 0:
			return state.Ticket{}, noExceptions(fz, end)
		}
		ex = &state.Exception{Freeze: fz.ID, Roles: normRoles(fz.Except), Reason: e.clean(exception), By: actor, At: e.now()}
	} else if exception != "" {
		return state.Ticket{}, Userf("not_frozen", "/ops calendar", "现在没有冻结覆盖这个工单，不需要例外 · no freeze covers this ticket now: leave out exception=")
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
	locks := f.expandLocks(clean)
	for _, r := range locks {
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
		cur.Exception = ex
		s := e.newStep(f, cur, actor, EvSubmit)
		s.cal = &cal
		s.old.Version = 0
		s.ch.Acquire = locks
		s.ch.Event.Data = map[string]string{}
		for k, v := range clean {
			s.ch.Event.Data[k] = v
		}
		if err := s.enter(0); err != nil {
			return state.Change{}, err
		}
		if ex != nil {
			s.exceptionAsked()
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
	e.logEvent(ctx, t, state.Event{Type: string(EvSubmit), Actor: actor})
	e.observeEvent(state.Ticket{}, t, state.Event{Type: string(EvSubmit)})
	poke(e.jobs)
	poke(e.outbox)
	return t, nil
}

func lockedError(le *state.LockedError) error {
	return Userf("locked", fmt.Sprintf("/ops show %s", le.Holder),
		"%s 正被工单 %s 占用 · %s is locked by ticket %s until it ends or is cancelled", le.Resource, le.Holder, le.Resource, le.Holder)
}

// Action is a person's event on a ticket. Version is the ticket version
// the person saw (from a card button); 0 means "as it is now". Batch is
// the batch a release or rollback button names (from 1); 0 means "the
// next one in order".
type Action struct {
	Actor   string
	Ticket  string
	Event   Event
	Version int64
	Batch   int
	Comment string
	// Confirmed says the person confirmed an action that cannot be taken
	// back (a button's confirmation, or "confirm" typed).
	Confirmed bool
	// Token names the API token the actor acts through ("" for a person
	// in chat). A token decides a stage (approve, reject) only where the
	// stage says tokens_may_approve.
	Token string
	// Audit entries are written in the same transaction when the action
	// applies.
	Audit []state.AuditEntry
}

// Act applies a person's action: approve, reject, cancel, retry, release
// or rollback. The row of the flow's transitions table whose guards pass
// decides; every refusal is a *UserError saying why and what to do.
func (e *Engine) Act(ctx context.Context, a Action) (state.Ticket, error) {
	a.Actor = state.NormName(a.Actor)
	id := a.Ticket
	if n, ok := state.ParseID(id); ok {
		id = state.FormatID(n)
	}
	// Freezes decide, so they are read as they are now.
	cal, err := e.Calendar(ctx)
	if err != nil {
		return state.Ticket{}, err
	}
	return e.commit(ctx, id, func(cur state.Ticket) (state.Change, error) {
		f, ok := e.flows[cur.Flow]
		if !ok {
			return state.Change{}, fmt.Errorf("ticket %s has unknown flow %s", cur.ID, cur.Flow)
		}
		// A card is stale once the ticket left the stage it was drawn in,
		// and for an approval once what it looked up has changed.
		if a.Version > 0 && a.Version != cur.Version && cur.StageVersion > a.Version {
			title := f.StageTitle(cur.Stage)
			return state.Change{}, Userf("stale", fmt.Sprintf("/ops show %s", cur.ID),
				"卡片已过期：%s 已到 %s · this card is out of date: %s moved on to %s",
				cur.ID, title, cur.ID, title)
		}
		if a.Event == EvApprove && a.Version > 0 && cur.LookedUp > a.Version {
			return state.Change{}, Userf("stale", fmt.Sprintf("/ops show %s", cur.ID),
				"卡片已过期：%s 的查询结果已变化 · this card is out of date: what %s looked up has changed since it was drawn; look at the redrawn card",
				cur.ID, cur.ID)
		}
		if !slices.Contains(PersonEvents, a.Event) || !f.allows(a.Event, cur.Stage) {
			return state.Change{}, Userf("not_allowed", fmt.Sprintf("/ops show %s", cur.ID),
				"%s 处于 %s，不能%s · %s is at %s: %s is not possible now", cur.ID, f.StageTitle(cur.Stage), verbZH(a.Event), cur.ID, f.StageTitle(cur.Stage), a.Event)
		}
		g := &Guard{Engine: e, Flow: f, Ticket: cur, Action: a, Now: e.now()}
		g.Stage, _ = f.Stage(cur.Stage)
		if a.Token != "" && (a.Event == EvApprove || a.Event == EvReject) && (g.Stage == nil || !g.Stage.TokensMayApprove) {
			title := f.StageTitle(cur.Stage)
			return state.Change{}, Userf("token_cannot_decide", "a person decides in chat: /ops "+string(a.Event)+" "+cur.ID,
				"API 令牌不能审批 %s 的 %s · an API token cannot %s %s at %s: the stage does not allow tokens (tokens_may_approve)",
				cur.ID, title, a.Event, cur.ID, title)
		}
		row, err := f.pick(g, a.Event, true)
		if err != nil {
			if errors.Is(err, errOtherRow) {
				return state.Change{}, fmt.Errorf("flow %s: no row of %s from %s applies to %s", f.Name, a.Event, cur.Stage, cur.ID)
			}
			return state.Change{}, err
		}
		s := e.newStep(f, cur, a.Actor, a.Event)
		s.cal = &cal
		s.ch.Event.Comment = e.clean(a.Comment)
		if err := e.apply(s, row); err != nil {
			return state.Change{}, err
		}
		if s.t.Stage != row.To {
			// The skip_if stages passed over on the way are checked by finish.
			if !f.leads(EvSkip, row.To, s.t.Stage) {
				return state.Change{}, fmt.Errorf("flow %s: %s of %s went to %s, its row says %s", f.Name, a.Event, cur.ID, s.t.Stage, row.To)
			}
		}
		ch, err := s.finish()
		ch.Audit = append(ch.Audit, a.Audit...)
		return ch, err
	})
}

// apply makes the change of a person's action whose row was picked. The
// ticket's Operator is whoever set a side effect going (the approval that
// started the deploy, a retry, a release, a rollback), not whoever acted
// last; the history keeps every actor.
func (e *Engine) apply(s *step, row Transition) error {
	defer func() {
		if row.Event == EvReject || row.Event == EvCancel {
			return // the undo a stop runs is the bot's; the operator stays
		}
		for _, j := range s.ch.Jobs {
			if j.Kind != state.JobCleanup {
				s.t.Operator = s.actor
			}
		}
	}()
	switch row.Event {
	case EvApprove:
		if row.Guard == exceptionGuard {
			ex := s.t.Exception
			ex.ApprovedBy, ex.ApprovedAt = s.actor, s.now
			s.ch.Event.Data = map[string]string{"exception": ex.Freeze}
			s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: s.actor, Action: "freeze exception approved", Ticket: s.t.ID,
				Args: ex.Freeze + ": " + ex.Reason, Result: "ok", Version: s.version()})
			s.notify([]string{s.t.Requester}, NoticeApproved, nil)
			return nil
		}
		st, i := s.f.Stage(s.t.Stage)
		forWhom := s.delegatedFor()
		if forWhom != "" {
			// "bob for libo": on the card, in the history and the notices.
			s.ch.Event.Data = map[string]string{"for": forWhom}
			s.actorLabel = s.actor + " for " + forWhom
		}
		s.t.Approvals = append(s.t.Approvals, state.Approval{User: s.actor, At: s.now, Comment: s.ch.Event.Comment, For: forWhom})
		if len(s.t.Approvals) < st.Need(s.t.Fields) {
			s.notify([]string{s.t.Requester}, NoticeApproved, nil)
			return nil
		}
		s.progressPassed(st)
		return s.enter(i + 1)
	case EvReject, EvCancel:
		if row.To == StageRollingBack {
			// Actions already changed something: stopping undoes it.
			verb := map[Event]string{EvReject: "驳回 rejected", EvCancel: "取消 cancelled"}[row.Event]
			event := map[Event]NoticeEvent{EvReject: NoticeRejected, EvCancel: NoticeCancelled}[row.Event]
			s.notify(s.resultAudience(), event, nil)
			err := e.startRollback(s)
			s.t.Note = strings.TrimSpace(fmt.Sprintf("%s by %s: %s\n↩️ 正在撤销已做的变更 undoing what was changed", verb, s.actor, s.ch.Event.Comment))
			return err
		}
		if row.Event == EvReject {
			s.terminal(StageRejected)
			return nil
		}
		s.terminal(StageCancelled)
		if oc := s.f.OnCancel; oc != nil {
			s.ch.Jobs = append(s.ch.Jobs, state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID, Stage: StageCancelled,
				StageVersion: s.t.StageVersion, Kind: state.JobCleanup, Executor: oc.Executor, Params: oc.Params, Status: state.JobQueued,
				MaxAttempts: 3, SafeToRepeat: true, NextAt: s.now})
		}
	case EvRetry:
		failed := s.t.FailedStage
		if failed == StageRollingBack {
			return e.startRollback(s)
		}
		_, i := s.f.Stage(failed)
		if err := s.enter(i); err != nil {
			return err
		}
		s.t.FailedStage = ""
		s.ch.Event.Data = map[string]string{"stage": failed}
	case EvRelease:
		if err := s.checkFreeze("分批发布", "a batch release"); err != nil {
			return err
		}
		e.release(s)
	case EvException:
		return e.askException(s)
	case EvRollback:
		if row.From == row.To {
			e.rollbackBatch(s)
			return nil
		}
		return e.startRollback(s)
	default:
		return fmt.Errorf("flow %s: %s is not an action people take", s.f.Name, row.Event)
	}
	return nil
}

func verbZH(ev Event) string {
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
	case EvException:
		return "申请冻结例外 ask for a freeze exception"
	case EvRelease:
		return "发布 release"
	}
	return string(ev)
}

func (e *Engine) startRollback(s *step) error {
	rb := s.f.Rollback
	// Take the locks again: the resource must not be changed by anyone else
	// while it is put back.
	if len(s.t.Locks) == 0 {
		s.t.Locks = s.f.expandLocks(s.t.Fields)
		s.ch.Acquire = s.t.Locks
	}
	s.t.Stage = StageRollingBack
	s.t.StageVersion, s.t.StageAt = s.version(), s.now
	s.t.Open = true
	s.t.FailedStage = ""
	s.ch.Jobs = append(s.ch.Jobs, state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID,
		Stage: StageRollingBack, StageVersion: s.version(), Kind: state.JobUndo, Executor: rb.Executor, Params: rb.Params, Status: state.JobQueued,
		MaxAttempts: 1, NextAt: s.now})
	s.notify(s.resultAudience(), NoticeRollbackStarted, nil)
	return nil
}

// Mute stops (or, with on false, resumes) the progress notices of a
// ticket for actor: stages passed and approvals. Results still come.
func (e *Engine) Mute(ctx context.Context, actor, id string, on bool) (state.Ticket, error) {
	actor = state.NormName(actor)
	if n, ok := state.ParseID(id); ok {
		id = state.FormatID(n)
	}
	return e.commit(ctx, id, func(cur state.Ticket) (state.Change, error) {
		if slices.Contains(cur.Muted, actor) == on {
			return state.Change{}, state.ErrNoChange
		}
		t := cur
		t.Muted = slices.DeleteFunc(slices.Clone(cur.Muted), func(u string) bool { return u == actor })
		if on {
			t.Muted = append(t.Muted, actor)
		}
		action := map[bool]string{true: "mute", false: "unmute"}[on]
		return state.Change{Ticket: t, Audit: []state.AuditEntry{{At: e.now(), User: actor, Action: action, Ticket: id, Result: "ok"}}}, nil
	})
}

// logEvent writes one line per ticket event, for whoever runs the bot:
// "T-1 approve by bob: 方案审批 Plan review -> 运维确认 Ops go-ahead".
// observeEvent tells the observer about a committed event: the stage
// left, how long the ticket waited in it, the stage entered.
func (e *Engine) observeEvent(before, t state.Ticket, ev state.Event) {
	if ev.Type == "" {
		return
	}
	kind := ""
	if f, ok := e.flows[t.Flow]; ok && before.Stage != "" {
		if st, _ := f.Stage(before.Stage); st != nil {
			kind = string(st.Kind)
		}
	}
	waited := time.Duration(-1) // not known: a ticket written before StageAt, or no stage left
	if !before.StageAt.IsZero() && before.StageVersion != t.StageVersion {
		waited = e.now().Sub(before.StageAt)
	}
	e.observe.Transition(t.Flow, before.Stage, kind, t.Stage, ev.Type, waited)
}

// requestKey carries who asked, for the log lines of what they caused.
type requestKey struct{}

type request struct{ platform, ref string }

// WithRequest marks ctx as the handling of one chat request (its platform
// and the reference its log lines and replies carry): the ticket events it
// causes are logged with them.
func WithRequest(ctx context.Context, platform, ref string) context.Context {
	return context.WithValue(ctx, requestKey{}, request{platform, ref})
}

// logEvent writes one line per ticket event, with the ticket, flow, user
// and, when a person caused it, their platform and request reference.
func (e *Engine) logEvent(ctx context.Context, t state.Ticket, ev state.Event) {
	if ev.Type == "" {
		return
	}
	f, ok := e.flows[t.Flow]
	from, to := ev.From, t.Stage
	if ok {
		from, to = f.StageTitle(from), f.StageTitle(to)
	}
	msg := fmt.Sprintf("%s %s by %s: %s -> %s", t.ID, ev.Type, ev.Actor, from, to)
	if ev.Type == string(EvSubmit) {
		msg = fmt.Sprintf("%s created by %s (%s): %s", t.ID, ev.Actor, t.Flow, to)
	}
	attrs := []any{"ticket", t.ID, "flow", t.Flow, "event", ev.Type, "stage", t.Stage, "user", ev.Actor}
	if r, ok := ctx.Value(requestKey{}).(request); ok {
		attrs = append(attrs, "platform", r.platform, "req", r.ref)
	}
	e.log.Info(msg, attrs...)
}
