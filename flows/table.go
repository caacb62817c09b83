package flows

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"opsbot/state"
)

// Transition is one row of a flow's transitions table: Event moves a
// ticket from From to To when every check of the row passes. The engine
// applies no event that the table does not list, picks the row of a
// person's action by its checks, and refuses a step that ends anywhere
// but in a row's To (see step.finish): the table is the behaviour, and
// it is what `make diagram` draws.
type Transition struct {
	Event Event
	From  string
	To    string
	// Guard says the checks in words, for the diagram and docs.
	Guard  string
	Checks []Check
}

// Check is one guard of a row. Actor checks look at who acts; the others
// at the ticket alone, so a card can offer exactly the buttons whose row
// could apply. A check that fails returns a *UserError saying why and
// what to do, or errOtherRow when another row of the same event is meant
// (the second of two approvals moves on, the first stays).
type Check struct {
	Actor bool
	Fn    func(g *Guard) error
}

// Guard is what a check sees.
type Guard struct {
	Engine *Engine
	Flow   *Flow
	Stage  *Stage
	Ticket state.Ticket
	Action Action
	Now    time.Time
}

var errOtherRow = errors.New("another row of the table applies")

func ticketCheck(fn func(g *Guard) error) Check { return Check{Fn: fn} }
func actorCheck(fn func(g *Guard) error) Check  { return Check{Actor: true, Fn: fn} }

// Table derives the flow's transitions table from its stages.
func (f *Flow) Table() []Transition {
	var rows []Transition
	add := func(ev Event, from, to, guard string, checks ...Check) {
		if slices.Contains(PersonEvents, ev) && f.mayConfirm(ev, from) {
			// Asked last: a confirmation is only asked of who may act.
			checks = append(checks, actorCheck(confirmed))
			guard += "; confirmed"
		}
		rows = append(rows, Transition{Event: ev, From: from, To: to, Guard: guard, Checks: checks})
	}
	next := func(i int) string {
		if i+1 < len(f.Stages) {
			return f.Stages[i+1].Name
		}
		return StageDone
	}
	add(EvSubmit, StageSubmitted, f.Stages[0].Name, "requester may open tickets; resource locks free; fields valid")
	var cancellable, retryable, asksException []string
	// undoable: from here on, actions may have changed something that the
	// flow's rollback undoes; a reject or cancel then runs (or offers) it.
	undoable := map[string]bool{StageFailed: f.Rollback != nil}
	changed := false
	for _, st := range f.Stages {
		undoable[st.Name] = changed && f.Rollback != nil
		changed = changed || st.Kind == KindAction
	}
	runUndo := f.UndoOnStop != UndoOffer
	for i, st := range f.Stages {
		if st.SkipIf != nil {
			add(EvSkip, st.Name, next(i), fmt.Sprintf("%s %s", st.SkipIf.Field, condText(st.SkipIf)))
		}
		if i+1 < len(f.Stages) && f.Stages[i+1].Window != nil && st.Kind != KindApproval {
			add(EvSucceed, st.Name, StageFailed, "the next stage's time window is closed")
		}
		switch st.Kind {
		case KindApproval:
			roles := strings.Join(st.Roles, "|")
			need := fmt.Sprintf("%d distinct approval(s)", st.Approvals)
			if a := st.ApprovalsIf; a != nil {
				need += fmt.Sprintf(" (%d when %s %s)", a.Approvals, a.Field, condText(&a.Cond))
			}
			// Asked first: a holder of a freeze's exception role lets the
			// ticket through the freeze; everyone else approves the stage.
			add(EvApprove, st.Name, st.Name, exceptionGuard, ticketCheck(exceptionPending), actorCheck(notRequester), actorCheck(holdsExceptionRole))
			decide := []Check{actorCheck(notRequester), actorCheck(holdsWaitingRole), actorCheck(notApprovedYet)}
			if st.Approvals > 1 || (st.ApprovalsIf != nil && st.ApprovalsIf.Approvals > 1) {
				add(EvApprove, st.Name, st.Name, "role "+roles+"; not the requester; fewer than "+need+" so far", append(slices.Clone(decide), ticketCheck(approvalsShort))...)
			}
			add(EvApprove, st.Name, next(i), "role "+roles+"; not the requester; "+need, append(slices.Clone(decide), ticketCheck(approvalsComplete))...)
			reject := append(slices.Clone(decide), actorCheck(reasonGiven))
			if undoable[st.Name] && runUndo {
				add(EvReject, st.Name, StageRejected, "role "+roles+"; not the requester; a reason; nothing changed yet", append(slices.Clone(reject), ticketCheck(noChanges))...)
				add(EvReject, st.Name, StageRollingBack, "role "+roles+"; not the requester; a reason; actions changed something: undo it", append(reject, ticketCheck(changesMade))...)
			} else {
				add(EvReject, st.Name, StageRejected, "role "+roles+"; not the requester; a reason", reject...)
			}
			remind := "once, from the people on duty to the whole role"
			if st.RemindEvery > 0 {
				remind = "every " + st.RemindEvery.D().String() + "; the first also from the people on duty to the whole role"
			}
			add(EvRemind, st.Name, st.Name, remind)
			add(EvDelegate, st.Name, st.Name, "someone away handed their approvals to a delegate, or got them back")
			asksException = append(asksException, st.Name)
			if st.EscalateTo != "" {
				add(EvEscalate, st.Name, st.Name, fmt.Sprintf("after %d reminder(s), add role %s", st.EscalateAfter, st.EscalateTo))
			}
			if f.Editable {
				add(EvEdit, st.Name, st.Name, "requester; fields valid; the stage's approvals start over")
			}
			if len(f.Refresh) > 0 {
				add(EvRefresh, st.Name, st.Name, "looked up again: "+strings.Join(f.Refresh, ", ")+" changed")
			}
			if st.ExpireAfter > 0 {
				add(EvExpire, st.Name, StageExpired, "after "+st.ExpireAfter.D().String())
			}
			cancellable = append(cancellable, st.Name)
		case KindAction:
			add(EvSucceed, st.Name, next(i), "executor "+st.Executor+" succeeded")
			add(EvFail, st.Name, StageFailed, "executor failed")
			add(EvInterrupt, st.Name, StageFailed, "bot restarted while running; not safe to repeat")
			if st.RedoFrom != "" {
				add(EvRedo, st.Name, st.RedoFrom, "executor found the approved plan out of date")
			}
			retryable = append(retryable, st.Name)
		case KindWait:
			add(EvSucceed, st.Name, next(i), "condition "+st.Executor+" true")
			add(EvFail, st.Name, StageFailed, "timeout "+st.Timeout.D().String())
			cancellable = append(cancellable, st.Name)
			retryable = append(retryable, st.Name)
		case KindRelease:
			add(EvRelease, st.Name, st.Name, "operator; in the window; next batch in order; never after a rollback",
				actorCheck(releaseOperator), ticketCheck(neverRolledBack), ticketCheck(noBatchRunning), ticketCheck(noBatchFailed),
				ticketCheck(batchPending), actorCheck(batchInOrder), actorCheck(inWindow))
			add(EvRollback, st.Name, st.Name, "operator; newest released batch first",
				actorCheck(releaseOperator), ticketCheck(noBatchRunning), ticketCheck(batchReleased), actorCheck(newestBatch))
			add(EvSucceed, st.Name, st.Name, "a batch released or reverted; others remain")
			add(EvFail, st.Name, st.Name, "a batch failed; it stays for its rollback")
			add(EvSucceed, st.Name, next(i), "every batch succeeded")
			cancellable = append(cancellable, st.Name)
			asksException = append(asksException, st.Name)
		}
	}
	asksException = append(asksException, StageFailed)
	for _, st := range asksException {
		add(EvException, st, st, "requester or admin; a freeze with exceptions holds over the ticket; a reason; once", actorCheck(mayAskException))
		if st, _ := f.Stage(st); st != nil && st.Kind == KindApproval {
			continue // its row comes before the stage's own approvals
		}
		add(EvApprove, st, st, exceptionGuard, ticketCheck(exceptionAsked), actorCheck(notRequester), actorCheck(mustHoldExceptionRole))
	}
	for _, st := range retryable {
		add(EvRetry, StageFailed, st, "requester, operators or admin; "+st+" failed", actorCheck(mayOperate), ticketCheck(failedAt(st)))
	}
	if f.Rollback != nil {
		rb := "role " + strings.Join(append(slices.Clone(f.Rollback.Roles), AdminRole), "|") + "; locks free"
		add(EvRollback, StageDone, StageRollingBack, rb, actorCheck(mayRollBack))
		add(EvRollback, StageFailed, StageRollingBack, rb, actorCheck(mayRollBack))
		add(EvRetry, StageFailed, StageRollingBack, "requester, operators or admin; the rollback failed", actorCheck(mayOperate), ticketCheck(failedAt(StageRollingBack)))
		add(EvSucceed, StageRollingBack, StageRolledBack, "rollback executor succeeded")
		add(EvFail, StageRollingBack, StageFailed, "rollback executor failed")
		add(EvInterrupt, StageRollingBack, StageFailed, "bot restarted during rollback")
	}
	for _, from := range append(cancellable, StageFailed) {
		checks := []Check{actorCheck(mayCancel)}
		guard := "requester or admin; releases locks"
		if st, _ := f.Stage(from); st != nil && st.Kind == KindRelease {
			checks = append(checks, ticketCheck(nothingReleased))
			guard = "requester, operator or admin; nothing released in place"
		}
		if undoable[from] && runUndo {
			add(EvCancel, from, StageCancelled, guard+"; nothing changed yet", append(slices.Clone(checks), ticketCheck(noChanges))...)
			add(EvCancel, from, StageRollingBack, "requester or admin; actions changed something: undo it", append(checks, ticketCheck(changesMade))...)
			continue
		}
		add(EvCancel, from, StageCancelled, guard, checks...)
	}
	if f.Rollback != nil && !runUndo {
		for _, from := range []string{StageRejected, StageCancelled} {
			add(EvRollback, from, StageRollingBack, "role "+strings.Join(append(slices.Clone(f.Rollback.Roles), AdminRole), "|")+"; actions changed something",
				actorCheck(mayRollBack), ticketCheck(changesMade))
		}
	}
	if f.OnCancel != nil {
		add(EvSucceed, StageCancelled, StageCancelled, "on_cancel "+f.OnCancel.Executor+" done")
		add(EvFail, StageCancelled, StageCancelled, "on_cancel "+f.OnCancel.Executor+" failed")
	}
	return rows
}

func condText(c *Cond) string {
	if c.Empty {
		return "is empty"
	}
	return "= " + c.Equals
}

// rows returns the rows of event leaving stage from.
func (f *Flow) rows(event Event, from string) []Transition {
	var out []Transition
	for _, r := range f.table {
		if r.Event == event && r.From == from {
			out = append(out, r)
		}
	}
	return out
}

// allows reports whether the table lets event leave stage from.
func (f *Flow) allows(event Event, from string) bool { return len(f.rows(event, from)) > 0 }

// pick returns the row of event from the ticket's stage whose checks
// pass. When none does, it returns the first refusal a person can act on.
func (f *Flow) pick(g *Guard, event Event, actor bool) (Transition, error) {
	var refusal error
	for _, r := range f.rows(event, g.Ticket.Stage) {
		err := r.check(g, actor)
		if err == nil {
			return r, nil
		}
		if refusal == nil && !errors.Is(err, errOtherRow) {
			refusal = err
		}
	}
	if refusal == nil {
		refusal = errOtherRow
	}
	return Transition{}, refusal
}

func (r Transition) check(g *Guard, actor bool) error {
	for _, c := range r.Checks {
		if c.Actor && !actor {
			continue
		}
		if err := c.Fn(g); err != nil {
			return err
		}
	}
	return nil
}

// leads reports whether the table takes event from stage from to stage
// to, directly or through stages skipped on the way.
func (f *Flow) leads(event Event, from, to string) bool {
	seen := map[string]bool{}
	var walk func(ev Event, at string) bool
	walk = func(ev Event, at string) bool {
		for _, r := range f.rows(ev, at) {
			if r.To == to {
				return true
			}
			if !seen[r.To] {
				seen[r.To] = true
				if walk(EvSkip, r.To) {
					return true
				}
			}
		}
		return false
	}
	return walk(event, from)
}

// Offer is an action a ticket's card offers: an event and, for a batch
// release, the batch it acts on (from 1).
type Offer struct {
	Event Event
	Batch int
	// Confirm says the action cannot be taken back: the person confirms
	// before it is sent.
	Confirm bool
}

// Offers lists the person events whose row could apply to the ticket now,
// whoever presses: the card's buttons. Order: approve, reject, release,
// retry, rollback, cancel.
func (f *Flow) Offers(t state.Ticket) []Offer {
	if f.table == nil {
		return nil
	}
	g := &Guard{Flow: f, Ticket: t}
	g.Stage, _ = f.Stage(t.Stage)
	var out []Offer
	for _, ev := range []Event{EvApprove, EvReject, EvRelease, EvRetry, EvRollback, EvCancel} {
		for _, r := range f.rows(ev, t.Stage) {
			err := r.check(g, false)
			if err != nil {
				continue
			}
			o := Offer{Event: ev, Confirm: f.NeedsConfirm(ev, t)}
			if g.Stage != nil && g.Stage.Kind == KindRelease {
				switch ev {
				case EvRelease:
					o.Batch = nextPending(t) + 1
				case EvRollback:
					o.Batch = newestReleased(t) + 1
				}
			}
			out = append(out, o)
			break
		}
	}
	return out
}

// OffersFor lists the actions user may take on the ticket now: the offers
// whose row's guards, the actor's included, pass for user (a reason and a
// confirmation are asked when the button is pressed). It is what a card
// sent to that person offers.
func (e *Engine) OffersFor(f *Flow, t state.Ticket, user string) []Offer {
	var out []Offer
	for _, o := range f.Offers(t) {
		g := &Guard{Engine: e, Flow: f, Ticket: t, Now: e.now(),
			Action: Action{Actor: user, Ticket: t.ID, Event: o.Event, Comment: "-", Confirmed: true}}
		g.Stage, _ = f.Stage(t.Stage)
		if _, err := f.pick(g, o.Event, true); err == nil {
			out = append(out, o)
		}
	}
	return out
}

// Mermaid renders the flow's transitions table as a Mermaid state diagram.
func (f *Flow) Mermaid() string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\ntitle: %s (%s)\n---\nstateDiagram-v2\n", f.Name, f.Title)
	// Each stage as people read it, next to its name.
	for _, name := range append(slices.Clone(reserved[:1]), f.stageNames()...) {
		fmt.Fprintf(&b, "    state \"%s<br/>%s\" as %s\n", strings.ReplaceAll(f.StageTitle(name), `"`, "'"), name, name)
	}
	for _, name := range reserved[1:] {
		if f.usesStage(name) {
			fmt.Fprintf(&b, "    state \"%s<br/>%s\" as %s\n", StageLabel(name), name, name)
		}
	}
	fmt.Fprintf(&b, "    [*] --> %s\n", StageSubmitted)
	seen := map[string]bool{}
	for _, r := range f.Table() {
		line := fmt.Sprintf("    %s --> %s: %s\n", r.From, r.To, r.Event)
		if !seen[line] {
			seen[line] = true
			b.WriteString(line)
		}
	}
	for _, t := range []string{StageDone, StageRejected, StageCancelled, StageExpired, StageRolledBack} {
		if strings.Contains(b.String(), "--> "+t+":") {
			fmt.Fprintf(&b, "    %s --> [*]\n", t)
		}
	}
	return b.String()
}

// The guards. Each is named in the table and tested through it.

func notRequester(g *Guard) error {
	t := g.Ticket
	if g.Action.Actor == t.Requester {
		return Userf("self_approval", "请等待 "+strings.Join(t.WaitingRoles, "/")+" 审批 · wait for a holder of "+strings.Join(t.WaitingRoles, ", "),
			"不能审批自己的工单 %s · you cannot approve or reject your own ticket %s", t.ID, t.ID)
	}
	return nil
}

func holdsWaitingRole(g *Guard) error {
	t := g.Ticket
	if g.Engine.dir.HasRole(g.Action.Actor, t.WaitingRoles...) {
		return nil
	}
	var holders []string
	for _, u := range g.Engine.dir.Members(t.WaitingRoles...) {
		if u != t.Requester && !approvedBy(t, u) {
			holders = append(holders, u)
		}
	}
	who := strings.Join(holders, ", ")
	if who == "" {
		who = "nobody yet: ask an admin to /ops role grant " + t.WaitingRoles[0] + " <user>"
	}
	return Userf("not_role_holder", "可审批 can approve: "+who,
		"%s 需要角色 %s 审批，你没有该角色 · %s needs a holder of %s; you are not one",
		t.ID, strings.Join(t.WaitingRoles, "/"), t.ID, strings.Join(t.WaitingRoles, ", "))
}

func notApprovedYet(g *Guard) error {
	t := g.Ticket
	if approvedBy(t, g.Action.Actor) {
		return Userf("already_approved", fmt.Sprintf("%d/%d approvals", len(t.Approvals), g.Stage.Need(t.Fields)),
			"你已同意过 %s · you already approved %s; it needs approvals from different people", t.ID, t.ID)
	}
	return nil
}

// approvalsShort: this approval leaves the stage still short of its need.
func approvalsShort(g *Guard) error {
	if len(g.Ticket.Approvals)+1 < g.Stage.Need(g.Ticket.Fields) {
		return nil
	}
	return errOtherRow
}

// approvalsComplete: this approval is the last one the stage needs.
func approvalsComplete(g *Guard) error {
	if len(g.Ticket.Approvals)+1 >= g.Stage.Need(g.Ticket.Fields) {
		return nil
	}
	return errOtherRow
}

func reasonGiven(g *Guard) error {
	if strings.TrimSpace(g.Action.Comment) == "" {
		return Userf("reason_required", fmt.Sprintf("/ops reject %s 原因 reason", g.Ticket.ID), "驳回需要原因 · a rejection needs a reason")
	}
	return nil
}

func mayCancel(g *Guard) error {
	t, actor := g.Ticket, g.Action.Actor
	if actor == t.Requester || g.Engine.dir.HasRole(actor, AdminRole) {
		return nil
	}
	if g.Stage != nil && g.Stage.Kind == KindRelease && slices.Contains(operators(g.Stage, t), actor) {
		return nil
	}
	return Userf("not_requester", fmt.Sprintf("ask %s", t.Requester),
		"只有申请人 %s 或管理员可以取消 %s · only the requester %s or an admin can cancel %s", t.Requester, t.ID, t.Requester, t.ID)
}

func mayOperate(g *Guard) error {
	t, actor, f := g.Ticket, g.Action.Actor, g.Flow
	if actor == t.Requester || g.Engine.dir.HasRole(actor, AdminRole) || g.Engine.dir.HasRole(actor, f.Operators...) {
		return nil
	}
	return Userf("not_operator", "", "只有申请人、操作员或管理员可以重试 · only the requester, an operator (%s) or an admin can retry %s",
		strings.Join(f.Operators, ", "), t.ID)
}

func failedAt(stage string) func(g *Guard) error {
	return func(g *Guard) error {
		if g.Ticket.FailedStage == stage {
			return nil
		}
		if g.Ticket.FailedStage == "" {
			return Userf("not_allowed", "", "%s 没有可重试的步骤 · %s has no failed step to retry", g.Ticket.ID, g.Ticket.ID)
		}
		return errOtherRow
	}
}

func mayRollBack(g *Guard) error {
	rb := g.Flow.Rollback
	if g.Engine.dir.HasRole(g.Action.Actor, append(slices.Clone(rb.Roles), AdminRole)...) {
		return nil
	}
	return Userf("not_operator", "可回滚 can roll back: "+strings.Join(g.Engine.dir.Members(rb.Roles...), ", "),
		"只有 %s 角色可以回滚 · only holders of %s can roll back %s", strings.Join(rb.Roles, "/"), strings.Join(rb.Roles, ", "), g.Ticket.ID)
}

// Changes: whether the ticket's actions changed something the flow's
// rollback would undo: an action that succeeded, or undo steps an action
// registered (a failed run registers what it did before it failed), not
// undone since.
func changed(f *Flow, t state.Ticket) bool {
	if f.Rollback == nil {
		return false
	}
	for _, en := range t.Saga {
		if !en.Undone && en.Kind == state.JobAction {
			return true
		}
	}
	for _, st := range f.Stages {
		if r, ok := t.Results[st.Name]; ok && st.Kind == KindAction && r.OK {
			return true
		}
	}
	return false
}

func changesMade(g *Guard) error {
	if changed(g.Flow, g.Ticket) {
		return nil
	}
	return errOtherRow
}

func noChanges(g *Guard) error {
	if changed(g.Flow, g.Ticket) {
		return errOtherRow
	}
	return nil
}

// mayConfirm says whether event from stage from can need a confirmation.
func (f *Flow) mayConfirm(ev Event, from string) bool {
	if slices.Contains(f.Destructive, ev) {
		return true
	}
	st, _ := f.Stage(from)
	return ev == EvApprove && st != nil && (st.Confirm || st.ConfirmIf != nil)
}

// NeedsConfirm says whether event on ticket t asks for a confirmation:
// the flow declares it destructive, or it approves a protected stage.
func (f *Flow) NeedsConfirm(ev Event, t state.Ticket) bool {
	if slices.Contains(f.Destructive, ev) {
		return true
	}
	st, _ := f.Stage(t.Stage)
	return ev == EvApprove && st != nil && (st.Confirm || (st.ConfirmIf != nil && st.ConfirmIf.match(t.Fields)))
}

// confirmed refuses an action that cannot be taken back until the person
// confirms it; the hint is the command that does.
func confirmed(g *Guard) error {
	if g.Action.Confirmed || !g.Flow.NeedsConfirm(g.Action.Event, g.Ticket) {
		return nil
	}
	id := g.Ticket.ID
	what := map[Event]string{
		EvRollback: "回滚会撤销已做的变更 rolling back undoes what " + id + " changed",
		EvRelease:  "发布会合并到生产分支 releasing merges into production branches",
		EvCancel:   "取消会停止并撤销 cancelling stops " + id + " and undoes what it changed",
		EvApprove:  "同意会开始不能撤回的操作 approving starts what cannot be taken back",
		EvRetry:    "重试会再次执行 retrying runs the step again",
		EvReject:   "驳回会撤销已做的变更 rejecting undoes what " + id + " changed",
	}[g.Action.Event]
	return &UserError{Code: "confirm", Message: fmt.Sprintf("请确认 · please confirm: %s (%s)", what, id),
		Hint: fmt.Sprintf("/ops %s %s confirm", g.Action.Event, id)}
}

func (f *Flow) stageNames() []string {
	out := make([]string, len(f.Stages))
	for i, st := range f.Stages {
		out[i] = st.Name
	}
	return out
}

// usesStage says whether a row of the table names stage.
func (f *Flow) usesStage(stage string) bool {
	for _, r := range f.Table() {
		if r.From == stage || r.To == stage {
			return true
		}
	}
	return false
}
