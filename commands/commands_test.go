package commands_test

import (
	"reflect"
	"strings"
	"testing"

	"opsbot/commands"
	"opsbot/flows"
)

func TestParse(t *testing.T) {
	r := commands.Default()
	cases := []struct {
		in   string
		want commands.Request
	}{
		{"/ops help", commands.Help{}},
		{"", commands.Help{}},
		{"/ops help new", commands.Help{Topic: "new"}},
		{"/OPS show t-42", commands.Show{Ticket: "T-42"}},
		{"@opsbot status T-42", commands.Show{Ticket: "T-42"}},
		{"<@U0BOT> status T-7", commands.Show{Ticket: "T-7"}},
		{"@opsbot what is waiting for me?", commands.List{Scope: "waiting", Page: 1}},
		{"待我审批", commands.List{Scope: "waiting", Page: 1}},
		{"ops list", commands.List{Scope: "open", Page: 1}},
		{"/ops list waiting flow=golive page=3", commands.List{Scope: "waiting", Flow: "golive", Page: 3}},
		{"/ops list 我的", commands.List{Scope: "mine", Page: 1}},
		{`/ops new golive service=payments rollback_app="redeploy v1.4.1" impact=“下单 5 分钟不可用”`,
			commands.New{Flow: "golive", Fields: map[string]string{"service": "payments", "rollback_app": "redeploy v1.4.1", "impact": "下单 5 分钟不可用"}}},
		{`/ops new golive note="say \"hi\""`, commands.New{Flow: "golive", Fields: map[string]string{"note": `say "hi"`}}},
		{"/ops approve T-42 looks good", commands.Act{Event: "approve", Ticket: "T-42", Comment: "looks good"}},
		{"/ops approve T-42#7", commands.Act{Event: "approve", Ticket: "T-42", Version: 7}},
		{"同意 T-3", commands.Act{Event: "approve", Ticket: "T-3"}},
		{"/ops reject T-42 window collides", commands.Act{Event: "reject", Ticket: "T-42", Comment: "window collides"}},
		{"/ops cancel T-1", commands.Act{Event: "cancel", Ticket: "T-1"}},
		{"/ops retry T-1", commands.Act{Event: "retry", Ticket: "T-1"}},
		{"/ops rollback T-1", commands.Act{Event: "rollback", Ticket: "T-1"}},
		{"/ops role grant TechLead Bob", commands.Role{Op: "grant", Role: "techlead", User: "bob"}},
		{"/ops role revoke ops @dave", commands.Role{Op: "revoke", Role: "ops", User: "dave"}},
		{"/ops role list", commands.Role{Op: "list"}},
		{"/ops role", commands.Role{Op: "list"}},
		{"/ops audit T-42 page=2", commands.Audit{Ticket: "T-42", Page: 2}},
		{"/ops audit Alice", commands.Audit{User: "alice", Page: 1}},
	}
	for _, c := range cases {
		got, err := r.Parse(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q:\n got %#v\nwant %#v", c.in, got, c.want)
		}
	}
}

func TestParseErrorsSayWhatToType(t *testing.T) {
	r := commands.Default()
	cases := []struct{ in, msg, hint string }{
		{"/ops aprove T-1", `did you mean "approve"?`, "/ops help"},
		{"/ops reject T-1", "a rejection needs a reason", "/ops reject T-42 <reason>"},
		{"/ops approve 42x", `"42x" 不是工单号 is not a ticket id`, "/ops approve T-42"},
		{"/ops approve", "which ticket?", "/ops approve T-42"},
		{"/ops list wating", `did you mean "waiting"?`, "/ops list"},
		{"/ops list flw=golive", `did you mean "flow"?`, "/ops list"},
		{"/ops list page=0", "is not a page number", ""},
		{"/ops new", "which flow?", "/ops new golive"},
		{"/ops new golive service", `"service" 不是 key=value 格式`, ""},
		{"/ops new golive a=1 a=2", "field a given twice", ""},
		{`/ops new golive impact="unclosed`, "a quote is not closed", "impact="},
		{"/ops role grant", "needs a role and a user", "/ops role grant techlead bob"},
		{"/ops role grant te$t bob", "role names use letters", ""},
		{"/ops role grnt x y", `did you mean "grant"?`, ""},
		{"/ops show T-1 T-2", "show takes one ticket id", ""},
		{strings.Repeat("x", commands.MaxInput+1), "a command is at most 8000 bytes", ""},
	}
	for _, c := range cases {
		_, err := r.Parse(c.in)
		ue, ok := err.(*flows.UserError)
		if !ok {
			t.Errorf("%q: err %v, want a user error", c.in, err)
			continue
		}
		if !strings.Contains(ue.Message, c.msg) || !strings.Contains(ue.Hint, c.hint) {
			t.Errorf("%q: got %q / %q, want %q / %q", c.in, ue.Message, ue.Hint, c.msg, c.hint)
		}
	}
}

func TestRegistryRefusesDuplicates(t *testing.T) {
	_, err := commands.NewRegistry(commands.Spec{Name: "show"}, commands.Spec{Name: "list", Aliases: []string{"show"}})
	if err == nil || !strings.Contains(err.Error(), `"show" registered twice`) {
		t.Fatalf("err %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"/ops new golive a=\"b c\"", "@opsbot status T-1", "approve T-1#3 ok", "“x", "/ops list page=999999999999",
		"/ops audit T-", "<@U1> 待办", "/ops role grant a b", "\\\"", "'"} {
		f.Add(s)
	}
	r := commands.Default()
	f.Fuzz(func(t *testing.T, s string) {
		req, err := r.Parse(s)
		if err == nil && req == nil {
			t.Fatal("nil request without error")
		}
		if err != nil {
			if _, ok := err.(*flows.UserError); !ok {
				t.Fatalf("non-user error %T %v", err, err)
			}
		}
		if a, ok := req.(commands.Act); ok && !strings.HasPrefix(a.Ticket, "T-") {
			t.Fatalf("act on %q", a.Ticket)
		}
	})
}

// TestChineseInputIsUnderstood: full-width signs, a command run into its
// ticket, Chinese synonyms and greetings.
func TestChineseInputIsUnderstood(t *testing.T) {
	r := commands.Default()
	cases := []struct {
		in   string
		want commands.Request
	}{
		{"同意T-9", commands.Act{Event: "approve", Ticket: "T-9"}},
		{"同意 Ｔ－９ 好的", commands.Act{Event: "approve", Ticket: "T-9", Comment: "好的"}},
		{"＠opsbot 同意 T-9", commands.Act{Event: "approve", Ticket: "T-9"}},
		{"通过 T2", commands.Act{Event: "approve", Ticket: "T-2"}},
		{"提交工单 golive service＝payments", commands.New{Flow: "golive", Fields: map[string]string{"service": "payments"}}},
		{"你好", commands.Help{Short: true}},
		{"hi!", commands.Help{Short: true}},
	}
	for _, c := range cases {
		got, err := r.Parse(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: got %#v %v, want %#v", c.in, got, err, c.want)
		}
	}
	for in, want := range map[string]string{
		"审批 T-9":     "同意用 同意 T-9 (approve)",
		"aprove T-1": `did you mean "approve"`,
		"帮主":         "未知命令",
	} {
		_, err := r.Parse(in)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), `"?"`) {
			t.Errorf("%q: %v, want it to say %q and never suggest \"?\"", in, err, want)
		}
	}
}

func TestTooLongStatesTheLimit(t *testing.T) {
	_, err := commands.Default().Parse("/ops new golive impact=" + strings.Repeat("x", 9000))
	if err == nil || !strings.Contains(err.Error(), "a command is at most 8000 bytes (about 2666 Chinese characters); this one has 9023") {
		t.Fatalf("err %v", err)
	}
}
