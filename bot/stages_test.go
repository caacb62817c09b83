package bot_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/state"
	"opsbot/templates"
)

const waitFlow = `
flows:
  - name: dns
    fields: [{name: name, required: true}]
    stages:
      - {name: approval, kind: approval, roles: [ops]}
      - {name: resolve, kind: wait, executor: script, params: {command: check.sh}, poll: 30s, timeout: 5m}
`

func TestWaitStagePollsUntilTrueOrTimesOut(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML(waitFlow))
	ctx := context.Background()
	k.Say("alice", "/ops new dns name=a.example")
	approve(t, k, "dave", "T-1", "resolve")
	waitFor(t, "the first check", func() bool { return len(k.Runs()) == 1 })
	waitFor(t, "the check to be requeued", func() bool {
		j, err := k.Bot.Store().Job(ctx, "T-1/2")
		return err == nil && j.Status == "queued" && j.Attempt == 1
	})
	if got := k.Ticket("T-1").Stage; got != "resolve" {
		t.Fatalf("a false condition moved the ticket to %s", got)
	}
	k.Touch("ready")
	k.Clock.Advance(30 * time.Second)
	k.Bot.Runner().RunDue(ctx)
	k.WaitStage("T-1", "done")

	k.Remove("ready")
	k.Say("alice", "/ops new dns name=b.example")
	approve(t, k, "dave", "T-2", "resolve")
	waitFor(t, "the first check of T-2", func() bool { return len(k.Runs()) == 3 })
	waitFor(t, "T-2 requeued", func() bool {
		j, _ := k.Bot.Store().Job(ctx, "T-2/2")
		return j.Status == "queued"
	})
	// Cancel while waiting is allowed; the queued check is then dropped.
	k.Say("alice", "/ops new dns name=c.example")
	approve(t, k, "dave", "T-3", "resolve")
	mustContain(t, bottest.Title(k.Say("alice", "/ops cancel T-3")), "T-3 cancel")

	k.Clock.Advance(6 * time.Minute)
	k.Bot.Runner().RunDue(ctx)
	tk := k.WaitStage("T-2", "failed")
	mustContain(t, tk.Results["resolve"].Error, "timed out after 5m0s waiting for script")
	if _, ok := bottest.Button(k.Bot.Card(tk), "Retry"); !ok {
		t.Fatal("timed-out wait offers no retry")
	}
	waitFor(t, "the cancelled ticket's check to be cancelled", func() bool {
		j, _ := k.Bot.Store().Job(ctx, "T-3/2")
		if j.Status != "cancelled" {
			t.Logf("T-3 job: %s attempt %d next %v", j.Status, j.Attempt, j.NextAt)
		}
		return j.Status == "cancelled"
	})
}

func TestTimeWindowGuardsTheAction(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML(`
flows:
  - name: release
    fields:
      - {name: from, type: datetime, required: true}
      - {name: to, type: datetime, required: true}
    stages:
      - {name: approval, kind: approval, roles: [techlead]}
      - name: deploy
        kind: action
        executor: script
        params: {command: deploy.sh}
        window: {from_field: from, to_field: to, grace: 1h}
`))
	// The kit's clock starts at 2026-05-09 10:00 UTC = 18:00 China time.
	k.Say("alice", "/ops new release from=2026-05-09T20:00+08:00 to=2026-05-09T22:00+08:00")
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-1")), "the planned window opens at 2026-05-09T20:00:00+08:00")
	if tk := k.Ticket("T-1"); tk.Stage != "approval" || tk.Version != 1 {
		t.Fatalf("refused approval changed the ticket: %+v", tk)
	}
	k.Clock.Advance(2*time.Hour + 30*time.Minute)
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-1")), "T-1 approve")
	k.WaitStage("T-1", "done")

	k.Say("alice", "/ops new release from=2026-05-09T20:00+08:00 to=2026-05-09T21:00+08:00")
	k.Clock.Advance(time.Hour) // 21:30 China time: window ended, 30 min into the grace hour
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-2")), "T-2 approve")
	k.WaitStage("T-2", "done")
	k.Say("alice", "/ops new release from=2026-05-09T20:00+08:00 to=2026-05-09T21:00+08:00")
	k.Clock.Advance(time.Hour)
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-3")), "the planned window ended at 2026-05-09T21:00:00+08:00")
}

// recorder is a second chat platform that records what it is sent and can
// be made to fail.
type recorder struct {
	mu   sync.Mutex
	fail bool
	sent map[string][]string
}

func (r *recorder) Platform() string { return "slack" }

func (r *recorder) Send(ctx context.Context, userID string, msg templates.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return context.DeadlineExceeded
	}
	r.sent[userID] = append(r.sent[userID], msg.Title)
	return nil
}

func TestOneUserAcrossPlatforms(t *testing.T) {
	rec := &recorder{sent: map[string][]string{}}
	dir := t.TempDir()
	k := bottest.Start(t, dir, bottest.NewClock(), bottest.WithTransport(rec)) // bob is U0BOB on slack
	k.Say("alice", goliveNew)
	k.Deliver()
	if got := rec.sent["U0BOB"]; len(got) != 1 || !strings.Contains(got[0], "needs your approval") {
		t.Fatalf("bob on slack got %q", got)
	}
	if len(k.Notices("bob")) != 1 {
		t.Fatal("bob in the local chat was not told")
	}
	// bob approves from the other platform: same person, same roles.
	r := k.Bot.Handle(context.Background(), bot.Incoming{Platform: "slack", UserID: "U0BOB", Text: "/ops approve T-1", Key: "Ev1"})
	mustContain(t, r[0].Title, "T-1 approve")
	if tk := k.Ticket("T-1"); tk.Stage == "plan_review" {
		t.Fatalf("bob's approval from slack did not apply: %s", tk.Stage)
	}
	// The platform retries the same delivery: applied once, not twice.
	if r := k.Bot.Handle(context.Background(), bot.Incoming{Platform: "slack", UserID: "U0BOB", Text: "/ops approve T-1", Key: "Ev1"}); len(r) != 0 {
		t.Fatalf("retried delivery answered %q", r[0].Title)
	}
	if tk := k.Ticket("T-1"); tk.Version != 2 {
		t.Fatalf("retried delivery applied again: v%d", tk.Version)
	}
	// Slack is down: the local chat still gets the next notice once, and
	// Slack gets it when it is back; nothing is sent twice.
	rec.mu.Lock()
	rec.fail = true
	rec.mu.Unlock()
	k.Say("alice", `/ops new golive service=other version=v1 rollback_app=x`)
	k.Deliver()
	localBefore := len(k.Notices("bob"))
	rec.mu.Lock()
	rec.fail = false
	rec.mu.Unlock()
	k.Clock.Advance(time.Hour)
	k.Deliver()
	if got := len(k.Notices("bob")); got != localBefore {
		t.Fatalf("local chat got the retried notice again: %d -> %d", localBefore, got)
	}
	if got := rec.sent["U0BOB"]; len(got) != 2 || !strings.Contains(got[1], "T-2") {
		t.Fatalf("bob on slack after recovery: %q", got)
	}
}

func TestStopLetsARunningActionFinish(t *testing.T) {
	dir := t.TempDir()
	k := bottest.Start(t, dir, bottest.NewClock())
	k.Touch("hold")
	k.Say("alice", `/ops new golive service=payments version=v5 rollback_app=x hotfix=true`)
	k.Say("bob", "/ops approve T-1")
	k.Say("dave", "/ops approve T-1")
	waitFor(t, "the deploy to start", func() bool { return len(k.Runs()) == 1 })
	stopped := make(chan struct{})
	go func() { k.Bot.Stop(); close(stopped) }()
	time.Sleep(300 * time.Millisecond)
	select {
	case <-stopped:
		t.Fatal("Stop did not wait for the running deploy")
	default:
	}
	k.Remove("hold")
	<-stopped
	st, err := state.Open(state.Options{Path: filepath.Join(dir, "opsbot.db"), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tk, _ := st.Get(context.Background(), "T-1")
	if tk.Stage != "verify" || !tk.Results["deploy"].OK {
		t.Fatalf("after a graceful stop: %s %+v", tk.Stage, tk.Results)
	}
}
