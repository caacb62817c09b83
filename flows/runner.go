package flows

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"opsbot/state"
)

// runner state lives on the Engine; these methods run jobs and timers.

var errSkip = errors.New("job not runnable")

// Recover settles the jobs left running by a process that stopped: this
// one before a restart, or another replica that lost its lease. A job
// whose owner is alive is left alone. A job marked safe to repeat is
// queued again (and the ticket's thread told, when another replica ran
// it); any other is marked interrupted and its ticket fails with a retry
// prompt. Each orphan is claimed first, so of several replicas settling
// at once one settles it. Nothing that was recorded is lost.
func (e *Engine) Recover(ctx context.Context) error {
	jobs, err := e.store.ActiveJobs(ctx)
	if err != nil {
		return fmt.Errorf("read jobs: %w", err)
	}
	for _, j := range jobs {
		if j.Status != state.JobRunning {
			continue
		}
		if j.Owner != "" {
			alive, err := e.replicas.Alive(ctx, j.Owner)
			if err != nil {
				return fmt.Errorf("is replica %s alive: %w", j.Owner, err)
			}
			if alive {
				continue
			}
		}
		if err := e.settleOrphan(ctx, j); err != nil && !errors.Is(err, errSkip) {
			return err
		}
	}
	return nil
}

func (e *Engine) settleOrphan(ctx context.Context, j state.Job) error {
	owner := j.Owner
	// Claimed: still running under the owner that stopped.
	claim := func(x *state.Job) error {
		if x.Status != state.JobRunning || x.Owner != owner {
			return errSkip
		}
		return nil
	}
	if j.SafeToRepeat || j.Kind == state.JobWait {
		if _, err := e.store.UpdateJob(ctx, j.ID, func(x *state.Job) error {
			if err := claim(x); err != nil {
				return err
			}
			x.Status, x.NextAt, x.Owner = state.JobQueued, e.now(), ""
			return nil
		}); err != nil {
			return err
		}
		if owner != "" && owner != e.replicas.Self() {
			e.log.Warn("taking over a job from a replica that stopped", "job", j.ID, "ticket", j.Ticket, "from", owner, "replica", e.replicas.Self())
			e.tellResumed(ctx, j, owner)
		} else {
			e.log.Info("resuming job after restart", "job", j.ID, "ticket", j.Ticket)
		}
		poke(e.jobs)
		return nil
	}
	if _, err := e.store.UpdateJob(ctx, j.ID, func(x *state.Job) error {
		if err := claim(x); err != nil {
			return err
		}
		x.Owner = e.replicas.Self()
		return nil
	}); err != nil {
		return err
	}
	now := e.now()
	msg := "opsbot stopped while this step was running; it was not repeated automatically · 执行期间机器人重启，未自动重跑"
	if owner != "" && owner != e.replicas.Self() {
		msg = fmt.Sprintf("the opsbot replica running this step (%s) stopped; it was not repeated automatically · 执行该步骤的机器人实例已停止，未自动重跑", owner)
	}
	res := state.Result{OK: false, ExitCode: -1, Attempt: j.Attempt, Started: j.StartedAt, Ended: now, Error: msg}
	j.Status, j.Result = state.JobInterrupted, &res
	if _, err := e.finishJob(ctx, j, EvInterrupt, res, ExecResult{}); err != nil {
		return err
	}
	e.log.Warn("job interrupted by a stop", "job", j.ID, "ticket", j.Ticket, "owner", owner)
	return nil
}

// tellResumed posts in the ticket's thread that another replica took the
// step over.
func (e *Engine) tellResumed(ctx context.Context, j state.Job, owner string) {
	t, err := e.store.Get(ctx, j.Ticket)
	if err != nil {
		return
	}
	f := e.flows[t.Flow]
	if f == nil {
		return
	}
	raw, err := e.present.Notice(f, t, Notice{Event: NoticeStepResumed, Actor: SystemActor, Stage: j.Stage,
		Comment: fmt.Sprintf("%s -> %s", owner, e.replicas.Self())})
	if err != nil {
		return
	}
	now := e.now()
	if err := e.store.Enqueue(ctx, state.Notification{Ticket: t.ID, Kind: state.NotifyProgress, Message: raw, NextAt: now, Created: now,
		Version: t.Version}); err != nil {
		e.log.Error("tell the ticket's thread a job was taken over", "ticket", t.ID, "err", err)
		return
	}
	poke(e.outbox)
}

// Runner runs jobs from the store.
type Runner struct {
	e       *Engine
	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup
	// Jobs run on their own context, so a shutdown can let them finish.
	jobCtx     context.Context
	cancelJobs context.CancelFunc
}

// NewRunner returns a job runner for the engine.
func (e *Engine) NewRunner() *Runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &Runner{e: e, running: map[string]bool{}, jobCtx: ctx, cancelJobs: cancel}
}

// Run starts due jobs whenever one is queued or comes due, until ctx ends.
// Then it starts nothing new and gives running jobs up to grace to finish
// before stopping them; a job stopped that way keeps its "running" mark and
// is settled by Recover at the next start.
func (r *Runner) Run(ctx context.Context, grace time.Duration) {
	for {
		wait := r.RunDue(ctx)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			r.drain(grace)
			return
		case <-r.e.jobs:
		case <-t.C:
		}
		t.Stop()
	}
}

func (r *Runner) drain(grace time.Duration) {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(grace):
		r.e.log.Warn("stopping running jobs after the shutdown grace period", "grace", grace)
		r.cancelJobs()
		<-done
	}
}

// RunDue starts every due job that is not running yet and returns how long
// until the next one is due (at most a minute).
func (r *Runner) RunDue(ctx context.Context) time.Duration {
	wait := time.Minute
	jobs, err := r.e.store.ActiveJobs(ctx)
	if err != nil {
		r.e.log.Error("read jobs", "err", err)
		return time.Second
	}
	now := r.e.now()
	for _, j := range jobs {
		if j.Status != state.JobQueued {
			continue
		}
		if d := j.NextAt.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		r.mu.Lock()
		busy := r.running[j.ID]
		if !busy {
			r.running[j.ID] = true
		}
		r.mu.Unlock()
		if busy {
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() {
				r.mu.Lock()
				delete(r.running, j.ID)
				r.mu.Unlock()
				poke(r.e.jobs)
			}()
			if err := r.e.runJob(r.jobCtx, j.ID); err != nil && r.jobCtx.Err() == nil {
				r.e.log.Error("job", "job", j.ID, "ticket", j.Ticket, "err", err)
			}
		}()
	}
	return wait
}

// Wait blocks until the jobs started so far have stopped.
func (r *Runner) Wait() { r.wg.Wait() }

func (e *Engine) runJob(ctx context.Context, id string) error {
	j, err := e.store.Job(ctx, id)
	if err != nil {
		return err
	}
	t, err := e.store.Get(ctx, j.Ticket)
	if err != nil {
		return err
	}
	if t.Stage != j.Stage || t.StageVersion != j.StageVersion {
		// The ticket moved on (cancelled while a wait was queued).
		_, err := e.store.UpdateJob(ctx, id, func(x *state.Job) error { x.Status = state.JobCancelled; return nil })
		return err
	}
	// Mark the job running before the side effect starts.
	j, err = e.store.UpdateJob(ctx, id, func(x *state.Job) error {
		if x.Status != state.JobQueued {
			return errSkip
		}
		x.Status = state.JobRunning
		x.Attempt++
		x.StartedAt = e.now()
		x.Owner = e.replicas.Self()
		return nil
	})
	if errors.Is(err, errSkip) {
		return nil
	}
	if err != nil {
		return err
	}
	f := e.flows[t.Flow]
	timeout := 10 * time.Minute
	if st, _ := f.Stage(j.Stage); st != nil {
		timeout = st.Timeout.D()
	} else if j.Kind == state.JobUndo && f.Rollback != nil {
		timeout = f.Rollback.Timeout.D()
	}
	ex, ok := e.exec[j.Executor]
	var out ExecResult
	started := e.now()
	if !ok {
		out = ExecResult{Err: fmt.Errorf("no executor %s", j.Executor), ExitCode: -1}
	} else {
		rctx, cancel := context.WithTimeout(ctx, timeout)
		out = ex.Run(rctx, ExecInput{Ticket: t, Stage: j.Stage, Kind: j.Kind, Params: j.Params, Attempt: j.Attempt, Undo: undoFor(t, j)})
		cancel()
	}
	if ctx.Err() != nil {
		// Shutting down: leave the job marked running for Recover.
		return ctx.Err()
	}
	res := state.Result{OK: out.OK, ExitCode: out.ExitCode, Output: e.clean(out.Output), Attempt: j.Attempt, Started: started, Ended: e.now()}
	if out.Err != nil {
		res.Error = e.clean(out.Err.Error())
		var ue *UserError
		if errors.As(out.Err, &ue) {
			res.Error, res.Hint = e.clean(ue.Message), e.clean(ue.Hint)
		}
		var ce *ConflictError
		if errors.As(out.Err, &ce) {
			res.Files = ce.Files
		}
	}
	st, _ := f.Stage(j.Stage)
	// requeueAt queues the job again, unless its ticket moved on while
	// it ran (checked in the same transaction as the requeue).
	requeueAt := func(next time.Time) error {
		_, err := e.store.UpdateJob(ctx, id, func(x *state.Job) error {
			x.Result = &res
			if x.CancelRequested {
				x.Status = state.JobCancelled
				return nil
			}
			x.Status, x.NextAt = state.JobQueued, next
			return nil
		})
		return err
	}
	switch {
	case !out.OK && j.Kind == state.JobWait && e.now().Before(j.Deadline):
		return requeueAt(e.now().Add(st.Poll.D()))
	case !out.OK && IsTransient(out.Err) && j.Attempt < j.MaxAttempts:
		backoff := time.Duration(1<<min(j.Attempt-1, 10)) * st.Backoff.D()
		e.log.Warn("transient failure, retrying", "job", id, "ticket", j.Ticket, "attempt", j.Attempt, "in", backoff)
		e.observe.Job(j.Executor, "retried", res.Ended.Sub(res.Started))
		return requeueAt(e.now().Add(backoff))
	}
	j.Result = &res
	j.Status = state.JobSucceeded
	ev := EvSucceed
	if !out.OK {
		j.Status, ev = state.JobFailed, EvFail
	}
	if j.Kind == state.JobWait && !out.OK {
		res.Error = fmt.Sprintf("等待超时 timed out after %s waiting for %s. %s", st.Timeout.D(), j.Executor, res.Error)
		j.Result = &res
	}
	if out.Redo && st != nil && st.RedoFrom != "" && j.Kind == state.JobAction {
		ev = EvRedo
	}
	_, err = e.finishJob(ctx, j, ev, res, out)
	return err
}

// finishJob records a job's end and moves its ticket on, in one transaction.
func (e *Engine) finishJob(ctx context.Context, j state.Job, ev Event, res state.Result, out ExecResult) (_ state.Ticket, err error) {
	set, batch := out.Set, out.Batch
	j.Undo = out.Undo
	defer func() {
		if err == nil {
			took := res.Ended.Sub(res.Started)
			e.observe.Job(j.Executor, j.Status, took)
			e.log.Info(fmt.Sprintf("%s step %s %s in %s", j.Ticket, j.Stage, j.Status, took.Round(time.Millisecond)),
				"ticket", j.Ticket, "stage", j.Stage, "executor", j.Executor, "result", j.Status, "duration", took.Round(time.Millisecond).String())
		}
	}()
	return e.commit(ctx, j.Ticket, func(cur state.Ticket) (state.Change, error) {
		f := e.flows[cur.Flow]
		if cur.Stage != j.Stage || cur.StageVersion != j.StageVersion || f == nil {
			j.Status = state.JobCancelled
			return state.Change{Ticket: cur, Jobs: []state.Job{j}}, nil
		}
		s := e.newStep(f, cur, SystemActor, ev)
		s.ch.Jobs = []state.Job{j}
		// The step's own result goes to the ticket's thread; it is rendered
		// from the state before the ticket moves on, so it shows this step.
		step := s.t
		if step.Results == nil {
			step.Results = map[string]state.Result{}
		}
		step.Results = cloneResults(step.Results)
		step.Results[j.Stage] = res
		step.FailedStage = j.Stage
		step.Version = cur.Version + 1
		outcome := NoticeStepSucceeded
		if ev != EvSucceed {
			outcome = NoticeStepFailed
		}
		if raw, err := e.present.Notice(f, step, Notice{Event: outcome, Actor: SystemActor}); err == nil {
			s.extra = append(s.extra, state.Notification{Ticket: cur.ID, Kind: state.NotifyProgress, Message: raw, NextAt: s.now, Created: s.now})
		}
		if s.t.Results == nil {
			s.t.Results = map[string]state.Result{}
		}
		s.t.Results[j.Stage] = res
		s.t.LastResult = j.Stage
		if j.Kind == state.JobUndo {
			// A stop's note said the undo was under way; say how it ended.
			done := "↩️ 已撤销已做的变更 what was changed is undone"
			if ev != EvSucceed {
				done = "❌ 撤销失败 the undo failed: see the result, then retry"
			}
			s.t.Note = strings.Replace(s.t.Note, "↩️ 正在撤销已做的变更 undoing what was changed", done, 1)
		}
		for k, v := range set {
			if s.t.Outputs == nil {
				s.t.Outputs = map[string]string{}
			}
			s.t.Outputs[k] = e.clean(v)
		}
		s.ch.Event.Data = map[string]string{"job": j.ID, "attempt": fmt.Sprint(res.Attempt), "exit_code": fmt.Sprint(res.ExitCode)}
		for _, line := range out.Audit {
			result := "ok"
			if line.Failed {
				result = "failed"
			}
			s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: SystemActor, Action: j.Executor + " " + j.Stage,
				Ticket: cur.ID, Args: e.clean(line.Text), Result: result})
		}
		s.saga(j, ev == EvSucceed, out.Undo)
		switch j.Kind {
		case state.JobRelease, state.JobRevert:
			s.finishBatch(j, ev == EvSucceed, batch, res.Error)
			return s.finish()
		case state.JobCleanup:
			s.t.Note = strings.TrimSpace(res.Output + "\n" + res.Error)
			event := NoticeCleanupDone
			if ev != EvSucceed {
				event = NoticeCleanupFailed
			}
			s.notify(s.resultAudience(), event, nil)
			return s.finish()
		}
		switch {
		case ev == EvRedo:
			st, _ := f.Stage(j.Stage)
			_, i := f.Stage(st.RedoFrom)
			if err := s.enter(i); err != nil {
				return state.Change{}, err
			}
			s.t.Note = "🔁 " + res.Error
			s.notify(s.resultAudience(), NoticeRedo, nil)
		case ev == EvSucceed && j.Kind == state.JobUndo:
			s.terminal(StageRolledBack)
		case ev == EvSucceed:
			st, i := f.Stage(j.Stage)
			s.progressPassed(st)
			// Whoever set the step going hears how it went.
			if op := s.t.Operator; op != "" && op != s.t.Requester && j.Kind == state.JobAction {
				s.notify([]string{op}, NoticeStepSucceeded, nil)
			}
			if err := s.enter(i + 1); err != nil {
				// The next stage's window is closed: fail here with the reason.
				var ue *UserError
				if !errors.As(err, &ue) {
					return state.Change{}, err
				}
				s.t.Note = ue.Message
				s.t.FailedStage = f.Stages[i+1].Name
				s.terminal(StageFailed)
			}
		default:
			s.t.FailedStage = j.Stage
			if ev == EvInterrupt {
				s.t.Note = fmt.Sprintf("⚠️ 执行被中断，请先检查目标状态再重试 · interrupted by a restart: check the target, then /ops retry %s", cur.ID)
			}
			s.terminal(StageFailed)
		}
		return s.finish()
	})
}

// Tick fires the timers due now: reminders, escalations and expiry.
func (e *Engine) Tick(ctx context.Context) error {
	if _, err := e.Calendar(ctx); err != nil {
		return err
	}
	timers, err := e.store.DueTimers(ctx, e.now())
	if err != nil {
		return err
	}
	for _, tm := range timers {
		if _, err := e.commit(ctx, tm.Ticket, func(cur state.Ticket) (state.Change, error) {
			f := e.flows[cur.Flow]
			if cur.Stage != tm.Stage || cur.StageVersion != tm.StageVersion || f == nil {
				return state.Change{Ticket: cur, ClearTimers: []state.Timer{tm}}, nil
			}
			st, _ := f.Stage(cur.Stage)
			s := e.newStep(f, cur, SystemActor, Event(tm.Kind))
			// Fired once: a replica that fires it too finds it gone.
			s.ch.Fire = &tm
			switch Event(tm.Kind) {
			case EvExpire:
				s.terminal(StageExpired)
			case EvRemind:
				if told := s.t.DutyTold; len(told) > 0 {
					// The people on duty heard first; now the whole role does.
					s.t.DutyTold = nil
					s.notify(slices.DeleteFunc(s.approvers(s.t.WaitingRoles), func(u string) bool { return slices.Contains(told, u) }),
						NoticeApprovalNeeded, s.t.WaitingRoles)
					if st.RemindEvery > 0 {
						s.timer(EvRemind, s.now.Add(st.RemindEvery.D()))
					}
					break
				}
				s.t.Reminders++
				s.notify(s.approvers(s.t.WaitingRoles), NoticeReminder, s.t.WaitingRoles)
				if st.EscalateTo != "" && !s.t.Escalated && s.t.Reminders >= st.EscalateAfter {
					s.event, s.ch.Event.Type = EvEscalate, string(EvEscalate)
					s.t.Escalated = true
					s.t.WaitingRoles = append(s.t.WaitingRoles, state.NormName(st.EscalateTo))
					s.notify(s.approvers([]string{st.EscalateTo}), NoticeEscalated, []string{st.EscalateTo})
				}
				if st.RemindEvery > 0 {
					s.timer(EvRemind, s.now.Add(st.RemindEvery.D()))
				}
			}
			return s.finish()
		}); errors.Is(err, state.ErrTimerGone) {
			continue
		} else if err != nil {
			return fmt.Errorf("timer %s for %s: %w", tm.Kind, tm.Ticket, err)
		}
	}
	return nil
}

// undoFor is what a job reverses: for the flow's rollback every step of
// the ticket's saga not undone yet, for a batch revert the steps that
// batch's release registered; newest first.
func undoFor(t state.Ticket, j state.Job) []state.UndoStep {
	var out []state.UndoStep
	for k := len(t.Saga) - 1; k >= 0; k-- {
		en := t.Saga[k]
		if en.Undone || !reverses(j, en) {
			continue
		}
		for i := len(en.Steps) - 1; i >= 0; i-- {
			out = append(out, en.Steps[i])
		}
	}
	return out
}

// reverses says whether job j undoes what saga entry en registered.
func reverses(j state.Job, en state.SagaEntry) bool {
	switch j.Kind {
	case state.JobUndo:
		return en.Kind == state.JobAction || en.Kind == state.JobRelease
	case state.JobRevert:
		return en.Kind == state.JobRelease && en.Batch == j.Params["batch"]
	}
	return false
}

// saga records the undo a job registered and, when an undo or a revert
// succeeded, marks what it reversed as undone.
func (s *step) saga(j state.Job, ok bool, undo []state.UndoStep) {
	if ok && (j.Kind == state.JobUndo || j.Kind == state.JobRevert) {
		for k := range s.t.Saga {
			if reverses(j, s.t.Saga[k]) {
				s.t.Saga[k].Undone = true
			}
		}
	}
	if len(undo) > 0 && (j.Kind == state.JobAction || j.Kind == state.JobRelease) {
		s.t.Saga = append(s.t.Saga, state.SagaEntry{Job: j.ID, Stage: j.Stage, Kind: j.Kind, Batch: j.Params["batch"], Steps: undo})
	}
}
