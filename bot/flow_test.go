package bot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/state"
	"opsbot/templates"
)

const goliveNew = `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" db_scripts="alter table t add c int"`

func mustContain(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("got %q, want it to contain %q", got, want)
	}
}

func approve(t *testing.T, k *bottest.Kit, user, id, wantStage string) {
	t.Helper()
	r := k.Say(user, "/ops approve "+id)
	mustContain(t, bottest.Title(r), id+" approve")
	if got := k.Ticket(id).Stage; got != wantStage {
		t.Fatalf("after %s approved %s: stage %s, want %s", user, id, got, wantStage)
	}
}

func TestGoLiveRequestApprovalsScriptDone(t *testing.T) {
	k := bottest.New(t)
	r := k.Say("alice", goliveNew)
	mustContain(t, bottest.Title(r), "T-1 submitted")
	card := bottest.Card(r)
	if card.Ticket != "T-1" || card.Version != 1 {
		t.Fatalf("card %+v", card)
	}
	if _, ok := bottest.Button(card, "Approve"); !ok {
		t.Fatalf("new ticket card has no Approve button: %+v", card.Buttons)
	}
	// The tech lead is told, with a card to press.
	bobCards := k.Inbox("bob")
	if len(bobCards) != 1 || !strings.Contains(bobCards[0].Msg.Title, "needs your approval") {
		t.Fatalf("bob's inbox: %+v", bobCards)
	}
	btn, _ := bottest.Button(*bobCards[0].Msg, "Approve")
	r = k.Click("bob", btn.Value)
	mustContain(t, bottest.Title(r), "T-1 approve")
	if got := k.Ticket("T-1").Stage; got != "test_signoff" {
		t.Fatalf("stage %s", got)
	}
	// bob's card is redrawn in place: its buttons no longer work.
	bobCards = k.Inbox("bob")
	for _, b := range bobCards[0].Msg.Buttons {
		if !b.Disabled {
			t.Fatalf("bob's old card still has a live button %+v", b)
		}
	}
	approve(t, k, "carol", "T-1", "staging_signoff")
	approve(t, k, "carol", "T-1", "db_migrate")
	approve(t, k, "dave", "T-1", "deploy_approval")
	r = k.Say("dave", "/ops approve T-1 go ahead")
	mustContain(t, bottest.Title(r), "T-1 approve")
	tk := k.WaitStage("T-1", "verify")
	if res := tk.Results["deploy"]; !res.OK || !strings.Contains(res.Output, "deployed payments v1.4.2") {
		t.Fatalf("deploy result %+v", res)
	}
	if tk.Outputs["deployed_version"] != "v1.4.2" {
		t.Fatalf("outputs %+v", tk.Outputs)
	}
	approve(t, k, "carol", "T-1", "done")
	tk = k.Ticket("T-1")
	if tk.Open || len(tk.Locks) != 0 {
		t.Fatalf("done ticket still open or locked: %+v", tk)
	}
	if h, _ := k.Bot.Store().LockHolder(context.Background(), "service:payments"); h != "" {
		t.Fatalf("lock still held by %s", h)
	}
	if runs := k.Runs(); len(runs) != 1 || runs[0] != "deploy T-1 attempt 1" {
		t.Fatalf("script runs %q", runs)
	}
	// Requester and operator are told of the result.
	for _, u := range []string{"alice", "carol"} {
		if n := k.Notices(u); !slices.ContainsFunc(n, func(s string) bool { return strings.Contains(s, "T-1 已完成 done") }) {
			t.Fatalf("%s was not told T-1 is done: %q", u, n)
		}
	}
	// The done card offers only a rollback.
	c := k.Bot.Card(tk)
	if len(c.Buttons) != 1 || !strings.Contains(c.Buttons[0].Label, "Rollback") {
		t.Fatalf("done card buttons %+v", c.Buttons)
	}
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	want := "submit approve approve approve approve approve succeed approve"
	if strings.Join(types, " ") != want {
		t.Fatalf("events %q, want %q", types, want)
	}
}

func TestHotfixTakesTheShortPath(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", `/ops new golive service=api version=v2 rollback_app=redeploy hotfix=yes`)
	approve(t, k, "bob", "T-1", "deploy_approval") // test, staging and DBA stages skipped
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	if got := evs[1].Data["skipped"]; got != "test_signoff,staging_signoff,db_migrate" {
		t.Fatalf("skipped %q", got)
	}
}

func TestGuardsGiveOneOutcomeAndAClearMessage(t *testing.T) {
	k := bottest.New(t)
	card := bottest.Card(k.Say("alice", goliveNew))
	approveBtn, _ := bottest.Button(card, "Approve")

	cases := []struct {
		name, user, text, want string
	}{
		{"self approval", "alice", approveBtn.Value, "cannot approve or reject your own ticket"},
		{"not a role holder", "carol", "/ops approve T-1", "needs a holder of techlead; you are not one"},
		{"unknown ticket", "bob", "/ops approve T-99", "there is no ticket T-99"},
		{"reject needs a reason", "bob", "/ops reject T-1", "a rejection needs a reason"},
		{"cancel by someone else", "bob", "/ops cancel T-1", "only the requester alice or an admin can cancel"},
	}
	for _, c := range cases {
		before := k.Ticket("T-1")
		r := k.Say(c.user, c.text)
		if r[0].Kind != "error" {
			t.Fatalf("%s: reply %+v, want an error", c.name, r[0])
		}
		mustContain(t, r[0].Title+" "+r[0].Body, c.want)
		if after := k.Ticket("T-1"); after.Version != before.Version {
			t.Fatalf("%s changed the ticket: v%d -> v%d", c.name, before.Version, after.Version)
		}
	}

	// First click applies; the same click again is refused as stale.
	r := k.Click("bob", approveBtn.Value)
	mustContain(t, bottest.Title(r), "T-1 approve")
	r = k.Click("bob", approveBtn.Value)
	mustContain(t, bottest.Title(r), "this card is out of date: T-1 moved on to 测试签收 Test sign-off")
	if tk := k.Ticket("T-1"); tk.Version != 2 || tk.Stage != "test_signoff" {
		t.Fatalf("duplicate click applied twice: %+v", tk)
	}
	// A button from the first card pressed by someone else is stale too.
	r = k.Click("carol", approveBtn.Value)
	mustContain(t, bottest.Title(r), "this card is out of date")

	// A second ticket on the same service is refused with the holder.
	r = k.Say("bob", `/ops new golive service=payments version=v9 rollback_app=x`)
	mustContain(t, bottest.Title(r), "service:payments is locked by ticket T-1")
	if _, err := k.Bot.Store().Get(context.Background(), "T-2"); err == nil {
		t.Fatal("refused ticket was stored")
	}
	// Cancel releases the lock, and the resource is free again.
	mustContain(t, bottest.Title(k.Say("alice", "/ops cancel T-1")), "T-1 cancel")
	mustContain(t, bottest.Title(k.Say("bob", `/ops new golive service=payments version=v9 rollback_app=x`)), "T-2 submitted")
}

func TestTwoApproversAtTheSameInstant(t *testing.T) {
	k := bottest.New(t)
	const n = 10
	for i := 1; i <= n; i++ {
		k.Say("alice", fmt.Sprintf(`/ops new golive service=svc%d version=v1 rollback_app=x`, i))
	}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("T-%d", i)
		value := fmt.Sprintf("/ops approve %s#1", id)
		var wg sync.WaitGroup
		replies := make([]string, 2)
		start := make(chan struct{})
		for j, u := range []string{"bob", "bert"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				replies[j] = bottest.Title(k.Click(u, value))
			}()
		}
		close(start)
		wg.Wait()
		ok := 0
		for _, r := range replies {
			switch {
			case strings.Contains(r, id+" approve"):
				ok++
			case strings.Contains(r, "this card is out of date"):
			default:
				t.Fatalf("%s: unexpected reply %q", id, r)
			}
		}
		tk := k.Ticket(id)
		if ok != 1 || tk.Version != 2 || tk.Stage != "test_signoff" {
			t.Fatalf("%s: %d approvals applied, ticket v%d %s; replies %q", id, ok, tk.Version, tk.Stage, replies)
		}
	}
}

func TestApprovalsFromDistinctPeople(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML(`
flows:
  - name: change
    title: Change
    fields: [{name: what, required: true}]
    stages:
      - {name: cab, kind: approval, roles: [techlead], approvals: 2}
`))
	card := bottest.Card(k.Say("alice", "/ops new change what=dns"))
	btn, _ := bottest.Button(card, "Approve")
	mustContain(t, bottest.Title(k.Click("bob", btn.Value)), "T-1 approve")
	if tk := k.Ticket("T-1"); tk.Stage != "cab" || len(tk.Approvals) != 1 {
		t.Fatalf("after one approval: %+v", tk)
	}
	// The same card, still in the same stage, stays valid for others but
	// not for a second approval by bob.
	mustContain(t, bottest.Title(k.Click("bob", btn.Value)), "you already approved T-1")
	mustContain(t, bottest.Title(k.Click("bert", btn.Value)), "T-1 approve")
	if tk := k.Ticket("T-1"); tk.Stage != "done" {
		t.Fatalf("after two approvals: %s", tk.Stage)
	}
}

func TestRemindersEscalationAndExpiry(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", goliveNew)
	e := k.Bot.Engine()
	ctx := context.Background()
	tick := func(d time.Duration) {
		k.Clock.Advance(d)
		if err := e.Tick(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tick(3 * time.Hour)
	if n := k.Notices("bob"); len(n) != 1 {
		t.Fatalf("reminder before its interval: %q", n)
	}
	tick(time.Hour) // 4h: first reminder
	n := k.Notices("bob")
	if len(n) != 2 || !strings.Contains(n[1], "reminder") {
		t.Fatalf("bob after 4h: %q", n)
	}
	if len(k.Notices("erin")) != 0 {
		t.Fatal("escalated after one reminder")
	}
	mustContain(t, bottest.Title(k.Say("erin", "/ops approve T-1")), "needs a holder of techlead")
	tick(4 * time.Hour) // 8h: second reminder, escalation to director
	if n := k.Notices("bob"); len(n) != 3 {
		t.Fatalf("bob after 8h: %q", n)
	}
	en := k.Notices("erin")
	if len(en) != 1 || !strings.Contains(en[0], "escalated to you (director)") {
		t.Fatalf("erin after 8h: %q", en)
	}
	// A second ticket, never approved, expires after 3 days.
	k.Say("alice", `/ops new golive service=other version=v1 rollback_app=x`)
	approve(t, k, "erin", "T-1", "test_signoff") // the escalated role can approve now
	tick(3*24*time.Hour + time.Minute)
	tk := k.Ticket("T-2")
	if tk.Stage != "expired" || tk.Open {
		t.Fatalf("T-2 after 3 days: %s open=%v", tk.Stage, tk.Open)
	}
	if h, _ := k.Bot.Store().LockHolder(ctx, "service:other"); h != "" {
		t.Fatal("expired ticket kept its lock")
	}
	if !slices.ContainsFunc(k.Notices("alice"), func(s string) bool { return strings.Contains(s, "T-2 审批超时已过期 expired") }) {
		t.Fatalf("alice not told of expiry: %q", k.Notices("alice"))
	}
	// T-1 left plan_review: its old timers fire without effect.
	if got := k.Ticket("T-1").Stage; got != "expired" {
		// test_signoff also expires after 3 days, which is right: it was
		// entered more than 3 days before this tick.
		t.Fatalf("T-1 stage %s", got)
	}
}

func TestFailureRetryAndRollback(t *testing.T) {
	k := bottest.New(t)
	k.Touch("fail")
	k.Say("alice", `/ops new golive service=payments version=v3 rollback_app=redeploy hotfix=true`)
	approve(t, k, "bob", "T-1", "deploy_approval")
	k.Say("dave", "/ops approve T-1")
	tk := k.WaitStage("T-1", "failed")
	if tk.FailedStage != "deploy" || !tk.Open || tk.Results["deploy"].ExitCode != 3 {
		t.Fatalf("failed ticket %+v", tk)
	}
	card := k.Bot.Card(tk)
	mustContain(t, card.Body, "deploy failed: disk full")
	for _, l := range []string{"Retry", "Rollback", "Cancel"} {
		if _, ok := bottest.Button(card, l); !ok {
			t.Fatalf("failed card lacks %s: %+v", l, card.Buttons)
		}
	}
	if h, _ := k.Bot.Store().LockHolder(context.Background(), "service:payments"); h != "T-1" {
		t.Fatalf("failed ticket released its lock (holder %q)", h)
	}
	if !slices.ContainsFunc(k.Notices("alice"), func(s string) bool { return strings.Contains(s, "T-1 执行失败 failed") }) {
		t.Fatal("requester not told of the failure")
	}
	mustContain(t, bottest.Title(k.Say("carol", "/ops retry T-1")), "only the requester, an operator")
	k.Remove("fail")
	mustContain(t, bottest.Title(k.Say("alice", "/ops retry T-1")), "T-1 retry")
	k.WaitStage("T-1", "verify")
	approve(t, k, "carol", "T-1", "done")
	mustContain(t, bottest.Title(k.Say("alice", "/ops rollback T-1")), "only holders of ops can roll back")
	// Rolling back cannot be taken back: typed without "confirm", it asks,
	// and its confirm button is the way on.
	ask := k.Say("dave", "/ops rollback T-1")
	mustContain(t, bottest.Title(ask), "please confirm: 回滚会撤销已做的变更 rolling back undoes what T-1 changed")
	confirm, ok := bottest.Button(ask[0], "Confirm")
	if !ok || confirm.Value != "/ops rollback T-1 confirm" {
		t.Fatalf("the confirmation offers %+v", ask[0].Buttons)
	}
	if tk := k.Ticket("T-1"); tk.Stage != "done" {
		t.Fatalf("an unconfirmed rollback ran: %s", tk.Stage)
	}
	// The done card's rollback button carries the confirmation its
	// platform asks for before sending it.
	rb, _ := bottest.Button(k.Bot.Card(k.Ticket("T-1")), "Rollback")
	if rb.Confirm == "" || !strings.HasSuffix(rb.Value, " confirm") || strings.Contains(rb.Unconfirmed, "confirm") {
		t.Fatalf("rollback button %+v", rb)
	}
	mustContain(t, bottest.Title(k.Click("dave", confirm.Value)), "T-1 rollback")
	tk = k.WaitStage("T-1", "rolled_back")
	mustContain(t, tk.Results["rolling_back"].Output, "rolled back from v3")
	if runs := k.Runs(); len(runs) != 3 || runs[2] != "rollback T-1 from v3" {
		t.Fatalf("runs %q", runs)
	}
	mustContain(t, bottest.Title(k.Say("dave", "/ops rollback T-1")), "rollback is not possible now")
}

func TestTransientFailureRetriedWithBackoff(t *testing.T) {
	k := bottest.New(t)
	k.Touch("tempfail")
	k.Say("alice", `/ops new golive service=payments version=v3 rollback_app=redeploy hotfix=true`)
	approve(t, k, "bob", "T-1", "deploy_approval")
	k.Say("dave", "/ops approve T-1")
	ctx := context.Background()
	// Wait for the first attempt to be requeued.
	deadline := time.Now().Add(10 * time.Second)
	for {
		j, err := k.Bot.Store().Job(ctx, "T-1/3")
		if err == nil && j.Attempt == 1 && j.Status == state.JobQueued {
			if !j.NextAt.After(k.Clock.Now()) {
				t.Fatalf("retry not backed off: next %v now %v", j.NextAt, k.Clock.Now())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %+v err %v", j, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := k.Ticket("T-1").Stage; got != "deploy" {
		t.Fatalf("transient failure moved the ticket to %s", got)
	}
	k.Clock.Advance(time.Minute)
	k.Bot.Runner().RunDue(ctx)
	k.WaitStage("T-1", "verify")
	if runs := k.Runs(); len(runs) != 2 || runs[1] != "deploy T-1 attempt 2" {
		t.Fatalf("runs %q", runs)
	}
}

func TestNotificationsAreRetriedNotLost(t *testing.T) {
	k := bottest.New(t)
	k.Bot.Local().FailNext(1000)
	k.Say("alice", goliveNew)
	k.Deliver()
	if n, _ := k.Bot.Store().OutboxLen(context.Background()); n == 0 {
		t.Fatal("failed notifications left the outbox")
	}
	k.Bot.Local().FailNext(0)
	k.Deliver() // not due yet
	if len(k.Notices("bob")) != 0 {
		t.Fatal("retried before the backoff")
	}
	k.Clock.Advance(time.Hour)
	if n := k.Notices("bob"); len(n) != 1 {
		t.Fatalf("bob's notices after retry: %q", n)
	}
	if n, _ := k.Bot.Store().OutboxLen(context.Background()); n != 0 {
		t.Fatalf("%d notifications still queued", n)
	}
	mustContain(t, k.LogText(), "notification not delivered, will retry")
}

func TestSecretsNeverReachAuditLogsOrReplies(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	secrets := []string{"hunter2-very-secret", "xoxb-1234567890-abcdefghijkl", jwt, "s3cr3t-env-value"}
	t.Setenv("OPSBOT_TEST_SECRET", "s3cr3t-env-value")
	k := bottest.New(t, bottest.WithYAML("secrets_env: [OPSBOT_TEST_SECRET]"))
	var replies []templates.Message
	replies = append(replies, k.Say("alice", `/ops new golive service=payments version=v1 rollback_app="restore with password=hunter2-very-secret" impact="token xoxb-1234567890-abcdefghijkl"`)...)
	replies = append(replies, k.Say("alice", "/ops new golive password=hunter2-very-secret service=x")...)
	replies = append(replies, k.Say("bob", "/ops approve T-1 auth: Bearer "+jwt)...)
	replies = append(replies, k.Say("bob", "/ops show T-1 s3cr3t-env-value")...)
	replies = append(replies, k.Say("bob", "/ops list waiting")...)
	replies = append(replies, k.Say("root", "/ops audit")...)
	replies = append(replies, k.Say("bob", "/ops show T-1")...)
	raw, _ := json.Marshal(replies)
	k.Bot.FlushAudit(context.Background())
	entries, _, err := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{}, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	auditRaw, _ := json.Marshal(entries)
	tk := k.Ticket("T-1")
	ticketRaw, _ := json.Marshal(tk)
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	evRaw, _ := json.Marshal(evs)
	var inbox []byte
	for _, u := range []string{"alice", "bob", "carol"} {
		b, _ := json.Marshal(k.Inbox(u))
		inbox = append(inbox, b...)
	}
	for _, where := range []struct{ name, text string }{
		{"replies", string(raw)}, {"audit log", string(auditRaw)}, {"log", k.LogText()},
		{"ticket", string(ticketRaw)}, {"events", string(evRaw)}, {"inbox", string(inbox)},
	} {
		for _, s := range secrets {
			if strings.Contains(where.text, s) {
				t.Errorf("secret %q found in %s", s[:10], where.name)
			}
		}
	}
	if !strings.Contains(string(auditRaw), "[REDACTED]") {
		t.Fatal("audit log shows no redaction at all; did the commands run?")
	}
	if len(entries) < 7 {
		t.Fatalf("only %d audit entries", len(entries))
	}
}

// TestRejectAfterDeployRollsBack is the incident: carol rejects a go-live
// at production verification after the deploy succeeded. The rollback
// runs, the ticket ends rolled back, dave stays the operator, and alice
// heard each stage pass on the way.
func TestRejectAfterDeployRollsBack(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", `/ops new golive service=payments version=v3 rollback_app=redeploy hotfix=true`)
	approve(t, k, "bob", "T-1", "deploy_approval")
	k.Say("dave", "/ops approve T-1 go")
	tk := k.WaitStage("T-1", "verify")
	if tk.Operator != "dave" {
		t.Fatalf("operator %q, want the deployer", tk.Operator)
	}
	// The deployer hears how the deploy went; the verifier's card shows the
	// deploy result she is verifying.
	if !slices.ContainsFunc(k.Notices("dave"), func(s string) bool { return strings.Contains(s, "T-1 步骤成功 step succeeded") }) {
		t.Fatalf("dave was not told the deploy's result: %q", k.Notices("dave"))
	}
	var verifying string
	for _, e := range k.Inbox("carol") {
		if e.Kind == "notice" && strings.Contains(e.Msg.Title, "needs your approval") {
			verifying = e.Msg.Body
		}
	}
	mustContain(t, verifying, "✅ 部署 Deploy 成功 succeeded")
	mustContain(t, bottest.Title(k.Say("carol", "/ops reject T-1 checkout returns 500")), "T-1 reject")
	tk = k.WaitStage("T-1", "rolled_back")
	if tk.Operator != "dave" || !strings.Contains(tk.Results["rolling_back"].Output, "rolled back from v3") {
		t.Fatalf("after the reject: operator %q, rollback %+v", tk.Operator, tk.Results["rolling_back"])
	}
	// People read stage titles, never stage names.
	body := k.Bot.Card(tk).Body
	mustContain(t, body, "✅ 回滚中 rolling back 成功 succeeded")
	if strings.Contains(body, "rolling_back") || strings.Contains(body, "正在撤销") {
		t.Fatalf("card body shows a stage name or an undo still under way: %q", body)
	}
	mustContain(t, body, "已撤销已做的变更 what was changed is undone")
	if runs := k.Runs(); len(runs) != 2 || runs[1] != "rollback T-1 from v3" {
		t.Fatalf("runs %q", runs)
	}
	notices := k.Notices("alice")
	for _, want := range []string{"方案审批 Plan review 已通过 passed (bob)", "运维确认 Ops go-ahead 已通过 passed (dave)", "部署 Deploy 已通过 passed", "T-1 carol 已驳回 rejected", "T-1 已回滚 rolled back"} {
		if !slices.ContainsFunc(notices, func(s string) bool { return strings.Contains(s, want) }) {
			t.Errorf("alice did not hear %q: %q", want, notices)
		}
	}
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	var who []string
	for _, ev := range evs {
		who = append(who, ev.Type+":"+ev.Actor)
	}
	for _, want := range []string{"approve:bob", "approve:dave", "reject:carol", "succeed:opsbot"} {
		if !slices.Contains(who, want) {
			t.Errorf("history lacks %s: %v", want, who)
		}
	}
}

// TestMuteProgress: the requester mutes a ticket's progress and still
// hears its result.
func TestMuteProgress(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", `/ops new golive service=payments version=v3 rollback_app=redeploy hotfix=true`)
	mustContain(t, bottest.Title(k.Say("alice", "/ops mute T-1")), "you will not hear T-1's progress")
	mustContain(t, bottest.Title(k.Say("mallory", "/ops mute T-1")), "you may not read T-1")
	approve(t, k, "bob", "T-1", "deploy_approval")
	k.Say("dave", "/ops approve T-1")
	k.WaitStage("T-1", "verify")
	approve(t, k, "carol", "T-1", "done")
	k.Deliver()
	notices := k.Notices("alice")
	if slices.ContainsFunc(notices, func(s string) bool { return strings.Contains(s, "已通过 passed") }) {
		t.Fatalf("a muted requester heard progress: %q", notices)
	}
	if !slices.ContainsFunc(notices, func(s string) bool { return strings.Contains(s, "T-1 已完成 done") }) {
		t.Fatalf("the result did not come: %q", notices)
	}
}

// TestCardsOfferWhatEachPersonMayDo: a card sent to a person offers only
// the actions that person may take; the shared card says who may act.
func TestCardsOfferWhatEachPersonMayDo(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", `/ops new golive service=payments version=v3 rollback_app=redeploy hotfix=true`)
	approve(t, k, "bob", "T-1", "deploy_approval")
	labels := func(user string, title string) []string {
		var out []string
		for _, e := range k.Inbox(user) {
			if e.Kind == "notice" && strings.Contains(e.Msg.Title, title) {
				out = nil
				for _, b := range e.Msg.Buttons {
					out = append(out, b.Label)
				}
			}
		}
		return out
	}
	// alice heard plan review pass: she may cancel, never approve her own.
	if got := labels("alice", "已通过 passed"); !slices.Equal(got, []string{"取消 Cancel"}) {
		t.Fatalf("alice's card offers %q", got)
	}
	// dave (ops) is asked to approve: approve and reject, not cancel.
	if got := labels("dave", "needs your approval"); !slices.Equal(got, []string{"同意 Approve", "驳回 Reject"}) {
		t.Fatalf("dave's card offers %q", got)
	}
	// The shared card names who may act.
	card := k.Bot.Card(k.Ticket("T-1"))
	mustContain(t, fmt.Sprint(card.Fields), "ops: dave")
}

// TestWordsPeopleType: greetings, typos in help, flow titles as names,
// ticket ids without their dash, and tickets that do not exist.
func TestWordsPeopleType(t *testing.T) {
	k := bottest.New(t)
	mustContain(t, bottest.Title(k.Say("alice", "你好")), "我是 opsbot")
	mustContain(t, bottest.Title(k.Say("alice", "/ops help aprove")), `did you mean "approve"`)
	mustContain(t, bottest.Title(k.Say("alice", `/ops new 软件上线 service=payments version=v3 rollback_app=redeploy`)), "T-1 submitted")
	mustContain(t, bottest.Title(k.Say("alice", "/ops show T1")), "T-1")
	mustContain(t, bottest.Title(k.Say("root", "/ops audit T-77")), "there is no ticket T-77")
	mustContain(t, bottest.Title(k.Say("bob", "同意T-1")), "T-1 approve")
	help := k.Say("alice", "/ops help")
	var all string
	for _, m := range help {
		all += templates.Text(m)
	}
	for _, alias := range []string{"也可写 also: 回滚, restore, 恢复", "也可写 also: 静音", "也可写 also: 新建, create, 提交工单"} {
		mustContain(t, all, alias)
	}
}

// TestTheTerminalTellsTheStory: the log has one line per ticket event,
// in words; the command line points at what is missing or misspelt.
func TestTheTerminalTellsTheStory(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", `/ops new golive service=payments version=v3 rollback_app=redeploy hotfix=true`)
	approve(t, k, "bob", "T-1", "deploy_approval")
	k.Say("dave", "/ops approve T-1")
	k.WaitStage("T-1", "verify")
	// The line is written once the step's transition is committed, which
	// the stage is seen by.
	waitFor(t, "the deploy's log line", func() bool {
		return strings.Contains(k.LogText(), "T-1 succeed by opsbot: 部署 Deploy -> 生产验证 Production verification")
	})
	log := k.LogText()
	for _, want := range []string{"T-1 created by alice (golive): 方案审批 Plan review",
		"T-1 approve by bob: 方案审批 Plan review -> 运维确认 Ops go-ahead",
		"T-1 approve by dave: 运维确认 Ops go-ahead -> 部署 Deploy"} {
		mustContain(t, log, want)
	}
	var out, errb strings.Builder
	if code := bot.Main([]string{"hlep"}, nil, &out, &errb); code != 2 {
		t.Fatalf("exit %d", code)
	}
	mustContain(t, errb.String(), `did you mean "help"`)
	errb.Reset()
	bot.Main([]string{"backup"}, nil, &out, &errb)
	mustContain(t, errb.String(), "name the file to write, e.g. opsbot backup")
}

// TestRolesThatNothingUses: granting a role no flow asks for warns with
// the likely one; config check names unheld stage roles and unused ones.
func TestRolesThatNothingUses(t *testing.T) {
	k := bottest.New(t)
	r := k.Say("root", "/ops role grant techlaed alice")
	mustContain(t, r[0].Body, `no flow uses the role techlaed (是不是 did you mean "techlead"?)`)
	if r := k.Say("root", "/ops role grant techlead alice"); r[0].Body != "" {
		t.Fatalf("a used role warned: %q", r[0].Body)
	}
	cfg, err := bot.ParseConfig([]byte(`
users:
  - {name: alice, roles: [techlaed]}
flows:
  - name: solo
    fields: [{name: x}]
    stages: [{name: sign, kind: approval, roles: [qa]}]
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(cfg.Warnings(), "\n")
	mustContain(t, w, "flows.solo.stages.sign waits for qa, which no user in users: holds")
	mustContain(t, w, `users.alice.roles: no flow uses the role "techlaed"`)
	// Nobody is admin, so nobody can grant qa: the stage can never be
	// approved, and the config is refused. An admin turns it into a warning.
	errs := cfg.Check(cfg.Executors())
	mustContain(t, fmt.Sprint(errs), "flows.solo.stages.sign: nobody can ever approve it: it needs 1 approval(s) from qa, held by 0 user(s)")
	cfg, err = bot.ParseConfig([]byte(`
users:
  - {name: alice, roles: [qa]}
  - {name: root, roles: [admin]}
flows:
  - name: solo
    fields: [{name: x}]
    stages: [{name: sign, kind: approval, roles: [qa], approvals: 2}]
`), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if errs := cfg.Check(cfg.Executors()); strings.Contains(fmt.Sprint(errs), "nobody can ever approve") {
		t.Fatalf("with an admin who can grant the role, the stage was refused: %v", errs)
	}
}
