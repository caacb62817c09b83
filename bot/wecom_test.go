package bot_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/silenceper/wechat/v2/util"

	"opsbot/bot/bottest"
	"opsbot/bot/wecom"
	"opsbot/bot/wecom/wecomfake"
	"opsbot/state"
)

// wecomKit starts a fake WeCom and a bot using it; the library's HTTP
// client is pointed at the fake for the test.
func wecomKit(t *testing.T) (*bottest.Kit, *wecomfake.Fake, string) {
	t.Helper()
	fake := newWeComFake(t)
	k := bottest.New(t, bottest.WithYAML(wecomYAML(fake)))
	return k, fake, "http://" + k.Bot.WeCom().Addr() + "/wecom/callback"
}

// newWeComFake starts the fake, points the WeCom library at it, and sets
// the credentials and the golive robot's key that wecomYAML names.
func newWeComFake(t *testing.T) *wecomfake.Fake {
	t.Helper()
	fake := wecomfake.New(t)
	old := util.DefaultHTTPClient
	util.DefaultHTTPClient = fake.Client()
	t.Cleanup(func() { util.DefaultHTTPClient = old })
	t.Setenv("OPSBOT_WECOM_SECRET", fake.Secret)
	t.Setenv("OPSBOT_WECOM_TOKEN", fake.Token)
	t.Setenv("OPSBOT_WECOM_AES_KEY", fake.AESKey)
	t.Setenv("OPSBOT_WECOM_ROBOT", "robot-golive-key")
	fake.AddRobot("robot-golive-key")
	return fake
}

func wecomYAML(fake *wecomfake.Fake) string {
	return fmt.Sprintf(`wecom:
  enabled: true
  listen: "127.0.0.1:0"
  corp_id: %s
  agent_id: "%s"
  per_user_per_minute: 100000
  robots: [{flow: golive, key_env: OPSBOT_WECOM_ROBOT}]`, fake.CorpID, fake.AgentID)
}

func text(t *testing.T, fake *wecomfake.Fake, endpoint, user, content string) {
	t.Helper()
	code, err := fake.Callback(endpoint, wecom.Callback{FromUserName: user, MsgType: "text", Content: content,
		MsgID: fmt.Sprintf("%d", time.Now().UnixNano())})
	if err != nil || code != 200 {
		t.Fatalf("callback: %d %v", code, err)
	}
}

func press(t *testing.T, fake *wecomfake.Fake, endpoint, user string, card *wecom.Card, label string) wecom.Callback {
	t.Helper()
	for _, b := range card.ButtonList {
		if b.Text == label {
			cb := wecom.Callback{FromUserName: user, MsgType: "event", Event: "template_card_event", EventKey: b.Key,
				TaskID: card.TaskID, CardType: "button_interaction", ResponseCode: fake.EventCode()}
			if code, err := fake.Callback(endpoint, cb); err != nil || code != 200 {
				t.Fatalf("press: %d %v", code, err)
			}
			return cb
		}
	}
	t.Fatalf("no %s button on %+v", label, card)
	return wecom.Callback{}
}

func waitCard(t *testing.T, k *bottest.Kit, fake *wecomfake.Fake, user, contains string) *wecom.Card {
	t.Helper()
	var card *wecom.Card
	waitFor(t, user+" gets a card with "+contains, func() bool {
		k.Deliver()
		for _, s := range fake.Sent(user) {
			if s.Card != nil && strings.Contains(s.Card.MainTitle.Title, contains) {
				card = s.Card
			}
		}
		return card != nil
	})
	return card
}

func TestWeComFullScenario(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	text(t, fake, endpoint, "wangxiaoli", `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" hotfix=true`)
	waitCard(t, k, fake, "wangxiaoli", "T-1")
	if got := k.Ticket("T-1").Requester; got != "alice" {
		t.Fatalf("requester %q", got)
	}
	// The approver receives a template card and presses 同意.
	card := waitCard(t, k, fake, "libo", "T-1")
	if card.ButtonList[0].Text != "同意" || card.ButtonList[0].Key != "/ops approve T-1#1" {
		t.Fatalf("buttons %+v", card.ButtonList)
	}
	press(t, fake, endpoint, "libo", card, "同意")
	k.WaitStage("T-1", "deploy_approval")
	// The pressed card is updated in place, and so is alice's older card.
	waitFor(t, "cards updated in place", func() bool {
		k.Deliver()
		var pressed, handled bool
		for _, u := range fake.Updates() {
			pressed = pressed || (u.UserIDs[0] == "libo" && strings.HasPrefix(u.ReplaceName, "已同意 by libo"))
			handled = handled || (u.UserIDs[0] == "wangxiaoli" && strings.HasPrefix(u.ReplaceName, "已处理"))
		}
		return pressed && handled
	})
	dave := waitCard(t, k, fake, "zhaodawei", "T-1")
	press(t, fake, endpoint, "zhaodawei", dave, "同意")
	k.WaitStage("T-1", "verify")
	// 驳回 on a card asks for the reason in a reply, and changes nothing.
	verify := waitCard(t, k, fake, "chenke", "T-1")
	press(t, fake, endpoint, "chenke", verify, "驳回")
	waitFor(t, "the reason prompt", func() bool {
		return slices.ContainsFunc(fake.Sent("chenke"), func(s wecomfake.Sent) bool { return strings.Contains(s.Text, "请回复「驳回 T-1 原因」") })
	})
	if got := k.Ticket("T-1").Stage; got != "verify" {
		t.Fatalf("a reject without reason moved the ticket to %s", got)
	}
	// Commands work without the slash too.
	text(t, fake, endpoint, "chenke", "approve T-1 verified")
	k.WaitStage("T-1", "done")
	// The requester gets the result, and the group robot posts progress and the result.
	// The requester may not roll back (ops may): her result comes without
	// buttons she cannot use, as a text message.
	waitFor(t, "the requester's result", func() bool {
		k.Deliver()
		return slices.ContainsFunc(fake.Sent("wangxiaoli"), func(s wecomfake.Sent) bool { return strings.Contains(s.Text, "T-1 已完成 done") })
	})
	waitFor(t, "group robot posts", func() bool {
		k.Deliver()
		posts := strings.Join(fake.RobotPosts("robot-golive-key"), "\n")
		return strings.Contains(posts, "开始执行") && strings.Contains(posts, "步骤成功") && strings.Contains(posts, "已完成 done")
	})
}

func TestWeComURLVerification(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	code, body, err := fake.VerifyURL(endpoint, fake.CorpID, fake.Token, "echo-1700000000")
	if err != nil || code != 200 || body != "echo-1700000000" {
		t.Fatalf("verification: %d %q %v", code, body, err)
	}
	if code, _, _ := fake.VerifyURL(endpoint, fake.CorpID, "wrong-token", "echo"); code != 401 {
		t.Fatalf("wrong signature: %d", code)
	}
	if code, _, _ := fake.VerifyURL(endpoint, "wwOTHERCORP0000000", fake.Token, "echo"); code != 401 {
		t.Fatalf("wrong corp id: %d", code)
	}
	// A message sealed for another corp, or signed with another token, is refused too.
	if code, _ := fake.Post(endpoint, "wwOTHERCORP0000000", fake.Token, []byte("<xml><MsgType>text</MsgType></xml>")); code != 401 {
		t.Fatalf("other corp's message: %d", code)
	}
	if code, _ := fake.Post(endpoint, fake.CorpID, "wrong-token", []byte("<xml><MsgType>text</MsgType></xml>")); code != 401 {
		t.Fatalf("badly signed message: %d", code)
	}
	k.Bot.FlushAudit(context.Background())
	entries, _, _ := k.Bot.Store().AuditLog(context.Background(), stateQuery("unknown"), 0, 10)
	if len(entries) != 4 {
		t.Fatalf("%d refusals audited, want 4", len(entries))
	}
}

func TestWeComSameCallbackThreeTimesAppliesOnce(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	text(t, fake, endpoint, "wangxiaoli", `/ops new golive service=payments version=v1 rollback_app=x`)
	card := waitCard(t, k, fake, "libo", "T-1")
	cb := press(t, fake, endpoint, "libo", card, "同意")
	for i := 0; i < 2; i++ {
		if code, err := fake.Callback(endpoint, cb); err != nil || code != 200 {
			t.Fatalf("redelivery: %d %v", code, err)
		}
	}
	k.WaitStage("T-1", "test_signoff")
	time.Sleep(300 * time.Millisecond)
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	if len(evs) != 2 {
		t.Fatalf("three deliveries made %d events", len(evs))
	}
	pressed := 0
	for _, u := range fake.Updates() {
		if u.UserIDs[0] == "libo" {
			pressed++
		}
	}
	if n := pressed; n != 1 {
		t.Fatalf("the pressed card was updated %d times: %+v", n, fake.Updates())
	}
}

func TestWeComExpiredTokenIsRefreshedOnce(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	text(t, fake, endpoint, "wangxiaoli", `/ops new golive service=payments version=v1 rollback_app=x`)
	waitCard(t, k, fake, "libo", "T-1")
	before := fake.TokensIssued()
	fake.ExpireTokens()
	text(t, fake, endpoint, "wangxiaoli", "/ops show T-1")
	waitFor(t, "the reply after the token expired", func() bool {
		return slices.ContainsFunc(fake.Sent("wangxiaoli"), func(s wecomfake.Sent) bool {
			return s.MsgType == "text" && strings.Contains(s.Text, "历史 History T-1")
		})
	})
	if got := fake.TokensIssued() - before; got != 1 {
		t.Fatalf("%d new tokens fetched, want exactly 1", got)
	}
	mustContain(t, k.LogText(), "wecom access token rejected")
}

func TestWeComExpiredUpdateCodeSendsANewCard(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	text(t, fake, endpoint, "wangxiaoli", `/ops new golive service=payments version=v1 rollback_app=x`)
	waitCard(t, k, fake, "libo", "T-1")
	waitCard(t, k, fake, "wangxiaoli", "T-1")
	fake.ExpireCodes()
	sentBefore := len(fake.Sent("wangxiaoli"))
	k.Say("bob", "/ops approve T-1")
	waitFor(t, "a new card for alice", func() bool {
		k.Deliver()
		sent := fake.Sent("wangxiaoli")
		return len(sent) > sentBefore && sent[len(sent)-1].Card != nil && strings.Contains(sent[len(sent)-1].Card.MainTitle.Title, "测试签收")
	})
	if n, _ := k.Bot.Store().OutboxLen(context.Background()); n != 0 {
		t.Fatalf("%d notifications left", n)
	}
	mustContain(t, k.LogText(), "card update code unusable; sending a new card")
}

func TestWeComCardsAreGolden(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	_ = k
	text(t, fake, endpoint, "wangxiaoli", `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" impact="checkout 5 min"`)
	card := waitCard(t, k, fake, "libo", "T-1")
	if len(card.HorizontalContentList) != 6 || card.HorizontalContentList[0].KeyName != "流程" {
		t.Fatalf("card content %+v", card.HorizontalContentList)
	}
	if !strings.HasPrefix(card.TaskID, "T-1-v1-") {
		t.Fatalf("task id %q", card.TaskID)
	}
}

func stateQuery(user string) state.AuditQuery { return state.AuditQuery{User: user} }

func TestWeComCallbackRecordedBeforeTheAckSurvivesARestart(t *testing.T) {
	k, fake, _ := wecomKit(t)
	plain := `<xml><ToUserName>corp</ToUserName><FromUserName>wangxiaoli</FromUserName><CreateTime>1700000000</CreateTime>` +
		`<MsgType>text</MsgType><Content>/ops new golive service=payments version=v1 rollback_app=x</Content><MsgId>42</MsgId></xml>`
	if _, _, err := k.Bot.Store().AddInbound(context.Background(), state.Inbound{Platform: "wecom", Kind: "callback", Payload: []byte(plain)}, "", time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	k.Bot.Stop()
	k2 := bottest.Start(t, k.Dir, k.Clock, bottest.WithYAML(wecomYAML(fake)))
	if tk := k2.WaitStage("T-1", "plan_review"); tk.Requester != "alice" {
		t.Fatalf("requester %q", tk.Requester)
	}
}
