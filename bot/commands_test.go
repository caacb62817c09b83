package bot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/state"
)

func TestRoleGrantsAreAdminOnlyAuditedAndCaseInsensitive(t *testing.T) {
	k := bottest.New(t)
	mustContain(t, bottest.Title(k.Say("alice", "/ops role grant techlead alice")), "only admins can grant or revoke roles")
	mustContain(t, bottest.Title(k.Say("root", "/ops role grant TechLead Carol")), "granted techlead → carol")
	mustContain(t, bottest.Title(k.Say("root", "/ops role grant techlead CAROL")), "no change")
	mustContain(t, bottest.Title(k.Say("root", "/ops role grant techlead nobody")), "no user called nobody")
	k.Say("alice", goliveNew)
	mustContain(t, bottest.Title(k.Say("Carol", "/ops approve T-1")), "T-1 approve")
	mustContain(t, bottest.Title(k.Say("root", "/ops role revoke techlead carol")), "revoked techlead → carol")
	k.Say("alice", `/ops new golive service=billing version=v1 rollback_app=x`)
	mustContain(t, bottest.Title(k.Say("carol", "/ops approve T-2")), "you are not one")
	roles := k.Say("bob", "/ops role list")[0]
	found := false
	for _, f := range roles.Fields {
		found = found || (f.Label == "techlead" && f.Value == "bert, bob")
	}
	if !found {
		t.Fatalf("role list %+v", roles.Fields)
	}
	k.Bot.FlushAudit(context.Background())
	entries, _, _ := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{User: "ROOT"}, 0, 100)
	var actions []string
	for _, e := range entries {
		actions = append(actions, e.Action+" "+e.Args+" "+e.Result)
	}
	got := strings.Join(actions, "\n")
	for _, want := range []string{"role grant techlead carol ok", "role revoke techlead carol ok", "command role /ops role grant techlead nobody refused: unknown_user"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit lacks %q:\n%s", want, got)
		}
	}
}

func TestListScopesAndAuditAccess(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML(`
flows:
  - name: restart
    fields: [{name: service, required: true}]
    stages: [{name: approval, kind: approval, roles: [ops]}]
`))
	for i := 0; i < 23; i++ {
		k.Say("alice", fmt.Sprintf(`/ops new golive service=s%d version=v1 rollback_app=x`, i))
	}
	k.Say("dave", `/ops new restart service=x`)
	k.Say("bob", "/ops approve T-3")
	w := k.Say("bob", "/ops list waiting")[0]
	if strings.Contains(w.Body, "T-3 ") || !strings.Contains(w.Body, "T-23 ") || !strings.Contains(w.Context, "page=2") {
		t.Fatalf("bob's waiting list:\n%s\n%s", w.Body, w.Context)
	}
	w2 := k.Say("bob", "/ops list waiting page=2")[0]
	if n := strings.Count(w2.Body, "\nT-") + 1; n != 2 || w2.Context != "" {
		t.Fatalf("page 2 has %d tickets:\n%s", n, w2.Body)
	}
	if b := k.Say("alice", "/ops list waiting")[0].Body; !strings.Contains(b, "No tickets") {
		t.Fatalf("alice waits on nothing: %s", b)
	}
	if b := k.Say("dave", "/ops list mine")[0].Body; strings.Count(b, "T-") != 1 || !strings.Contains(b, "T-24") {
		t.Fatalf("dave's tickets: %s", b)
	}
	if b := k.Say("dave", "/ops list all flow=restart")[0].Body; strings.Count(b, "T-") != 1 {
		t.Fatalf("flow filter: %s", b)
	}
	mustContain(t, bottest.Title(k.Say("dave", "/ops list all flow=golve")), `unknown flow "golve"`)
	mustContain(t, bottest.Title(k.Say("bob", "/ops audit")), "only admins and auditors see the whole audit log")
	mustContain(t, bottest.Title(k.Say("ivan", "/ops audit T-1")), "you can see the audit log of tickets you may read")
	mustContain(t, k.Say("bob", "/ops audit T-1")[0].Title, "Audit log · T-1") // a role of the flow
	mustContain(t, k.Say("alice", "/ops audit T-3")[0].Body, "bob@local command approve T-3")
	mustContain(t, k.Say("root", "/ops audit bob")[0].Body, "/ops approve T-3")
	mustContain(t, k.Say("alice", "/ops show T-3")[1].Body, "bob 同意 Approve · 方案审批 Plan review → 测试签收 Test sign-off")
}

func TestHelpExplainsCommandsAndFlows(t *testing.T) {
	k := bottest.New(t)
	h := k.Say("alice", "/ops help")[0]
	for _, want := range []string{"/ops new <flow> key=value", "golive (软件上线 Software go-live) 必填 required: service, version, rollback_app"} {
		mustContain(t, h.Body, want)
	}
	mustContain(t, k.Say("alice", "/ops help golive")[0].Body, "hotfix (紧急修复 Hotfix, 可选 optional)")
	mustContain(t, k.Say("alice", "/ops help approve")[0].Body, "/ops approve T-42 [comment]")
	mustContain(t, bottest.Title(k.Say("alice", "/ops new nosuch a=b")), `unknown flow "nosuch"`)
}

func TestInboxLongPollAndHotBackup(t *testing.T) {
	k := bottest.New(t)
	done := make(chan []byte)
	go func() {
		resp, err := http.Get(k.URL + "/api/inbox?user=bob&after=0&wait=10s")
		if err != nil {
			done <- nil
			return
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		done <- b.Bytes()
	}()
	k.Say("alice", goliveNew)
	k.Deliver()
	var inbox struct {
		Entries []struct {
			Kind string `json:"kind"`
		} `json:"entries"`
	}
	json.Unmarshal(<-done, &inbox)
	if len(inbox.Entries) != 1 || inbox.Entries[0].Kind != "notice" {
		t.Fatalf("long poll returned %+v", inbox)
	}
	// opsbot backup talks to the running bot, which holds the file lock.
	dest := filepath.Join(t.TempDir(), "backup.db")
	cfg := *k.Cfg
	cfg.Listen = k.Bot.Addr()
	var out, errb bytes.Buffer
	if code := bot.BackupTo(&cfg, dest, &out); code != nil {
		t.Fatalf("backup: %v", code)
	}
	st, err := state.Open(state.Options{Path: dest, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if tk, err := st.Get(context.Background(), "T-1"); err != nil || tk.Requester != "alice" {
		t.Fatalf("backup: %+v %v %s", tk, err, errb.String())
	}
}
