package templates_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"opsbot/templates"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var at = time.Date(2026, 5, 9, 12, 30, 0, 0, time.UTC)

func ticket() templates.TicketView {
	return templates.TicketView{ID: "T-42", Flow: "golive", FlowTitle: "软件上线 Software go-live", Title: "payments v1.4.2",
		Stage: "plan_review", StageTitle: "方案审批 Plan review", StageKey: "plan_review@3", Open: true, Version: 3, Requester: "alice",
		Fields:    []templates.Field{{Label: "服务 Service", Value: "payments"}, {Label: "影响 Impact", Value: `checkout "down" 5 min: yes`}},
		Approvals: []templates.ApprovalView{{User: "bob", At: at, Comment: "ok"}}, Need: 2, Have: 1, Waiting: []string{"techlead"},
		Buttons: []templates.Button{{Label: "同意 Approve", Value: "/ops approve T-42#3", Style: "primary"}, {Label: "驳回 Reject", Value: "/ops reject T-42#3", Style: "danger"}},
		Created: at, Updated: at}
}

func failed() templates.TicketView {
	v := ticket()
	v.Stage, v.StageTitle, v.Open, v.Need, v.Have, v.Approvals, v.Waiting = "failed", "失败 failed", true, 0, 0, nil, nil
	v.Result = &templates.ResultView{Stage: "deploy", ExitCode: 3, Attempt: 1, Error: "exit code 3", Output: strings.Repeat("line of output\n", 150)}
	v.Note = "⚠️ interrupted"
	v.Buttons = []templates.Button{{Label: "重试 Retry", Value: "/ops retry T-42#5"}}
	return v
}

func conflict() templates.TicketView {
	v := failed()
	v.Operator = "dave"
	v.Result = &templates.ResultView{Stage: "release", ExitCode: 1, Attempt: 2, Error: "merging zone01 failed",
		Hint: "resolve the conflict, then roll the batch back", Files: []string{"manifests/a.pp", "hiera/b.yaml"}}
	v.Note = ""
	return v
}

func done() templates.TicketView {
	v := ticket()
	v.Stage, v.StageTitle, v.Open, v.Ended, v.Operator = "done", "已完成 done", false, true, "bob"
	v.Approvals = append(v.Approvals, templates.ApprovalView{User: "carol", At: at})
	v.Result = &templates.ResultView{Stage: "deploy", OK: true, Attempt: 1, Output: "deployed abc123"}
	v.Buttons = nil
	return v
}

// cases covers every template (and every notice event).
func cases() map[string]struct {
	tmpl string
	data any
} {
	c := map[string]struct {
		tmpl string
		data any
	}{
		"ticket":          {"ticket", ticket()},
		"ticket-failed":   {"ticket", failed()},
		"ticket-conflict": {"ticket", conflict()},
		"ticket-done":     {"ticket", done()},
		"list":            {"list", templates.ListView{Scope: "waiting", Filter: "golive", Page: 1, More: true, Tickets: []templates.TicketView{ticket()}}},
		"list-empty":      {"list", templates.ListView{Scope: "mine", Page: 2}},
		"audit": {"audit", templates.AuditView{Target: "T-42", Page: 1, Entries: []templates.AuditRow{
			{At: at, User: "bob", Platform: "local", Action: "command approve", Ticket: "T-42", Args: "/ops approve T-42", Result: "ok"}}}},
		"help": {"help", templates.HelpView{Commands: []templates.HelpCommand{{Name: "show", Usage: "/ops show T-42", Summary: "查看工单 show a ticket"}},
			Flows: []templates.FlowHelp{{Name: "golive", Title: "Go-live", Required: []string{"service"}, Optional: []string{"impact"}}}}},
		"help-topic": {"help", templates.HelpView{Topic: &templates.HelpCommand{Name: "show", Usage: "/ops show T-42", Summary: "show", Example: "/ops show T-1"}}},
		"error":      {"error", templates.ErrorView{Message: "没有工单 T-9 · there is no ticket T-9", Hint: "/ops list open"}},
		"internal":   {"internal", templates.InternalView{Ref: "0a1b2c3d"}},
		"info":       {"info", templates.InfoView{Level: "success", Title: "已授予 granted techlead → bob"}},
		"roles":      {"roles", templates.RolesView{Rows: []templates.RoleRow{{Role: "techlead", Members: []string{"bob", "bert"}}, {Role: "empty"}}}},
	}
	for _, ev := range []string{"submitted", "approval_needed", "approved", "rejected", "cancelled", "done", "failed", "interrupted",
		"expired", "reminder", "escalated", "retried", "rollback_started", "rolled_back", "rollback_failed", "step_started", "step_succeeded", "step_failed",
		"release_ready", "batch_done", "batch_failed", "batch_refused", "batch_rolled_back", "batch_rollback_failed", "cleanup_done", "cleanup_failed", "edited", "redo", "stage_passed", "something_new"} {
		c["notice-"+ev] = struct {
			tmpl string
			data any
		}{"notice", templates.NoticeView{Ticket: ticket(), Event: ev, Actor: "bob", Comment: "see runbook", Roles: []string{"techlead"}, Passed: "方案审批 Plan review"}}
	}
	return c
}

func TestGolden(t *testing.T) {
	used := map[string]bool{}
	for name, c := range cases() {
		used[c.tmpl] = true
		m, err := templates.Render(c.tmpl, c.data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var raw strings.Builder
		enc := json.NewEncoder(&raw)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		enc.Encode(m)
		got := "== neutral (local chat) ==\n" + raw.String() + "== text ==\n" + templates.Text(m) + "\n"
		path := filepath.Join("testdata", name+".golden")
		if *update {
			if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run go test ./templates -update)", name, err)
		}
		if got != string(want) {
			t.Errorf("%s differs from %s (run go test ./templates -update and review the diff):\n%s", name, path, got)
		}
	}
	for _, n := range templates.Names() {
		if !used[n] {
			t.Errorf("template %s has no golden case", n)
		}
	}
}

func TestTicketCardDetails(t *testing.T) {
	m := templates.MustRender("ticket", failed())
	if m.Ticket != "T-42" || m.Version != 3 || m.Stage != "plan_review@3" || m.Level != "info" {
		t.Fatalf("card identity %+v", m)
	}
	if len(m.Body) > templates.MaxOutput+200 || !strings.Contains(m.Body, "bytes cut") {
		t.Fatalf("long output not truncated: %d bytes", len(m.Body))
	}
	if !slices.ContainsFunc(m.Fields, func(f templates.Field) bool { return f.Value == `checkout "down" 5 min: yes` }) {
		t.Fatalf("quoted field value mangled: %+v", m.Fields)
	}
}

func TestTruncateKeepsRunes(t *testing.T) {
	s := templates.Truncate(strings.Repeat("审批", 10), 7)
	if !strings.HasPrefix(s, "审批") || strings.ContainsRune(s[:6], '\uFFFD') {
		t.Fatalf("%q", s)
	}
}

// Golden files show times in UTC, whatever the host's zone.
func init() { templates.SetZone(time.UTC) }

// TestTimesInTheConfiguredZone: times are shown in the configured zone,
// which is named.
func TestTimesInTheConfiguredZone(t *testing.T) {
	sh, err := time.LoadLocation("Asia/Shanghai")
	if err != nil {
		t.Skip("no zone data:", err)
	}
	templates.SetZone(sh)
	defer templates.SetZone(time.UTC)
	m := templates.MustRender("ticket", ticket())
	if !strings.Contains(m.Context, "2026-05-09 20:30 CST") {
		t.Fatalf("context %q", m.Context)
	}
}
