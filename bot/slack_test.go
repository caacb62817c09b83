package bot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/bot/slack/slackfake"
	"opsbot/integrations/redis"
	"opsbot/integrations/redis/redistest"
	"opsbot/state"
)

const signingSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// slackKit starts a fake Slack and a bot talking to it in mode.
func slackKit(t *testing.T, mode string, extra string) (*bottest.Kit, *slackfake.Server) {
	t.Helper()
	fake := slackfake.New(t)
	for _, u := range []slackfake.User{{ID: "U0ALICE", Name: "alice.w", Email: "alice@example.com"},
		{ID: "U0BOB", Name: "bob", Email: "bob@example.com"}, {ID: "U0CAROL", Name: "carol", Email: "carol@example.com"},
		{ID: "U0DAVE", Name: "dave", Email: "dave@example.com"}, {ID: "U0EVE", Name: "eve", Email: "eve@elsewhere.com"}} {
		fake.AddUser(u)
	}
	t.Setenv("OPSBOT_SLACK_BOT_TOKEN", fake.BotToken)
	t.Setenv("OPSBOT_SLACK_SIGNING_SECRET", signingSecret)
	t.Setenv("OPSBOT_SLACK_APP_TOKEN", fake.AppToken)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("slack: {mode: %s, listen: \"127.0.0.1:0\", api_url: %q}\n%s", mode, fake.APIURL(), extra)))
	if mode == "socket" {
		waitFor(t, "the socket mode connection", fake.Connected)
	}
	return k, fake
}

// inbound delivers one piece of Slack input over HTTP (signed) or Socket
// Mode, and returns what the bot acked with.
type inbound struct {
	t    *testing.T
	k    *bottest.Kit
	fake *slackfake.Server
	mode string
}

func (in inbound) slash(user, channel, text string) string {
	in.t.Helper()
	if in.mode == "socket" {
		ack, err := in.fake.Envelope("slash_commands", in.fake.SlashPayload(user, channel, text))
		if err != nil {
			in.t.Fatal(err)
		}
		return string(ack)
	}
	return in.post("/slack/commands", "application/x-www-form-urlencoded", []byte(in.fake.SlashForm(user, channel, text).Encode()))
}

// form waits for the n-th modal the bot opened (views.open) and returns it.
func (in inbound) form(n int) map[string]any {
	in.t.Helper()
	var view map[string]any
	waitFor(in.t, fmt.Sprintf("modal %d to open", n), func() bool {
		calls := in.fake.Calls("views.open")
		if len(calls) >= n && calls[n-1].Error == "" {
			view = calls[n-1].View
			return true
		}
		return false
	})
	return view
}

func (in inbound) interaction(payload []byte) string {
	in.t.Helper()
	if in.mode == "socket" {
		ack, err := in.fake.Envelope("interactive", payload)
		if err != nil {
			in.t.Fatal(err)
		}
		return string(ack)
	}
	return in.post("/slack/interactions", "application/x-www-form-urlencoded", []byte(url.Values{"payload": {string(payload)}}.Encode()))
}

func (in inbound) post(path, ct string, body []byte) string {
	in.t.Helper()
	start := time.Now()
	code, resp, err := slackfake.Deliver("http://"+in.k.Bot.Slack().Addr()+path, ct, signingSecret, time.Now(), body)
	if err != nil || code != 200 {
		in.t.Fatalf("%s: %d %s %v", path, code, resp, err)
	}
	if time.Since(start) > 3*time.Second {
		in.t.Fatalf("%s acked after %s", path, time.Since(start))
	}
	return resp
}

func blocksText(blocks []map[string]any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(blocks)
	return b.String()
}

// button finds a button's value in a message's blocks.
func button(t *testing.T, m slackfake.Message, label string) string {
	t.Helper()
	for _, b := range m.Blocks {
		if b["type"] != "actions" {
			continue
		}
		for _, e := range b["elements"].([]any) {
			el := e.(map[string]any)
			if strings.Contains(el["text"].(map[string]any)["text"].(string), label) {
				return el["value"].(string)
			}
		}
	}
	t.Fatalf("no %s button in %s", label, blocksText(m.Blocks))
	return ""
}

func hasActions(m slackfake.Message) bool {
	return slices.ContainsFunc(m.Blocks, func(b map[string]any) bool { return b["type"] == "actions" })
}

func waitMessages(t *testing.T, k *bottest.Kit, fake *slackfake.Server, channel string, n int) []slackfake.Message {
	t.Helper()
	var msgs []slackfake.Message
	waitFor(t, fmt.Sprintf("%d messages in %s", n, channel), func() bool {
		k.Deliver()
		msgs = fake.Messages(channel)
		return len(msgs) >= n
	})
	return msgs
}

func TestSlackFullScenarioHTTP(t *testing.T)   { slackScenario(t, "http") }
func TestSlackFullScenarioSocket(t *testing.T) { slackScenario(t, "socket") }

func slackScenario(t *testing.T, mode string) {
	k, fake := slackKit(t, mode, "")
	in := inbound{t, k, fake, mode}
	// alice is linked to her opsbot user through her e-mail.
	in.slash("U0ALICE", "C0OPS", `new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" hotfix=true`)
	card := waitMessages(t, k, fake, "C0OPS", 1)[0]
	if !strings.Contains(blocksText(card.Blocks), "T-1 payments v1.4.2") || !strings.Contains(blocksText(card.Blocks), "<@U0ALICE>") {
		t.Fatalf("channel card: %s", blocksText(card.Blocks))
	}
	if got := k.Ticket("T-1").Requester; got != "alice" {
		t.Fatalf("requester %q: the Slack user was not linked by e-mail", got)
	}
	// The approver gets a DM with live buttons.
	dm := waitMessages(t, k, fake, "U0BOB", 1)[0]
	mustContain(t, dm.Text, "needs your approval")
	in.interaction(fake.ClickPayload("U0BOB", "U0BOB", dm.TS, button(t, dm, "Approve")))
	k.WaitStage("T-1", "deploy_approval")
	// Cards are redrawn in place: the channel card shows the new stage with
	// live buttons; bob's DM card lost its buttons.
	waitFor(t, "cards updated in place", func() bool {
		k.Deliver()
		c, d := fake.Messages("C0OPS")[0], fake.Messages("U0BOB")[0]
		return strings.Contains(blocksText(c.Blocks), "运维确认 Ops go-ahead") && hasActions(c) && !hasActions(d) &&
			strings.Contains(blocksText(d.Blocks), "handled")
	})
	// Pressing the old DM button again is refused privately: the card is stale.
	in.interaction(fake.ClickPayload("U0BOB", "U0BOB", dm.TS, button(t, dm, "Approve")))
	waitFor(t, "bob's ephemeral refusal", func() bool {
		return slices.ContainsFunc(fake.Responses(), func(r slackfake.Response) bool {
			return r.Body["response_type"] == "ephemeral" && strings.Contains(fmt.Sprint(r.Body["text"]), "this card is out of date")
		})
	})
	// dave (linked by e-mail, case-insensitively) approves from his DM.
	daveDM := waitMessages(t, k, fake, "U0DAVE", 0)
	if len(daveDM) == 0 {
		// dave has no Slack id yet: he is linked on his first command.
		in.slash("U0DAVE", "C0OPS", "approve T-1")
	} else {
		in.interaction(fake.ClickPayload("U0DAVE", "U0DAVE", daveDM[0].TS, button(t, daveDM[0], "Approve")))
	}
	k.WaitStage("T-1", "verify")
	// Progress of the action is posted in the card's thread.
	waitFor(t, "progress in the thread", func() bool {
		k.Deliver()
		var thread []string
		for _, m := range fake.Messages("C0OPS") {
			if m.ThreadTS == card.TS {
				thread = append(thread, m.Text)
			}
		}
		return len(thread) == 2 && strings.Contains(thread[0], "started") && strings.Contains(thread[1], "step succeeded")
	})
	in.slash("U0CAROL", "C0OPS", "approve T-1 verified")
	k.WaitStage("T-1", "done")
	// The requester is told the result in a DM.
	waitFor(t, "alice told the result", func() bool {
		k.Deliver()
		return slices.ContainsFunc(fake.Messages("U0ALICE"), func(m slackfake.Message) bool { return strings.Contains(m.Text, "T-1 已完成 done") })
	})
	for _, c := range fake.Calls("") {
		if c.Error != "" {
			t.Errorf("slack answered %s with %s", c.Method, c.Error)
		}
	}
}

func TestSlackRefusesForgedOrOldRequests(t *testing.T) {
	k, fake := slackKit(t, "http", "")
	url := "http://" + k.Bot.Slack().Addr() + "/slack/commands"
	body := []byte(fake.SlashForm("U0ALICE", "C0OPS", `new golive service=payments version=v1 rollback_app=x`).Encode())
	ct := "application/x-www-form-urlencoded"
	cases := []struct {
		name   string
		secret string
		at     time.Time
		header []string
	}{
		{"wrong secret", "not-the-secret", time.Now(), nil},
		{"replay older than 5 minutes", signingSecret, time.Now().Add(-6 * time.Minute), nil},
		{"forged signature", signingSecret, time.Now(), []string{"X-Slack-Signature", "v0=" + strings.Repeat("ab", 32)}},
		{"no signature", signingSecret, time.Now(), []string{"X-Slack-Signature", ""}},
	}
	for _, c := range cases {
		code, _, err := slackfake.Deliver(url, ct, c.secret, c.at, body, c.header...)
		if err != nil || code != 401 {
			t.Errorf("%s: status %d %v, want 401", c.name, code, err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := k.Bot.Store().Get(context.Background(), "T-1"); err == nil {
		t.Fatal("a refused request created a ticket")
	}
	if n := len(fake.Calls("")); n != 0 {
		t.Fatalf("refused requests reached slack %d times", n)
	}
	k.Bot.FlushAudit(context.Background())
	// The first refusal of each kind is written; repeats from the same
	// source are counted into one entry.
	entries, _, _ := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{User: "unknown"}, 0, 10)
	var results []string
	for _, e := range entries {
		results = append(results, e.Result)
	}
	got := strings.Join(results, "\n")
	if len(entries) != 3 || !strings.Contains(got, "refused: signature: invalid signature") ||
		!strings.Contains(got, "refused: freshness: timestamp") || !strings.Contains(got, "refused: signature: 2 more like this") {
		t.Fatalf("audit of refused requests:\n%s", got)
	}
	// The events endpoint answers Slack's url_verification challenge.
	code, resp, _ := slackfake.Deliver("http://"+k.Bot.Slack().Addr()+"/slack/events", "application/json", signingSecret, time.Now(),
		[]byte(`{"type":"url_verification","token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}`))
	if code != 200 || resp != "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P" {
		t.Fatalf("challenge: %d %q", code, resp)
	}
}

func TestSlackRetriesApplyOnce(t *testing.T) {
	k, fake := slackKit(t, "http", "")
	in := inbound{t, k, fake, "http"}
	in.slash("U0ALICE", "C0OPS", `new golive service=payments version=v1 rollback_app=x`)
	dm := waitMessages(t, k, fake, "U0BOB", 1)[0]
	payload := fake.ClickPayload("U0BOB", "U0BOB", dm.TS, button(t, dm, "Approve"))
	for i := 0; i < 3; i++ {
		in.interaction(payload)
	}
	k.WaitStage("T-1", "test_signoff")
	time.Sleep(200 * time.Millisecond)
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	if len(evs) != 2 {
		t.Fatalf("three deliveries of one click made %d events", len(evs))
	}
	// An @-mention event retried by Slack (same event_id) is answered once.
	ev := slackfake.MentionEvent("Ev0001", "U0BOB", "C0OPS", "status T-1")
	for i := 0; i < 3; i++ {
		code, _, _ := slackfake.Deliver("http://"+k.Bot.Slack().Addr()+"/slack/events", "application/json", signingSecret, time.Now(), ev,
			"X-Slack-Retry-Num", fmt.Sprint(i))
		if code != 200 {
			t.Fatalf("event: %d", code)
		}
	}
	answers := func() int {
		n := 0
		for _, m := range fake.Messages("C0OPS") {
			if m.ThreadTS == "1700000001.000100" {
				n++
			}
		}
		return n
	}
	waitFor(t, "the mention answered in thread (card and history)", func() bool { return answers() == 2 })
	time.Sleep(1500 * time.Millisecond) // the channel is paced at one message a second
	if n := answers(); n != 2 {
		t.Fatalf("a mention delivered three times was answered with %d messages, want 2", n)
	}
}

func TestSlackModalErrorsOnTheField(t *testing.T) {
	k, fake := slackKit(t, "http", `
flows:
  - name: cluster
    title: Cluster
    fields:
      - {name: name, required: true}
      - {name: env, type: enum, enum: [sit, uat, pt, prod], required: true}
      - {name: k8s_ips, type: iplist, required: true}
    stages: [{name: review, kind: approval, roles: [ops]}]
`)
	in := inbound{t, k, fake, "http"}
	in.slash("U0ALICE", "C0OPS", "new cluster")
	view := in.form(1)
	if !strings.Contains(fmt.Sprint(view), "static_select") {
		t.Fatalf("env is not a select: %v", view)
	}
	ack := in.interaction(fake.SubmitPayload("U0ALICE", view, map[string]string{"name": "c1", "k8s_ips": "10.0.0.1, 10.0.0.300,"},
		map[string]string{"env": "staging"}))
	var resp struct {
		Action string            `json:"response_action"`
		Errors map[string]string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(ack), &resp); err != nil || resp.Action != "errors" {
		t.Fatalf("ack %q", ack)
	}
	if !strings.Contains(resp.Errors["k8s_ips"], `第 2 项 "10.0.0.300" 不是有效的 IP 地址 · entry 2 "10.0.0.300" is not a valid IP address`) ||
		!strings.Contains(resp.Errors["env"], "choose one of sit, uat, pt, prod") || resp.Errors["name"] != "" {
		t.Fatalf("field errors %v", resp.Errors)
	}
	if _, err := k.Bot.Store().Get(context.Background(), "T-1"); err == nil {
		t.Fatal("an invalid form created a ticket")
	}
	ack = in.interaction(fake.SubmitPayload("U0ALICE", view, map[string]string{"name": "c1", "k8s_ips": "10.0.0.1, 10.0.0.2,"},
		map[string]string{"env": "prod"}))
	if ack != "" {
		t.Fatalf("valid form ack %q", ack)
	}
	tk := k.WaitStage("T-1", "review")
	if tk.Fields["k8s_ips"] != "10.0.0.1,10.0.0.2" {
		t.Fatalf("fields %v", tk.Fields)
	}
	waitMessages(t, k, fake, "C0OPS", 1)

	// Reject asks for a reason in a modal, then applies.
	dave := waitMessages(t, k, fake, "U0DAVE", 0)
	_ = dave
	in.slash("U0DAVE", "C0OPS", "show T-1") // links dave by e-mail
	cardMsg := fake.Messages("C0OPS")[0]
	in.interaction(fake.ClickPayload("U0DAVE", "C0OPS", cardMsg.TS, button(t, cardMsg, "Reject")))
	reasonView := in.form(2)
	in.interaction(fake.SubmitPayload("U0DAVE", reasonView, map[string]string{"reason": "prod is frozen"}, nil))
	tk = k.WaitStage("T-1", "rejected")
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	if evs[len(evs)-1].Comment != "prod is frozen" {
		t.Fatalf("reason %q", evs[len(evs)-1].Comment)
	}
}

func TestSlackUnknownUserCanRequestButNotApprove(t *testing.T) {
	k, fake := slackKit(t, "http", "")
	in := inbound{t, k, fake, "http"}
	in.slash("U0ALICE", "C0OPS", `new golive service=payments version=v1 rollback_app=x`)
	waitMessages(t, k, fake, "C0OPS", 1)
	in.slash("U0EVE", "C0OPS", "approve T-1")
	waitFor(t, "eve told why", func() bool {
		return slices.ContainsFunc(fake.Responses(), func(r slackfake.Response) bool {
			return strings.Contains(fmt.Sprint(r.Body["text"]), "needs a holder of techlead; you are not one")
		})
	})
	in.slash("U0EVE", "C0OPS", `new golive service=search version=v1 rollback_app=x`)
	waitFor(t, "eve's ticket", func() bool {
		tk, err := k.Bot.Store().Get(context.Background(), "T-2")
		return err == nil && tk.Requester == "slack-u0eve"
	})
}

func TestSlackBurstIsPacedAndRateLimitsHonoured(t *testing.T) {
	for _, c := range []struct {
		name    string
		want429 bool
	}{
		{"paced", false},
		{"unpaced", true}, // pacing far above Slack's limit, so Slack pushes back with 429
	} {
		t.Run(c.name, func(t *testing.T) {
			k, fake := slackKitPace(t, c.want429)
			var wg sync.WaitGroup
			for i := 0; i < 4; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					k.Say("alice", fmt.Sprintf(`/ops new golive service=svc%d version=v1 rollback_app=x`, i))
				}()
			}
			wg.Wait()
			msgs := waitMessages(t, k, fake, "U0BOB", 4)
			seen := map[string]int{}
			for _, m := range msgs {
				seen[m.Text]++
			}
			for text, n := range seen {
				if n != 1 {
					t.Fatalf("%q sent %d times", text, n)
				}
			}
			if len(msgs) != 4 {
				t.Fatalf("%d DMs, want 4", len(msgs))
			}
			if got := fake.Limited() > 0; got != c.want429 {
				t.Fatalf("429s from slack: %d (want some: %v)", fake.Limited(), c.want429)
			}
			if n, _ := k.Bot.Store().OutboxLen(context.Background()); n != 0 {
				t.Fatalf("%d notifications left undelivered", n)
			}
		})
	}
}

func slackKitPace(t *testing.T, unpaced bool) (*bottest.Kit, *slackfake.Server) {
	if !unpaced {
		return slackKit(t, "http", "")
	}
	fake := slackfake.New(t)
	t.Setenv("OPSBOT_SLACK_BOT_TOKEN", fake.BotToken)
	t.Setenv("OPSBOT_SLACK_SIGNING_SECRET", signingSecret)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("slack: {mode: http, listen: \"127.0.0.1:0\", api_url: %q, per_channel_per_minute: 100000}", fake.APIURL())))
	return k, fake
}

func TestSlackWrongTokenKeepsNotificationsQueued(t *testing.T) {
	fake := slackfake.New(t)
	t.Setenv("OPSBOT_SLACK_BOT_TOKEN", "xoxb-revoked")
	t.Setenv("OPSBOT_SLACK_SIGNING_SECRET", signingSecret)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("slack: {mode: http, listen: \"127.0.0.1:0\", api_url: %q}", fake.APIURL())))
	k.Say("alice", goliveNew)
	k.Deliver()
	if len(fake.Messages("U0BOB")) != 0 {
		t.Fatal("slack accepted a revoked token")
	}
	if len(k.Notices("bob")) != 1 {
		t.Fatal("the local chat did not get its copy")
	}
	if n, _ := k.Bot.Store().OutboxLen(context.Background()); n == 0 {
		t.Fatal("the slack DM was dropped instead of kept for a retry")
	}
	mustContain(t, k.LogText(), "invalid_auth")
	// Slack accepts the token again (reinstalled app): the queued DM goes
	// out once.
	fake.SetBotToken("xoxb-revoked")
	k.Clock.Advance(time.Hour)
	k.Deliver()
	if got := fake.Messages("U0BOB"); len(got) != 1 {
		t.Fatalf("after the fix bob has %d DMs", len(got))
	}
	if len(k.Notices("bob")) != 1 {
		t.Fatal("the retry sent the local copy again")
	}
}

func TestSlackPacingIsSharedThroughRedis(t *testing.T) {
	srv := redistest.Start(t)
	k, fake := slackKit(t, "http", fmt.Sprintf("redis: {addr: %q}", srv.Addr))
	k.Say("alice", goliveNew)
	waitMessages(t, k, fake, "U0BOB", 1)
	client := redis.NewClient(redis.Options{Addr: srv.Addr})
	defer client.Close()
	if n, err := client.Exists(context.Background(), "rate:opsbot:rl:slack:channel:U0BOB").Result(); err != nil || n != 1 {
		t.Fatalf("the channel pace is not kept in redis: %d %v", n, err)
	}
}

// TestSlackInputRecordedBeforeTheAckSurvivesARestart: a slash command
// acknowledged to Slack is in the store before the ack, so a bot that
// died before handling it handles it when it starts again.
func TestSlackInputRecordedBeforeTheAckSurvivesARestart(t *testing.T) {
	fake := slackfake.New(t)
	fake.AddUser(slackfake.User{ID: "U0ALICE", Name: "alice", Email: "alice@example.com"})
	t.Setenv("OPSBOT_SLACK_BOT_TOKEN", fake.BotToken)
	t.Setenv("OPSBOT_SLACK_SIGNING_SECRET", signingSecret)
	dir, clock := t.TempDir(), bottest.NewClock()
	extra := bottest.WithYAML(fmt.Sprintf("slack: {mode: http, listen: \"127.0.0.1:0\", api_url: %q}", fake.APIURL()))
	k := bottest.Start(t, dir, clock, extra)
	form := fake.SlashForm("U0ALICE", "C0OPS", `new golive service=payments version=v1 rollback_app=x`).Encode()
	// What the endpoint writes before acknowledging; the bot dies before handling it.
	if _, _, err := k.Bot.Store().AddInbound(context.Background(), state.Inbound{Platform: "slack", Kind: "slash_form", Payload: []byte(form)}, "", time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	k.Bot.Stop()
	k = bottest.Start(t, dir, clock, extra)
	tk := k.WaitStage("T-1", "plan_review")
	if tk.Requester != "alice" {
		t.Fatalf("requester %q", tk.Requester)
	}
	waitMessages(t, k, fake, "C0OPS", 1)
	waitFor(t, "the recorded input to be forgotten once handled", func() bool {
		p, _ := k.Bot.Store().PendingInbound(context.Background(), "slack")
		return len(p) == 0
	})
}

// TestSlackModalShowsValidatorErrors: a flow validator's rules (across
// fields) land on the modal's fields, and computed fields are not in the
// form.
func TestSlackModalShowsValidatorErrors(t *testing.T) {
	k, fake := slackKit(t, "http", `dns: {script: file-dns.sh, zone: ops.example.test, resolver: "127.0.0.1:53"}`)
	in := inbound{t, k, fake, "http"}
	in.slash("U0ALICE", "C0OPS", "new cluster-create")
	view := in.form(1)
	if strings.Contains(fmt.Sprint(view), "k8s_ips_lookup") || strings.Contains(fmt.Sprint(view), "existing") {
		t.Fatalf("computed fields in the form: %v", view)
	}
	ack := in.interaction(fake.SubmitPayload("U0ALICE", view, map[string]string{"name": "prod-sh-01", "ingress_ip": "10.20.0.10",
		"domain": "prod-sh-01.ops.example.test", "k8s_ips": "10.0.0.1"}, map[string]string{"env": "uat", "location": "Ali", "size": "9+6"}))
	var resp struct {
		Action string            `json:"response_action"`
		Errors map[string]string `json:"errors"`
	}
	if err := json.Unmarshal([]byte(ack), &resp); err != nil || resp.Action != "errors" {
		t.Fatalf("ack %q", ack)
	}
	for field, want := range map[string]string{
		"size":    "size 9+6 is for prod clusters only",
		"k8s_ips": "location Ali has no k8s_ips field",
		"lb_id":   "location Ali needs lb_id",
		"k8s_id":  "location Ali needs k8s_id",
	} {
		if !strings.Contains(resp.Errors[field], want) {
			t.Errorf("%s: %q, want %q", field, resp.Errors[field], want)
		}
	}
	if _, err := k.Bot.Store().Get(context.Background(), "T-1"); err == nil {
		t.Fatal("an invalid form created a ticket")
	}
}

// The Chinese alias of "new" takes the same path as "new": the card is
// posted in the channel and the ticket's progress goes to its thread; the
// alias alone with a flow opens the form.
func TestSlackNewAliasPostsTheChannelCard(t *testing.T) {
	k, fake := slackKit(t, "http", "")
	in := inbound{t, k, fake, "http"}
	in.slash("U0ALICE", "C0OPS", `新建 golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" hotfix=true`)
	card := waitMessages(t, k, fake, "C0OPS", 1)[0]
	if !strings.Contains(blocksText(card.Blocks), "T-1 payments v1.4.2") {
		t.Fatalf("channel card: %s", blocksText(card.Blocks))
	}
	refs, err := k.Bot.Store().CardRefs(context.Background(), "T-1", "slack")
	if err != nil || !slices.ContainsFunc(refs, func(r state.CardRef) bool { return r.Thread && r.Channel == "C0OPS" && r.TS == card.TS }) {
		t.Fatalf("the channel card is not the ticket's home: %+v %v", refs, err)
	}
	in.slash("U0ALICE", "C0OPS", "@opsbot 新建 golive")
	in.form(1)
}
