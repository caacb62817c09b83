package flows

import (
	"fmt"
	"slices"
	"strings"
)

// Events applied to tickets.
const (
	EvSubmit    = "submit"
	EvApprove   = "approve"
	EvReject    = "reject"
	EvCancel    = "cancel"
	EvRetry     = "retry"
	EvRollback  = "rollback"
	EvSucceed   = "succeed"
	EvFail      = "fail"
	EvInterrupt = "interrupt"
	EvRemind    = "remind"
	EvEscalate  = "escalate"
	EvExpire    = "expire"
	EvSkip      = "skip"
	EvRedo      = "redo"
)

// Transition is one row of a flow's transitions table: an event moves a
// ticket from one of From to To when Guard holds.
type Transition struct {
	Event string
	From  []string
	To    string
	Guard string
}

// Table derives the flow's transitions table from its stages. The engine
// applies no event that the table does not list.
func (f *Flow) Table() []Transition {
	var rows []Transition
	next := func(i int) string {
		if i+1 < len(f.Stages) {
			return f.Stages[i+1].Name
		}
		return StageDone
	}
	rows = append(rows, Transition{EvSubmit, []string{StageSubmitted}, f.Stages[0].Name, "requester may open tickets; resource locks free; fields valid"})
	var cancellable, retryable []string
	for i, st := range f.Stages {
		if st.SkipIf != nil {
			rows = append(rows, Transition{EvSkip, []string{st.Name}, next(i), fmt.Sprintf("%s %s", st.SkipIf.Field, condText(st.SkipIf))})
		}
		switch st.Kind {
		case KindApproval:
			g := fmt.Sprintf("role %s; not the requester; %d distinct approval(s)", strings.Join(st.Roles, "|"), st.Approvals)
			if a := st.ApprovalsIf; a != nil {
				g += fmt.Sprintf(" (%d when %s %s)", a.Approvals, a.Field, condText(&a.Cond))
			}
			rows = append(rows,
				Transition{EvApprove, []string{st.Name}, next(i), g},
				Transition{EvReject, []string{st.Name}, StageRejected, fmt.Sprintf("role %s; not the requester", strings.Join(st.Roles, "|"))})
			if st.RemindEvery > 0 {
				rows = append(rows, Transition{EvRemind, []string{st.Name}, st.Name, "every " + st.RemindEvery.D().String()})
			}
			if st.EscalateTo != "" {
				rows = append(rows, Transition{EvEscalate, []string{st.Name}, st.Name, fmt.Sprintf("after %d reminder(s), add role %s", st.EscalateAfter, st.EscalateTo)})
			}
			if f.Editable {
				rows = append(rows, Transition{EvEdit, []string{st.Name}, st.Name, "requester; fields valid; the stage's approvals start over"})
			}
			if st.ExpireAfter > 0 {
				rows = append(rows, Transition{EvExpire, []string{st.Name}, StageExpired, "after " + st.ExpireAfter.D().String()})
			}
			cancellable = append(cancellable, st.Name)
		case KindAction:
			rows = append(rows,
				Transition{EvSucceed, []string{st.Name}, next(i), "executor " + st.Executor + " succeeded"},
				Transition{EvFail, []string{st.Name}, StageFailed, "executor failed"},
				Transition{EvInterrupt, []string{st.Name}, StageFailed, "bot restarted while running; not safe to repeat"})
			if st.RedoFrom != "" {
				rows = append(rows, Transition{EvRedo, []string{st.Name}, st.RedoFrom, "executor found the approved plan out of date"})
			}
			retryable = append(retryable, st.Name)
		case KindWait:
			rows = append(rows,
				Transition{EvSucceed, []string{st.Name}, next(i), "condition " + st.Executor + " true"},
				Transition{EvFail, []string{st.Name}, StageFailed, "timeout " + st.Timeout.D().String()})
			cancellable = append(cancellable, st.Name)
			retryable = append(retryable, st.Name)
		case KindRelease:
			rows = append(rows,
				Transition{EvRelease, []string{st.Name}, st.Name, "operator; in the window; next batch in order; never after a rollback"},
				Transition{EvRollback, []string{st.Name}, st.Name, "operator; newest released batch first"},
				Transition{EvSucceed, []string{st.Name}, next(i), "every batch succeeded"})
			cancellable = append(cancellable, st.Name)
		}
	}
	rows = append(rows, Transition{EvRetry, []string{StageFailed}, strings.Join(retryable, "|"), "requester, operators or admin; back to the failed stage"})
	if f.Rollback != nil {
		rows = append(rows,
			Transition{EvRollback, []string{StageDone, StageFailed}, StageRollingBack, "role " + strings.Join(append(slices.Clone(f.Rollback.Roles), "admin"), "|") + "; locks free"},
			Transition{EvSucceed, []string{StageRollingBack}, StageRolledBack, "rollback executor succeeded"},
			Transition{EvFail, []string{StageRollingBack}, StageFailed, "rollback executor failed"},
			Transition{EvInterrupt, []string{StageRollingBack}, StageFailed, "bot restarted during rollback"})
	}
	rows = append(rows, Transition{EvCancel, append(cancellable, StageFailed), StageCancelled, "requester or admin; releases locks"})
	return rows
}

func condText(c *Cond) string {
	if c.Empty {
		return "is empty"
	}
	return "= " + c.Equals
}

// allows reports whether the table lets event leave stage from.
func (f *Flow) allows(event, from string) bool {
	for _, r := range f.table {
		if r.Event == event && slices.Contains(r.From, from) {
			return true
		}
	}
	return false
}

// Mermaid renders the flow's transitions table as a Mermaid state diagram.
func (f *Flow) Mermaid() string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\ntitle: %s (%s)\n---\nstateDiagram-v2\n", f.Name, f.Title)
	fmt.Fprintf(&b, "    [*] --> %s\n", StageSubmitted)
	for _, r := range f.Table() {
		for _, from := range r.From {
			for _, to := range strings.Split(r.To, "|") {
				if r.Event == EvRetry && to == "" {
					continue
				}
				fmt.Fprintf(&b, "    %s --> %s: %s\n", from, to, r.Event)
			}
		}
	}
	for _, t := range []string{StageDone, StageRejected, StageCancelled, StageExpired, StageRolledBack} {
		if strings.Contains(b.String(), "--> "+t+":") {
			fmt.Fprintf(&b, "    %s --> [*]\n", t)
		}
	}
	return b.String()
}
