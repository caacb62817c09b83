package flows

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"opsbot/state"
	"opsbot/templates"
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
const KindRelease = "release"

// Events of a release stage.
const (
	EvRelease = "release"
)

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

func (s *step) operators(st *Stage) []string {
	var out []string
	for _, u := range splitList(s.t.Fields[param(st, "operators_field", "operators")], ",") {
		out = append(out, state.NormName(u))
	}
	return out
}

func (e *Engine) mustOperate(s *step, st *Stage) error {
	ops := s.operators(st)
	if !slices.Contains(ops, s.actor) && !e.dir.HasRole(s.actor, AdminRole) {
		return Userf("not_operator", "操作员 operators: "+strings.Join(ops, ", "),
			"只有本次发布的操作员可以发布或回滚 · only this release's operators (%s) can release or roll back %s", strings.Join(ops, ", "), s.t.ID)
	}
	return nil
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

// batchArg reads "batch=N" from a button's comment; 0 when absent.
func batchArg(comment string) int {
	for _, f := range strings.Fields(comment) {
		if v, ok := strings.CutPrefix(f, "batch="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// release starts the next batch's job.
func (e *Engine) release(s *step, a Action) error {
	st, _ := s.f.Stage(s.t.Stage)
	if err := e.mustOperate(s, st); err != nil {
		return err
	}
	if rolledBackAny(s.t) {
		return Userf("rolled_back", fmt.Sprintf("/ops cancel %s", s.t.ID),
			"%s 已回滚过，不能再发布 · %s was rolled back: it cannot release again; roll back every released batch, then cancel (the bot then opens the sync merge requests)", s.t.ID, s.t.ID)
	}
	if busy(s.t) {
		return Userf("busy", fmt.Sprintf("/ops show %s", s.t.ID), "%s 正在执行一个批次 · a batch of %s is running; wait for its result", s.t.ID, s.t.ID)
	}
	next := -1
	for i, b := range s.t.Batches {
		if b.State == state.BatchFailed {
			return Userf("batch_failed", fmt.Sprintf("/ops rollback %s", s.t.ID),
				"批次 %s 失败，请先回滚 · batch %s failed: roll it back (or fix and cancel) before releasing more", b.Name, b.Name)
		}
		if b.State == state.BatchPending {
			next = i
			break
		}
	}
	if next < 0 {
		return Userf("not_allowed", "", "%s 没有待发布的批次 · %s has no batch left to release", s.t.ID, s.t.ID)
	}
	if n := batchArg(a.Comment); n != 0 && n != next+1 {
		return Userf("stale", fmt.Sprintf("/ops show %s", s.t.ID), "下一个批次是 %d · the next batch is %d, not %d", next+1, next+1, n)
	}
	if st.Window != nil {
		if ok, why := st.Window.check(s.now, s.t.Fields); !ok {
			return Userf("window", "", "%s 现在不能发布：%s · %s cannot release now: outside the planned window", s.t.ID, why, s.t.ID)
		}
	}
	s.t.Batches[next].State = state.BatchReleasing
	s.t.Operator = s.actor
	s.ch.Event.Data = map[string]string{"batch": s.t.Batches[next].Name}
	s.batchJob(st, "release", next)
	return nil
}

// rollbackBatch reverts the most recently released batch.
func (e *Engine) rollbackBatch(s *step, a Action) error {
	st, _ := s.f.Stage(s.t.Stage)
	if err := e.mustOperate(s, st); err != nil {
		return err
	}
	if busy(s.t) {
		return Userf("busy", fmt.Sprintf("/ops show %s", s.t.ID), "%s 正在执行一个批次 · a batch of %s is running; wait for its result", s.t.ID, s.t.ID)
	}
	last := -1
	for i, b := range s.t.Batches {
		if mergedSteps(b) > 0 && b.State != state.BatchRolledBack {
			last = i
		}
	}
	if last < 0 {
		return Userf("not_allowed", fmt.Sprintf("/ops cancel %s", s.t.ID), "%s 没有需要回滚的批次 · %s has nothing left to roll back", s.t.ID, s.t.ID)
	}
	if n := batchArg(a.Comment); n != 0 && n != last+1 {
		return Userf("stale", fmt.Sprintf("/ops show %s", s.t.ID), "批次按倒序回滚，下一个是 %d · batches roll back newest first: the next is %d, not %d", last+1, last+1, n)
	}
	s.t.Batches[last].State = state.BatchRollingBack
	s.t.Operator = s.actor
	s.ch.Event.Data = map[string]string{"batch": s.t.Batches[last].Name}
	s.batchJob(st, "revert", last)
	return nil
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
func (s *step) batchJob(st *Stage, kind string, i int) {
	s.ch.Jobs = append(s.ch.Jobs, state.Job{ID: fmt.Sprintf("%s/%d", s.t.ID, s.version()), Ticket: s.t.ID, Stage: s.t.Stage,
		StageVersion: s.t.StageVersion, Kind: kind, Executor: st.Executor, Params: map[string]string{"batch": strconv.Itoa(i)},
		Status: state.JobQueued, MaxAttempts: 1, SafeToRepeat: true, NextAt: s.now})
	s.progress = append(s.progress, "step_started")
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
	event := ""
	switch {
	case j.Kind == "release" && ok:
		cur.State, event = state.BatchSucceeded, "batch_done"
	case j.Kind == "release":
		cur.State, event = state.BatchFailed, "batch_failed"
	case ok:
		cur.State, event = state.BatchRolledBack, "batch_rolled_back"
	default:
		cur.State, event = state.BatchRollbackFailed, "batch_rollback_failed"
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

var batchLabels = map[string]string{
	state.BatchPending:        "待发布 pending",
	state.BatchReleasing:      "发布中 releasing",
	state.BatchFailed:         "失败 failed",
	state.BatchSucceeded:      "已发布 succeeded",
	state.BatchRollingBack:    "回滚中 rolling back",
	state.BatchRolledBack:     "已回滚 rolled back",
	state.BatchRollbackFailed: "回滚失败 rollback failed",
}

// batchFields shows each batch: its state, its targets with their stores
// (a zone without stores says so), the merge requests and what went wrong.
func batchFields(st *Stage, t state.Ticket) []templates.Field {
	var out []templates.Field
	for _, b := range t.Batches {
		var targets, stores []string
		for _, z := range b.Targets {
			if v := st.Params["stores."+z]; v != "" {
				stores = append(stores, v)
			}
			stores := st.Params["stores."+z]
			switch {
			case slices.Contains(splitList(param(st, "path", "uat,production"), ","), z):
				targets = append(targets, z)
			case stores == "":
				targets = append(targets, z+" (无门店 no stores)")
			default:
				targets = append(targets, fmt.Sprintf("%s (%s)", z, stores))
			}
		}
		value := batchLabels[b.State] + " · " + strings.Join(targets, ", ")
		var mrs []string
		for _, s := range b.Steps {
			item := s.Target + ":" + s.Result
			if s.MR != 0 {
				item = fmt.Sprintf("%s !%d %s", s.Target, s.MR, s.Result)
			}
			if len(s.Files) > 0 {
				item += " [" + strings.Join(s.Files, ", ") + "]"
			}
			mrs = append(mrs, item)
		}
		if len(mrs) > 0 {
			value += " · " + strings.Join(mrs, "; ")
		}
		if b.Note != "" {
			value += " · " + b.Note
		}
		out = append(out, templates.Field{Label: "批次 Batch " + b.Name, Value: value})
		storeRow := strings.Join(stores, ",")
		if storeRow == "" {
			storeRow = "无门店 no stores"
		}
		out = append(out, templates.Field{Label: "批次" + b.Name + "门店 Batch " + b.Name + " stores", Value: storeRow})
	}
	return out
}

// releaseButtons offers the next batch's release, the rollback of the
// newest released batch, and cancel when nothing released is in place.
// Each carries its batch number, so a stale button cannot hit another.
func releaseButtons(t state.Ticket, version int64) []templates.Button {
	if busy(t) {
		return nil
	}
	btn := func(label, cmd, style string, batch string) templates.Button {
		v := fmt.Sprintf("/ops %s %s#%d", cmd, t.ID, version)
		if batch != "" {
			v += " batch=" + batch
		}
		return templates.Button{Label: label, Value: v, Style: style}
	}
	var out []templates.Button
	failed := slices.ContainsFunc(t.Batches, func(b state.Batch) bool { return b.State == state.BatchFailed })
	if !rolledBackAny(t) && !failed {
		for _, b := range t.Batches {
			if b.State == state.BatchPending {
				out = append(out, btn("发布批次"+b.Name+" Release batch "+b.Name, EvRelease, "primary", b.Name))
				break
			}
		}
	}
	for i := len(t.Batches) - 1; i >= 0; i-- {
		if b := t.Batches[i]; mergedSteps(b) > 0 && b.State != state.BatchRolledBack {
			out = append(out, btn("回滚批次"+b.Name+" Roll back batch "+b.Name, EvRollback, "danger", b.Name))
			break
		}
	}
	if cancellable(t) == nil {
		out = append(out, btn("取消 Cancel", EvCancel, "", ""))
	}
	return out
}
