package flows

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"opsbot/state"
)

// KindRelease is a batch-release stage: operators release batches one at
// a time in order, each batch run as a job by the stage's executor, and
// roll released batches back in reverse order. The ticket is done when
// every batch succeeded; after any rollback it cannot release again.
//
// Params: "batches_field" (default "batches": "zone01,zone02;zone03"),
// "operators_field" (default "operators": "dave,erin"), "path" (default
// "uat,production": the branches the first batch goes through before its
// zones), "forbidden" (default "uat,dev,production": never a zone).
//
// The kind itself is declared with the others in nouns.go.

func param(st *Stage, key, def string) string {
	if v := st.Params[key]; v != "" {
		return v
	}
	return def
}

// ParseBatches reads "zone01,zone02;zone03" into batches; the first batch
// also goes through the path branches. Zones named in forbidden, empty
// batches and repeated zones are refused with the entry named.
func ParseBatches(st *Stage, raw string) ([]state.Batch, error) {
	path := splitList(param(st, "path", "uat,production"), ",")
	forbidden := splitList(param(st, "forbidden", "uat,dev,production"), ",")
	var out []state.Batch
	seen := map[string]bool{}
	for i, part := range strings.Split(strings.TrimSuffix(strings.TrimSpace(raw), ";"), ";") {
		zones := splitList(part, ",")
		if len(zones) == 0 {
			return nil, fmt.Errorf("批次 %d 为空 batch %d is empty: write zones separated by commas, batches by ';' (e.g. zone01,zone02;zone03)", i+1, i+1)
		}
		for _, z := range zones {
			if slices.Contains(forbidden, z) {
				return nil, fmt.Errorf("批次不能包含 %s · batch %d contains %s: batches hold zone branches only, never %s", z, i+1, z, strings.Join(forbidden, ", "))
			}
			if seen[z] {
				return nil, fmt.Errorf("%s 出现了两次 · zone %s is in two batches", z, z)
			}
			seen[z] = true
		}
		targets := zones
		if i == 0 {
			targets = append(slices.Clone(path), zones...)
		}
		out = append(out, state.Batch{Name: strconv.Itoa(i + 1), Targets: targets, State: state.BatchPending})
	}
	return out, nil
}

// Param is a stage parameter, or def when it is not set.
func (st *Stage) Param(key, def string) string { return param(st, key, def) }

// ReleasePath lists the branches a release's first batch goes through
// before its zones.
func (st *Stage) ReleasePath() []string { return splitList(param(st, "path", "uat,production"), ",") }

func splitList(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// releaseStage returns the flow's release stage, if it has one.
func (f *Flow) releaseStage() *Stage {
	for i := range f.Stages {
		if f.Stages[i].Kind == KindRelease {
			return &f.Stages[i]
		}
	}
	return nil
}

// checkRelease validates a release flow's batch and operator fields at
// submission, so a bad plan never reaches approval.
func (f *Flow) checkRelease(fields map[string]string) error {
	st := f.releaseStage()
	if st == nil {
		return nil
	}
	bf := param(st, "batches_field", "batches")
	if _, err := ParseBatches(st, fields[bf]); err != nil {
		return &UserError{Code: "bad_fields", Message: bf + ": " + err.Error(), Hint: "例 e.g. " + f.Example(), Fields: map[string]string{bf: err.Error()}}
	}
	of := param(st, "operators_field", "operators")
	if len(splitList(fields[of], ",")) == 0 {
		return &UserError{Code: "bad_fields", Message: of + ": 需要至少一个操作员 name at least one operator", Hint: "例 e.g. " + f.Example()}
	}
	return nil
}

// operators are the ticket's release operators, from its operators field.
func operators(st *Stage, t state.Ticket) []string {
	var out []string
	for _, u := range splitList(t.Fields[param(st, "operators_field", "operators")], ",") {
		out = append(out, state.NormName(u))
	}
	return out
}

func busy(t state.Ticket) bool {
	return slices.ContainsFunc(t.Batches, func(b state.Batch) bool {
		return b.State == state.BatchReleasing || b.State == state.BatchRollingBack
	})
}

func rolledBackAny(t state.Ticket) bool {
	return slices.ContainsFunc(t.Batches, func(b state.Batch) bool {
		return b.State == state.BatchRolledBack || b.State == state.BatchRollingBack || b.State == state.BatchRollbackFailed
	})
}

// nextPending is the index of the first pending batch, or -1.
func nextPending(t state.Ticket) int {
	return slices.IndexFunc(t.Batches, func(b state.Batch) bool { return b.State == state.BatchPending })
}

// newestReleased is the index of the newest batch with merges still in
// place, or -1.
func newestReleased(t state.Ticket) int {
	last := -1
	for i, b := range t.Batches {
		if mergedSteps(b) > 0 && b.State != state.BatchRolledBack {
			last = i
		}
	}
	return last
}

// Guards of a release stage.

func releaseOperator(g *Guard) error {
	ops := operators(g.Stage, g.Ticket)
	if slices.Contains(ops, g.Action.Actor) || g.Engine.dir.HasRole(g.Action.Actor, AdminRole) {
		return nil
	}
	return Userf("not_operator", "操作员 operators: "+strings.Join(ops, ", "),
		"只有本次发布的操作员可以发布或回滚 · only this release's operators (%s) can release or roll back %s", strings.Join(ops, ", "), g.Ticket.ID)
}

func neverRolledBack(g *Guard) error {
	if rolledBackAny(g.Ticket) {
		id := g.Ticket.ID
		return Userf("rolled_back", fmt.Sprintf("/ops cancel %s", id),
			"%s 已回滚过，不能再发布 · %s was rolled back: it cannot release again; roll back every released batch, then cancel (the bot then opens the sync merge requests)", id, id)
	}
	return nil
}

func noBatchRunning(g *Guard) error {
	if busy(g.Ticket) {
		id := g.Ticket.ID
		return Userf("busy", fmt.Sprintf("/ops show %s", id), "%s 正在执行一个批次 · a batch of %s is running; wait for its result", id, id)
	}
	return nil
}

func noBatchFailed(g *Guard) error {
	for _, b := range g.Ticket.Batches {
		if b.State == state.BatchFailed {
			return Userf("batch_failed", fmt.Sprintf("/ops rollback %s", g.Ticket.ID),
				"批次 %s 失败，请先回滚 · batch %s failed: roll it back (or fix and cancel) before releasing more", b.Name, b.Name)
		}
	}
	return nil
}

func batchPending(g *Guard) error {
	if nextPending(g.Ticket) < 0 {
		return Userf("not_allowed", "", "%s 没有待发布的批次 · %s has no batch left to release", g.Ticket.ID, g.Ticket.ID)
	}
	return nil
}

// batchInOrder: a button names its batch; a stale one cannot hit another.
func batchInOrder(g *Guard) error {
	next := nextPending(g.Ticket) + 1
	if n := g.Action.Batch; n != 0 && n != next {
		return Userf("stale", fmt.Sprintf("/ops show %s", g.Ticket.ID), "下一个批次是 %d · the next batch is %d, not %d", next, next, n)
	}
	return nil
}

func inWindow(g *Guard) error {
	if w := g.Stage.Window; w != nil {
		if ok, why := w.check(g.Now, g.Ticket.Fields); !ok {
			return Userf("window", "", "%s 现在不能发布：%s · %s cannot release now: outside the planned window", g.Ticket.ID, why, g.Ticket.ID)
		}
	}
	return nil
}

func batchReleased(g *Guard) error {
	if newestReleased(g.Ticket) < 0 {
		id := g.Ticket.ID
		return Userf("not_allowed", fmt.Sprintf("/ops cancel %s", id), "%s 没有需要回滚的批次 · %s has nothing left to roll back", id, id)
	}
	return nil
}

func newestBatch(g *Guard) error {
	last := newestReleased(g.Ticket) + 1
	if n := g.Action.Batch; n != 0 && n != last {
		return Userf("stale", fmt.Sprintf("/ops show %s", g.Ticket.ID), "批次按倒序回滚，下一个是 %d · batches roll back newest first: the next is %d, not %d", last, last, n)
	}
	return nil
}

func nothingReleased(g *Guard) error { return cancellable(g.Ticket) }

// release starts the next batch's job; the table's guards have passed.
func (e *Engine) release(s *step) {
	st, _ := s.f.Stage(s.t.Stage)
	next := nextPending(s.t)
	s.t.Batches[next].State = state.BatchReleasing
	s.t.Operator = s.actor
	s.ch.Event.Data = map[string]string{"batch": s.t.Batches[next].Name}
	s.batchJob(st, state.JobRelease, next)
}

// rollbackBatch reverts the most recently released batch.
func (e *Engine) rollbackBatch(s *step) {
	st, _ := s.f.Stage(s.t.Stage)
	last := newestReleased(s.t)
	s.t.Batches[last].State = state.BatchRollingBack
	s.t.Operator = s.actor
	s.ch.Event.Data = map[string]string{"batch": s.t.Batches[last].Name}
	s.batchJob(st, state.JobRevert, last)
}

func mergedSteps(b state.Batch) int {
	n := 0
	for _, st := range b.Steps {
		if st.Result == "merged" || st.Result == "revert_failed" {
			n++
		}
	}
	return n
}

// cancellable says whether a release stage may be cancelled: nothing
// released may still be in place.
func cancellable(t state.Ticket) error {
	for _, b := range t.Batches {
		if b.State == state.BatchReleasing || b.State == state.BatchRollingBack {
			return Userf("busy", "", "批次 %s 正在执行 · batch %s is running; wait for it", b.Name, b.Name)
		}
		if mergedSteps(b) > 0 {
			return Userf("rollback_first", fmt.Sprintf("/ops rollback %s", t.ID),
				"批次 %s 已发布，请先回滚 · batch %s is released: roll back every released batch, then cancel", b.Name, b.Name)
		}
	}
	return nil
}

// batchJob queues a batch's release or revert. Both are safe to repeat:
// the executor skips merges already made and reverts already done.
func (s *step) batchJob(st *Stage, kind state.JobKind, i int) {
	s.ch.Jobs = append(s.ch.Jobs, state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID, Stage: s.t.Stage,
		StageVersion: s.t.StageVersion, Kind: kind, Executor: st.Executor, Params: map[string]string{"batch": strconv.Itoa(i)},
		Status: state.JobQueued, MaxAttempts: 1, SafeToRepeat: true, NextAt: s.now})
	s.progress = append(s.progress, NoticeStepStarted)
}

// finishBatch records a release or revert job's batch and moves the
// ticket on when every batch succeeded.
func (s *step) finishBatch(j state.Job, ok bool, b *state.Batch, errText string) {
	i, _ := strconv.Atoi(j.Params["batch"])
	if i < 0 || i >= len(s.t.Batches) {
		return
	}
	if b != nil {
		s.t.Batches[i].Steps, s.t.Batches[i].Note = b.Steps, b.Note
	}
	cur := &s.t.Batches[i]
	var event NoticeEvent
	switch {
	case j.Kind == state.JobRelease && ok:
		cur.State, event = state.BatchSucceeded, NoticeBatchDone
	case j.Kind == state.JobRelease && mergedSteps(*cur) == 0:
		// Stopped before it merged anything: nothing to roll back. The
		// batch stays pending and the note says what to do first.
		cur.State, event = state.BatchPending, NoticeBatchRefused
	case j.Kind == state.JobRelease:
		cur.State, event = state.BatchFailed, NoticeBatchFailed
	case ok:
		cur.State, event = state.BatchRolledBack, NoticeBatchRolledBack
	default:
		cur.State, event = state.BatchRollbackFailed, NoticeBatchRollbackFailed
	}
	if cur.Note == "" {
		cur.Note = errText
	}
	s.ch.Event.Data = map[string]string{"batch": cur.Name, "state": cur.State}
	if !slices.ContainsFunc(s.t.Batches, func(b state.Batch) bool { return b.State != state.BatchSucceeded }) {
		s.terminal(StageDone)
		return
	}
	s.notify(s.resultAudience(), event, nil)
}
