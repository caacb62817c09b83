package present_test

import (
	"slices"
	"strings"
	"testing"

	"opsbot/flows"
	"opsbot/present"
	"opsbot/state"
	"opsbot/templates"
)

// TestEveryNoticeIsWorded: each notice the engine sends has its own
// wording, not the fallback "T-1 event:".
func TestEveryNoticeIsWorded(t *testing.T) {
	worded := templates.NoticeEvents()
	for _, ev := range flows.Notices {
		if !slices.Contains(worded, string(ev)) {
			t.Errorf("notice %s has no wording", ev)
		}
	}
}

func release(t *testing.T) *flows.Flow {
	f := &flows.Flow{Name: "rel", Title: "Release",
		Fields: []flows.Field{{Name: "batches", Required: true}, {Name: "operators", Required: true}},
		Stages: []flows.Stage{
			{Name: "approve", Kind: flows.KindApproval, Roles: []string{"lead"}},
			{Name: "ship", Kind: flows.KindRelease, Executor: "x", Params: map[string]string{"path": "uat", "stores.z1": "S-1,S-2"}},
		}}
	if err := f.Validate([]string{"x"}); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestReleaseCardButtonsAndRows: the buttons come from the table's
// offers, carry their batch in the command grammar, and the batch rows
// say each batch's state and stores.
func TestReleaseCardButtonsAndRows(t *testing.T) {
	f := release(t)
	tk := state.Ticket{ID: "T-7", Flow: "rel", Stage: "ship", StageVersion: 3, Version: 4, Open: true,
		Fields: map[string]string{"batches": "z1;z2", "operators": "dave"},
		Batches: []state.Batch{
			{Name: "1", Targets: []string{"uat", "z1"}, State: state.BatchSucceeded, Steps: []state.Step{{Target: "z1", MR: 12, Result: "merged", MergeSHA: "abc"}}},
			{Name: "2", Targets: []string{"z2"}, State: state.BatchPending},
		}}
	v := present.View(f, tk)
	var got []string
	for _, b := range v.Buttons {
		got = append(got, b.Label+" => "+b.Value)
	}
	want := []string{"发布批次2 Release batch 2 => /ops release T-7#4 batch=2", "回滚批次1 Roll back batch 1 => /ops rollback T-7#4 batch=1"}
	if !slices.Equal(got, want) {
		t.Fatalf("buttons %q, want %q (no cancel while batch 1 is in place)", got, want)
	}
	rows := map[string]string{}
	for _, fd := range v.Fields {
		rows[fd.Label] = fd.Value
	}
	if r := rows["批次 Batch 1"]; !strings.Contains(r, "已发布 succeeded") || !strings.Contains(r, "z1 (S-1,S-2)") || !strings.Contains(r, "z1 !12 merged") {
		t.Fatalf("batch 1 row %q", r)
	}
	if r := rows["批次 Batch 2"]; !strings.Contains(r, "z2 (无门店 no stores)") {
		t.Fatalf("batch 2 row %q", r)
	}
	// While a batch runs, the card offers nothing.
	tk.Batches[1].State = state.BatchReleasing
	if v := present.View(f, tk); len(v.Buttons) != 0 {
		t.Fatalf("buttons while a batch runs: %+v", v.Buttons)
	}
}

// TestViewShowsTypedResults: a conflict's files and a user error's hint
// reach the card; an unknown flow still shows the ticket.
func TestViewShowsTypedResults(t *testing.T) {
	f := release(t)
	tk := state.Ticket{ID: "T-8", Flow: "rel", Stage: flows.StageFailed, Open: true, FailedStage: "ship",
		Results: map[string]state.Result{"ship": {ExitCode: 1, Error: "merge failed", Hint: "resolve it", Files: []string{"a.pp"}}}}
	m := templates.MustRender("ticket", present.View(f, tk))
	if !strings.Contains(m.Body, "提示 hint: resolve it") || !strings.Contains(m.Body, "a.pp") || m.StageTitle != "失败 failed" {
		t.Fatalf("card body %q stage %q", m.Body, m.StageTitle)
	}
	p := present.New([]*flows.Flow{f}, nil)
	if m := p.TicketCard(state.Ticket{ID: "T-9", Flow: "gone"}); !strings.Contains(m.Title, "unknown flow gone") {
		t.Fatalf("unknown flow: %q", m.Title)
	}
}
