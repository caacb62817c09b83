package flows_test

import (
	"strings"
	"testing"

	"opsbot/flows"
)

func TestFieldValues(t *testing.T) {
	cases := []struct {
		field     flows.Field
		in, out   string
		errSubstr string
	}{
		{flows.Field{Name: "ips", Type: flows.TypeIPList}, " 10.0.0.1, 10.0.0.2 ,", "10.0.0.1,10.0.0.2", ""},
		{flows.Field{Name: "ips", Type: flows.TypeIPList}, "10.0.0.1,10.0.0.300", "", `第 2 项 "10.0.0.300" 不是有效的 IP 地址 · entry 2 "10.0.0.300" is not a valid IP address`},
		{flows.Field{Name: "ips", Type: flows.TypeIPList}, "10.0.0.1,,10.0.0.2", "", "entry 2 is empty"},
		{flows.Field{Name: "ip", Type: flows.TypeIP}, "::1", "::1", ""},
		{flows.Field{Name: "env", Type: flows.TypeEnum, Enum: []string{"sit", "uat", "prod"}}, "PROD", "prod", ""},
		{flows.Field{Name: "env", Type: flows.TypeEnum, Enum: []string{"sit", "uat", "prod"}}, "qa", "", "choose one of sit, uat, prod"},
		{flows.Field{Name: "hotfix", Type: flows.TypeBool}, "是", "true", ""},
		{flows.Field{Name: "hotfix", Type: flows.TypeBool}, "maybe", "", "use true or false"},
		{flows.Field{Name: "at", Type: flows.TypeDateTime}, "2026-05-09 20:00", "2026-05-09T20:00:00+08:00", ""},
		{flows.Field{Name: "at", Type: flows.TypeDateTime}, "tomorrow", "", "is not a date and time"},
		{flows.Field{Name: "sha", Type: flows.TypeCommit}, "3f2a9c1", "3f2a9c1", ""},
		{flows.Field{Name: "sha", Type: flows.TypeCommit}, "main", "", "is not a commit sha"},
		{flows.Field{Name: "url", Type: flows.TypeURL}, "ftp://x", "", "is not an http(s) URL"},
		{flows.Field{Name: "n", Type: flows.TypeInt, Example: "3"}, "three", "", `n="three" 不是整数 is not a whole number (例 e.g. n=3)`},
		{flows.Field{Name: "service", Pattern: "[a-z][a-z0-9-]{1,39}", Example: "payments"}, "Payments_Svc", "",
			`service="Payments_Svc" 格式不对 does not match the pattern [a-z][a-z0-9-]{1,39} (例 e.g. service=payments)`},
	}
	for _, c := range cases {
		f := &flows.Flow{Name: "x", Fields: []flows.Field{c.field}, Stages: []flows.Stage{{Name: "a", Kind: "approval", Roles: []string{"r"}}}}
		if err := f.Validate(nil); err != nil {
			t.Fatal(err)
		}
		got, err := f.Fields[0].CheckValue(c.in)
		if c.errSubstr != "" {
			if err == nil || !strings.Contains(err.Error(), c.errSubstr) {
				t.Errorf("%s=%q: err %v, want %q", c.field.Name, c.in, err, c.errSubstr)
			}
			continue
		}
		if err != nil || got != c.out {
			t.Errorf("%s=%q: got %q %v, want %q", c.field.Name, c.in, got, err, c.out)
		}
	}
}

func golive(t *testing.T) *flows.Flow {
	fl, err := flows.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fl {
		if f.Name == "golive" {
			if err := f.Validate([]string{"script"}); err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatal("no golive flow")
	return nil
}

func TestCheckFieldsListsEveryProblem(t *testing.T) {
	f := golive(t)
	_, err := f.CheckFields(map[string]string{"servce": "payments", "commit": "zzz", "hotfix": "x"})
	ue, ok := err.(*flows.UserError)
	if !ok {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{`unknown field "servce" (是不是 did you mean "service"?)`, `commit="zzz" 不是提交号 is not a commit sha`,
		`hotfix="x": 请填 true 或 false · use true or false`, "missing required fields: service, version, rollback_app"} {
		if !strings.Contains(ue.Message, want) {
			t.Errorf("message %q lacks %q", ue.Message, want)
		}
	}
	if !strings.Contains(ue.Hint, "/ops new golive service=payments version=v1.4.2") {
		t.Errorf("hint %q", ue.Hint)
	}
	got, err := f.CheckFields(map[string]string{"service": "payments", "version": "v1", "rollback_app": "redeploy", "HOTFIX": "yes"})
	if err != nil || got["hotfix"] != "true" || got["impact"] != "none" {
		t.Fatalf("got %v %v", got, err)
	}
}

func TestValidateRefusesBadFlows(t *testing.T) {
	base := func() *flows.Flow {
		return &flows.Flow{Name: "f", Fields: []flows.Field{{Name: "a"}}, Stages: []flows.Stage{{Name: "s", Kind: "approval", Roles: []string{"r"}}}}
	}
	cases := []struct {
		change func(*flows.Flow)
		want   string
	}{
		{func(f *flows.Flow) { f.Name = "Bad Name" }, "use lower-case letters"},
		{func(f *flows.Flow) { f.Stages = nil }, "needs at least one stage"},
		{func(f *flows.Flow) { f.Stages[0].Name = "done" }, "and none of submitted, done"},
		{func(f *flows.Flow) { f.Stages[0].Roles = nil }, "an approval stage needs roles"},
		{func(f *flows.Flow) { f.Stages[0].Kind = "vote" }, `kind "vote": want approval, action, wait or release`},
		{func(f *flows.Flow) { f.Stages[0] = flows.Stage{Name: "s", Kind: "action", Executor: "nope"} }, `unknown executor "nope"`},
		{func(f *flows.Flow) { f.Locks = []string{"svc:{b}"} }, "refers to {b}, which is not a field"},
		{func(f *flows.Flow) { f.Fields = append(f.Fields, flows.Field{Name: "a"}) }, "field a declared twice"},
		{func(f *flows.Flow) { f.Fields[0].Type = "enum" }, "enum needs a list of values"},
		{func(f *flows.Flow) { f.Stages[0].Window = &flows.Window{Daily: "9-18"} }, "want e.g. 09:00-18:00"},
		{func(f *flows.Flow) { f.Stages[0].EscalateTo = "boss" }, "escalate_to needs remind_every"},
	}
	for _, c := range cases {
		f := base()
		c.change(f)
		err := f.Validate([]string{"script"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("err %v, want %q", err, c.want)
		}
	}
}

func TestTableAndDiagram(t *testing.T) {
	f := golive(t)
	d := f.Mermaid()
	for _, want := range []string{"stateDiagram-v2", "plan_review --> test_signoff: approve", "test_signoff --> staging_signoff: skip",
		"deploy --> failed: interrupt", "failed --> deploy: retry", "done --> rolling_back: rollback", "rolling_back --> rolled_back: succeed",
		"plan_review --> expired: expire", "failed --> cancelled: cancel",
		`state "方案审批 Plan review<br/>plan_review" as plan_review`, `state "已回滚 rolled back<br/>rolled_back" as rolled_back`} {
		if !strings.Contains(d, want) {
			t.Errorf("diagram lacks %q", want)
		}
	}
	if strings.Contains(d, "deploy --> cancelled") {
		t.Error("a running action must not be cancellable")
	}
}
