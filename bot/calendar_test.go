package bot_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/state"
)

const hotfixNew = "/ops new golive service=payments version=v2 rollback_app=redeploy hotfix=true"

func tick(t *testing.T, k *bottest.Kit) {
	t.Helper()
	if err := k.Bot.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestFreezeRefusesTicketsAndReleasesUntilAnException: a freeze of prod for
// golive and puppet-release refuses a new ticket, an approval that would
// deploy and a batch release press inside its window, with its reason and
// end; an exception with the director's extra approval goes through;
// after the window nothing is refused.
func TestFreezeRefusesTicketsAndReleasesUntilAnException(t *testing.T) {
	fake := puppetRepo(t)
	k := bottest.New(t, bottest.WithYAML(gitlabYAML(fake)+"\ncalendar: {freeze_roles: [ops]}"))
	// Before the freeze (it starts at 10:30): a go-live waits for ops, a
	// Puppet release is approved.
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew)), "T-1 submitted")
	approve(t, k, "bob", "T-1", "deploy_approval")
	mustContain(t, bottest.Title(k.Say("alice", releaseNew)), "T-2 submitted")
	toReleasing(t, k, "T-2")

	mustContain(t, bottest.Title(k.Say("alice", `/ops freeze env=prod flows=golive,puppet-release from="2026-05-09 10:30" until="2026-05-12 09:00" except=director reason="5.9 external test"`)),
		"only holders of ops, admin can set or lift freezes")
	mustContain(t, bottest.Title(k.Say("dave", `/ops freeze env=prod flows=golive,puppet-releas until="2026-05-12 09:00" reason=x`)), `unknown flow "puppet-releas"`)
	mustContain(t, bottest.Text(k.Say("dave", `/ops freeze env=prod flows=golive,puppet-releas until="2026-05-12 09:00" reason=x`)), `did you mean "puppet-release"`)
	mustContain(t, bottest.Title(k.Say("dave", `/ops freeze env=prod flows=golive,puppet-release from="2026-05-09 10:30" until="2026-05-12 09:00" except=director reason="5.9 external test"`)),
		"F-1 已冻结 env prod · flows golive,puppet-release")
	// Not yet in force: the go-live still deploys... but only after 10:30
	// is it refused; at 10:00 a new ticket goes in.
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=search version=v1 rollback_app=redeploy hotfix=true")), "T-3 submitted")

	k.Clock.Advance(40 * time.Minute) // 10:40, inside the window
	const why = "frozen (env prod · flows golive,puppet-release: 5.9 external test, set by dave): "
	const until = " is refused until 2026-05-12 09:00 UTC"
	r := k.Say("alice", "/ops new golive service=search version=v2 rollback_app=redeploy hotfix=true")
	mustContain(t, bottest.Title(r), why+"a new golive ticket"+until)
	mustContain(t, bottest.Text(r), `add exception="why" to /ops new`)
	r = k.Say("dave", "/ops approve T-1")
	mustContain(t, bottest.Title(r), why+"部署 Deploy"+until)
	mustContain(t, bottest.Text(r), "/ops exception T-1")
	mrs := len(fake.MRs())
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-2 confirm")), why+"a batch release"+until)
	if tk := k.Ticket("T-2"); tk.Batches[0].State != state.BatchPending || len(fake.MRs()) != mrs {
		t.Fatalf("a frozen release moved: %+v, %d MRs", tk.Batches[0], len(fake.MRs()))
	}
	if k.Ticket("T-1").Stage != "deploy_approval" || slices.ContainsFunc(k.Runs(), func(s string) bool { return strings.HasPrefix(s, "deploy T-1") }) {
		t.Fatal("a frozen deploy ran")
	}

	// The exception: asked with the ticket, approved by the director on top
	// of the flow's approvals, recorded as such.
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=billing version=v2 rollback_app=redeploy hotfix=true"+` exception=""`)), "a freeze exception needs a reason")
	billing := "/ops new golive service=billing version=v2 rollback_app=redeploy hotfix=true"
	mustContain(t, bottest.Title(k.Say("alice", billing+` exception="payments outage"`)), "T-4 submitted")
	if !slices.ContainsFunc(k.Notices("erin"), func(s string) bool { return strings.Contains(s, "T-4 申请冻结例外") }) {
		t.Fatalf("the director was not asked: %q", k.Notices("erin"))
	}
	mustContain(t, fmt.Sprint(k.Bot.Card(k.Ticket("T-4")).Fields), "waiting for director to let it through freeze F-1: payments outage")
	approve(t, k, "bob", "T-4", "deploy_approval")
	mustContain(t, bottest.Title(k.Say("dave", "/ops approve T-4")), why+"部署 Deploy"+until)
	mustContain(t, bottest.Title(k.Say("carol", "/ops approve T-4")), "needs a holder of ops")
	approve(t, k, "erin", "T-4", "deploy_approval") // the exception, not the stage
	mustContain(t, fmt.Sprint(k.Bot.Card(k.Ticket("T-4")).Fields), "let through freeze F-1 by erin: payments outage")
	approve(t, k, "dave", "T-4", "deploy")
	k.WaitStage("T-4", "verify")
	// An existing ticket asks afterwards: the release goes on once let through.
	mustContain(t, bottest.Title(k.Say("bob", "/ops exception T-2 ntp drift breaks payments")), "only the requester alice can ask for a freeze exception")
	mustContain(t, bottest.Title(k.Say("alice", "/ops exception T-2 ntp drift breaks payments")), "T-2 exception")
	mustContain(t, bottest.Title(k.Say("alice", "/ops exception T-2 again")), "T-2 already asked for a freeze exception")
	mustContain(t, bottest.Title(k.Say("dave", "/ops approve T-2")), "the freeze exception of T-2 needs a holder of director")
	mustContain(t, bottest.Title(k.Say("erin", "/ops approve T-2")), "T-2 approve")
	releaseBatch(t, k, "T-2", 1, state.BatchSucceeded)
	audit := strings.Join(auditArgs(t, k, "T-4"), "\n")
	mustContain(t, audit, "freeze exception asked: F-1: payments outage → ok")
	mustContain(t, audit, "freeze exception approved: F-1: payments outage → ok")

	// After the window nothing is refused.
	k.Clock.Advance(71 * time.Hour) // 2026-05-12 09:40
	approve(t, k, "dave", "T-1", "deploy")
	k.WaitStage("T-1", "verify")
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=mail version=v3 rollback_app=redeploy hotfix=true")), "submitted")
}

// TestWeekendFreezeRecurs: every Friday 18:00 to Monday 09:00; the kit's
// clock starts on a Saturday.
func TestWeekendFreezeRecurs(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML("calendar: {freeze_roles: [ops]}"))
	mustContain(t, bottest.Title(k.Say("dave", `/ops freeze env=prod every="fri 18:00" reason=weekend`)), `weekly window "fri 18:00": want e.g. "fri 18:00-mon 09:00"`)
	mustContain(t, bottest.Title(k.Say("dave", `/ops freeze env=prod every="fri 18:00-mon 09:00" reason=weekend`)), "frozen 每周 every week fri 18:00-mon 09:00")
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew)), "a new golive ticket is refused until 2026-05-11 09:00 UTC")
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew+` exception="outage"`)), "freeze F-1 allows no exceptions (weekend, until 2026-05-11 09:00 UTC)")
	mustContain(t, k.Say("bob", "/ops freeze list")[0].Body, "F-1 env prod · 每周 every week fri 18:00-mon 09:00 (生效中 in force): weekend")
	k.Clock.Advance(48 * time.Hour) // Monday 10:00
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew+` exception="outage"`)), "no freeze covers this ticket now: leave out exception=")
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew)), "T-1 submitted")
	k.Clock.Advance(4*24*time.Hour + 8*time.Hour) // Friday 18:00
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=search version=v1 rollback_app=redeploy hotfix=true")), "refused until 2026-05-18 09:00 UTC")
}

// TestMilestonePlanFreezesAndAnnounces enters the studio's plan ("5.9对外
// 测试，4.23封需求，4.26封版打包合并代码数值，4.29提包给大神圈", a month
// later here) as commands: the code freeze freezes tdev from its day to
// the external test; the game channel hears it set (mentioning everyone
// on WeCom and on Slack), is reminded the day before and told when it
// ends, each once, across restarts.
func TestMilestonePlanFreezesAndAnnounces(t *testing.T) {
	sf, wf := teamFakes(t, "game", "infra")
	yaml := fmt.Sprintf(`slack: {mode: http, listen: "127.0.0.1:0", api_url: %q}
%s
channels:
  game: {slack: C0GAME, wecom_robot_env: OPSBOT_WECOM_ROBOT_GAME}
  infra: {slack: C0INFRA, wecom_robot_env: OPSBOT_WECOM_ROBOT_INFRA, mention: none}
calendar: {freeze_roles: [publisher], channel: infra}
flows:
  - name: tdev-config
    title: 测试服配置 Test server config
    fields: [{name: env, label: 环境 Env, required: true}, {name: change, label: 变更 Change, required: true}]
    stages:
      - {name: approval, title: 审批 Approval, kind: approval, roles: [ops]}
      - {name: apply, title: 执行 Apply, kind: action, executor: script, params: {command: deploy.sh}}`, sf.APIURL(), wecomYAML(wf))
	dir, clock := t.TempDir(), bottest.NewClock()
	k := bottest.Start(t, dir, clock, bottest.WithYAML(yaml))
	plan := []string{
		`/ops milestone add 5.9 date=2026-06-09 name="对外测试" kind=external_test`,
		`/ops milestone add 5.9 date=2026-05-23 name="封需求" kind=requirements_freeze`,
		`/ops milestone add 5.9 date=2026-05-26 name="封版打包合并代码数值" kind=code_freeze env=tdev channel=game`,
		`/ops milestone add 5.9 date=2026-05-29 name="提包给大神圈" kind=package`,
	}
	mustContain(t, bottest.Title(k.Say("alice", plan[0])), "only holders of publisher, admin can set or lift freezes and milestones")
	mustContain(t, bottest.Title(k.Say("petra", `/ops milestone add 5.9 date=2026-05-26 name="封版" kind=code_freez env=tdev`)), `did you mean "code_freeze"`)
	mustContain(t, bottest.Text(k.Say("petra", `/ops milestone add 6.0 date=2026-05-26 name="封版" kind=code_freeze env=tdev`)), "freeze until when? give until= or add a later milestone of 6.0 first")
	for i, c := range plan {
		r := k.Say("petra", c)
		mustContain(t, bottest.Title(r), "milestone added")
		if i == 2 {
			mustContain(t, bottest.Title(r), "2026-05-26 5.9 封版打包合并代码数值 (code_freeze) ❄️ F-1")
			mustContain(t, bottest.Text(r), "F-1 冻结 env tdev")
		}
	}
	mustContain(t, bottest.Title(k.Say("petra", plan[2])), "5.9 already has 封版打包合并代码数值 on 2026-05-26")
	body := k.Say("bob", "/ops calendar 2026-05")[0].Body
	for _, want := range []string{"📅 2026-05-23 5.9 封需求 (requirements_freeze)", "📅 2026-05-26 5.9 封版打包合并代码数值 (code_freeze) ❄️ F-1",
		"❄️ F-1 env tdev · 2026-05-26 00:00 UTC → 2026-06-09 00:00 UTC: 5.9 封版打包合并代码数值", "📅 2026-05-29 5.9 提包给大神圈 (package)"} {
		mustContain(t, body, want)
	}
	if strings.Contains(body, "对外测试") {
		t.Fatalf("June's milestone in May's calendar:\n%s", body)
	}
	mustContain(t, k.Say("bob", "/ops calendar 2026-06")[0].Body, "📅 2026-06-09 5.9 对外测试 (external_test)")

	// The announcement went to the game channel, mentioning everyone.
	set := "heads up: env tdev is frozen 2026-05-26 00:00 UTC → 2026-06-09 00:00 UTC"
	robot := func() []string {
		var out []string
		for _, m := range wf.RobotMessages("robot-game-key") {
			if m.MsgType != "text" || !slices.Equal(m.MentionedList, []string{"@all"}) {
				t.Fatalf("an announcement that does not mention everyone: %+v", m)
			}
			out = append(out, m.Content)
		}
		return out
	}
	slackTexts := func() []string {
		k.Deliver()
		var out []string
		for _, m := range sf.Messages("C0GAME") {
			if !strings.HasPrefix(m.Text, "<!channel> ") {
				t.Fatalf("a Slack announcement without <!channel>: %q", m.Text)
			}
			out = append(out, m.Text)
		}
		return out
	}
	waitMessages(t, k, sf, "C0GAME", 1)
	k.Deliver() // waits out a pass that posted to Slack and is still at WeCom
	if got := robot(); len(got) != 1 || !strings.Contains(got[0], set) {
		t.Fatalf("wecom game robot: %q", got)
	}
	if got := slackTexts(); len(got) != 1 || !strings.Contains(got[0], set) {
		t.Fatalf("slack #game: %q", got)
	}
	if n := len(wf.RobotMessages("robot-infra-key")) + len(sf.Messages("C0INFRA")); n != 0 {
		t.Fatalf("the infra channel heard the game's freeze (%d)", n)
	}
	mustContain(t, strings.Join(k.Notices("#game"), "\n"), set)

	restart := func() {
		k.Bot.Stop()
		k = bottest.Start(t, dir, clock, bottest.WithYAML(yaml))
	}
	// Not in force yet: tdev changes go in.
	mustContain(t, bottest.Title(k.Say("alice", "/ops new tdev-config env=tdev change=a")), "T-1 submitted")
	restart()
	clock.Advance(15*24*time.Hour - 10*time.Hour) // 2026-05-24 00:00: nothing yet
	tick(t, k)
	if got := slackTexts(); len(got) != 1 {
		t.Fatalf("too early: %q", got)
	}
	clock.Advance(24 * time.Hour) // 2026-05-25 00:00, a day before
	tick(t, k)
	tick(t, k)
	reminder := "reminder: env tdev freezes at 2026-05-26 00:00 UTC"
	waitMessages(t, k, sf, "C0GAME", 2)
	restart()
	tick(t, k)
	if got := slackTexts(); len(got) != 2 || !strings.Contains(got[1], reminder) {
		t.Fatalf("slack #game after the reminder: %q", got)
	}
	if got := robot(); len(got) != 2 || !strings.Contains(got[1], reminder) {
		t.Fatalf("wecom game robot after the reminder: %q", got)
	}

	clock.Advance(25 * time.Hour) // 2026-05-26 01:00: frozen
	mustContain(t, bottest.Title(k.Say("alice", "/ops new tdev-config env=tdev change=b")), "frozen (env tdev: 5.9 封版打包合并代码数值, set by petra)")
	mustContain(t, bottest.Title(k.Say("dave", "/ops approve T-1")), "执行 Apply is refused until 2026-06-09 00:00 UTC")
	mustContain(t, bottest.Title(k.Say("alice", "/ops new tdev-config env=uat change=b")), "T-2 submitted")

	clock.Advance(14 * 24 * time.Hour) // 2026-06-09 01:00: over
	tick(t, k)
	restart()
	tick(t, k)
	ended := "env tdev is no longer frozen"
	waitMessages(t, k, sf, "C0GAME", 3)
	if got := slackTexts(); len(got) != 3 || !strings.Contains(got[2], ended) {
		t.Fatalf("slack #game after the end: %q", got)
	}
	if got := robot(); len(got) != 3 || !strings.Contains(got[2], ended) {
		t.Fatalf("wecom game robot after the end: %q", got)
	}
	approve(t, k, "dave", "T-1", "apply")
	k.WaitStage("T-1", "done")
	audit := strings.Join(auditArgs(t, k, ""), "\n")
	mustContain(t, audit, "freeze ended: F-1: 5.9 封版打包合并代码数值 → ok")
}

// TestAwayHandsApprovalsToADelegate: bert (a tech lead) is away with bob
// as delegate: a delegate without the role is refused; bert's pending
// approval is offered to bob and its card says "bob for bert"; new
// approvals go to bob instead of bert; bob's approval counts for the
// stage; after the date the approvals come back to bert by themselves.
func TestAwayHandsApprovalsToADelegate(t *testing.T) {
	k := bottest.New(t)
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew)), "T-1 submitted")
	if !slices.ContainsFunc(k.Notices("bert"), func(s string) bool { return strings.Contains(s, "T-1 等待你审批") }) {
		t.Fatal("bert not asked before going away")
	}
	rev := noticeRev(k, "bert", "T-1")
	mustContain(t, bottest.Title(k.Say("bert", "/ops away until=2026-05-12 delegate=carol")), "carol does not hold techlead, so cannot approve for you")
	mustContain(t, bottest.Title(k.Say("bert", "/ops away until=2026-05-12 delegate=bert")), "you cannot hand your approvals to yourself")
	mustContain(t, bottest.Title(k.Say("alice", "/ops away until=2026-05-12 delegate=bob")), "you hold no role that approves anything")
	r := k.Say("bert", "/ops away until=2026-05-12 delegate=bob")
	mustContain(t, bottest.Title(r), "bert's approvals go to bob until 2026-05-12 00:00 UTC")
	mustContain(t, bottest.Text(r), "1 pending approval(s) handed over")
	if !slices.ContainsFunc(k.Notices("bob"), func(s string) bool { return strings.Contains(s, "T-1 审批人变更，现在由你审批") }) {
		t.Fatalf("bob not offered bert's pending approval: %q", k.Notices("bob"))
	}
	// bert's card is redrawn (his inbox's card of T-1 is updated), and
	// the card names bob for bert.
	if after := noticeRev(k, "bert", "T-1"); after <= rev {
		t.Fatalf("bert's pending card not updated (rev %d, was %d)", after, rev)
	}
	mustContain(t, fmt.Sprint(bottest.Card(k.Say("bert", "/ops show T-1")).Fields), "techlead: bob for bert, bob")
	// Offered once, even when the sweep runs again.
	tick(t, k)
	if n := countContaining(k.Notices("bob"), "T-1 审批人变更"); n != 1 {
		t.Fatalf("bob offered T-1 %d times", n)
	}
	// A new ticket goes to bob, not bert.
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=search version=v1 rollback_app=redeploy hotfix=true")), "T-2 submitted")
	if countContaining(k.Notices("bert"), "T-2") != 0 {
		t.Fatalf("bert asked while away: %q", k.Notices("bert"))
	}
	tick(t, k) // the sweep offers nothing bob was already asked
	if n := countContaining(k.Notices("bob"), "T-2"); n != 1 {
		t.Fatalf("bob told of T-2 %d times: %q", n, k.Notices("bob"))
	}
	approve(t, k, "bob", "T-1", "deploy_approval")
	if !slices.ContainsFunc(k.Notices("alice"), func(s string) bool {
		return strings.Contains(s, "T-1 方案审批 Plan review 已通过 passed (bob for bert)")
	}) {
		t.Fatalf("the requester is not told bob approved for bert: %q", k.Notices("alice"))
	}
	mustContain(t, bottest.Text(k.Say("alice", "/ops show T-1")), "bob for bert 同意 Approve · 方案审批 Plan review → 运维确认 Ops go-ahead")
	audit := strings.Join(auditArgs(t, k, "T-1"), "\n")
	mustContain(t, audit, "handover: bert>bob → ok")

	// After the date the approvals are bert's again, by themselves.
	k.Clock.Advance(62 * time.Hour) // 2026-05-12 00:00
	tick(t, k)
	if !slices.ContainsFunc(k.Notices("bert"), func(s string) bool { return strings.Contains(s, "T-2 审批人变更，现在由你审批") }) {
		t.Fatalf("T-2 not handed back to bert: %q", k.Notices("bert"))
	}
	mustContain(t, k.Say("bob", "/ops away list")[0].Title, "nobody is away")
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=mail version=v1 rollback_app=redeploy hotfix=true")), "T-3 submitted")
	if !slices.ContainsFunc(k.Notices("bert"), func(s string) bool { return strings.Contains(s, "T-3 等待你审批") }) {
		t.Fatal("bert not asked after coming back")
	}
	approve(t, k, "bob", "T-3", "deploy_approval")
	if h := bottest.Text(k.Say("alice", "/ops show T-3")); strings.Contains(h, "for bert") {
		t.Fatalf("bob still approves for bert: %s", h)
	}
	mustContain(t, strings.Join(auditArgs(t, k, ""), "\n"), "away ended: bert (delegate bob) → ok")
}

// TestDutyRotationNotifiesWhoIsOnDutyFirst: ops rotates weekly between
// dave and ivan; a go-ahead asks dave alone, then, after the reminder
// interval, the whole role; the audit names who was on duty; next week
// ivan is asked first.
func TestDutyRotationNotifiesWhoIsOnDutyFirst(t *testing.T) {
	k := bottest.New(t)
	mustContain(t, bottest.Title(k.Say("root", "/ops role grant ops ivan")), "ivan")
	mustContain(t, bottest.Title(k.Say("alice", "/ops duty set ops dave,ivan weekly")), "only holders of ops or an admin can set its duty rotation")
	mustContain(t, bottest.Title(k.Say("dave", "/ops duty set ops dave,carol weekly")), "carol do(es) not hold ops")
	mustContain(t, bottest.Title(k.Say("dave", "/ops duty set ops dave,ivan weeky")), `did you mean "weekly"`)
	r := k.Say("dave", "/ops duty set ops dave,ivan weekly")
	mustContain(t, bottest.Title(r), "ops 值班轮换 duty rotation (weekly): dave → ivan")
	mustContain(t, bottest.Text(r), "on duty now: dave 至 until 2026-05-11 00:00")

	mustContain(t, bottest.Title(k.Say("alice", hotfixNew)), "T-1 submitted")
	approve(t, k, "bob", "T-1", "deploy_approval")
	asked := func(user, id string) bool {
		return slices.ContainsFunc(k.Notices(user), func(s string) bool { return strings.Contains(s, id+" 等待你审批") })
	}
	if !asked("dave", "T-1") || asked("ivan", "T-1") {
		t.Fatalf("first: dave %q, ivan %q", k.Notices("dave"), k.Notices("ivan"))
	}
	k.Clock.Advance(2 * time.Hour) // deploy_approval reminds every 2h
	tick(t, k)
	if !asked("ivan", "T-1") {
		t.Fatalf("the whole role was not asked after the interval: %q", k.Notices("ivan"))
	}
	if n := countContaining(k.Notices("dave"), "T-1 等待你审批"); n != 1 {
		t.Fatalf("dave asked %d times", n)
	}
	mustContain(t, strings.Join(auditArgs(t, k, "T-1"), "\n"), "on duty: deploy_approval: ops=dave → ok")
	mustContain(t, k.Say("bob", "/ops duty show")[0].Body, "ops: dave 值班至 on duty until 2026-05-11 00:00")

	// Next week ivan is on duty.
	k.Clock.Advance(2 * 24 * time.Hour)
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=search version=v1 rollback_app=redeploy hotfix=true")), "T-2 submitted")
	approve(t, k, "bob", "T-2", "deploy_approval")
	if !asked("ivan", "T-2") || asked("dave", "T-2") {
		t.Fatalf("second week: dave %q, ivan %q", k.Notices("dave"), k.Notices("ivan"))
	}
	mustContain(t, strings.Join(auditArgs(t, k, "T-2"), "\n"), "on duty: deploy_approval: ops=ivan → ok")
}

// noticeRev is the revision of user's local notice about ticket id (it
// rises when the card is redrawn).
func noticeRev(k *bottest.Kit, user, id string) int64 {
	var rev int64
	for _, e := range k.Inbox(user) {
		if e.Kind == "notice" && e.Msg != nil && e.Msg.Ticket == id && e.Rev > rev {
			rev = e.Rev
		}
	}
	return rev
}

// TestFreezeExceptionOpensAFlowThatStartsWithAStep: a Puppet release
// asked as an exception runs its config check (it prepares what the
// approvals decide), but no batch is released before the exception's
// approval.
func TestFreezeExceptionOpensAFlowThatStartsWithAStep(t *testing.T) {
	fake := puppetRepo(t)
	k := bottest.New(t, bottest.WithYAML(gitlabYAML(fake)+"\ncalendar: {freeze_roles: [infra]}"))
	mustContain(t, bottest.Title(k.Say("ivan", `/ops freeze flows=puppet-release until=2026-05-10 except=director reason="store opening"`)), "F-1 已冻结")
	mustContain(t, bottest.Title(k.Say("alice", releaseNew)), "a new puppet-release ticket is refused until 2026-05-10 00:00 UTC")
	mustContain(t, bottest.Title(k.Say("alice", releaseNew+` exception="ntp drift"`)), "T-1 submitted")
	toReleasing(t, k, "T-1")
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-1 confirm")), "a batch release is refused until 2026-05-10 00:00 UTC")
	mustContain(t, bottest.Title(k.Say("erin", "/ops approve T-1")), "T-1 approve")
	releaseBatch(t, k, "T-1", 1, state.BatchSucceeded)
}

// TestShutdownMidDeliverySendsNothingTwice: the bot stops while Slack
// hangs on a team announcement that WeCom and the local chat already
// have; after the restart only Slack gets it.
func TestShutdownMidDeliverySendsNothingTwice(t *testing.T) {
	sf, wf := teamFakes(t, "game")
	yaml := fmt.Sprintf("slack: {mode: http, listen: \"127.0.0.1:0\", api_url: %q}\n%s\n"+
		"channels: {game: {slack: C0GAME, wecom_robot_env: OPSBOT_WECOM_ROBOT_GAME}}\ncalendar: {freeze_roles: [ops], channel: game}", sf.APIURL(), wecomYAML(wf))
	dir, clock := t.TempDir(), bottest.NewClock()
	k := bottest.Start(t, dir, clock, bottest.WithYAML(yaml))
	release, held := sf.Hold("C0GAME")
	defer release()
	mustContain(t, bottest.Title(k.Say("dave", `/ops freeze env=prod until=2026-05-12 reason="5.9 external test"`)), "F-1 已冻结")
	waitFor(t, "the Slack post to hang", held)
	k.Bot.Stop()
	release()
	k = bottest.Start(t, dir, clock, bottest.WithYAML(yaml))
	msgs := waitMessages(t, k, sf, "C0GAME", 1)
	k.Deliver()
	if len(sf.Messages("C0GAME")) != 1 || !strings.Contains(msgs[0].Text, "heads up: env prod is frozen") {
		t.Fatalf("slack: %+v", sf.Messages("C0GAME"))
	}
	if n := len(wf.RobotMessages("robot-game-key")); n != 1 {
		t.Fatalf("the WeCom robot got the announcement %d times", n)
	}
	if n := countContaining(k.Notices("#game"), "heads up: env prod is frozen"); n != 1 {
		t.Fatalf("the local #game got the announcement %d times", n)
	}
}

// TestAwayEndsEarly: back before the date, the approvals are yours again
// at once.
func TestAwayEndsEarly(t *testing.T) {
	k := bottest.New(t)
	mustContain(t, bottest.Title(k.Say("bert", "/ops away end")), "you are not away")
	mustContain(t, bottest.Title(k.Say("bert", "/ops away until=2026-05-12 delegate=bob")), "bert's approvals go to bob")
	mustContain(t, bottest.Title(k.Say("alice", hotfixNew)), "T-1 submitted")
	if countContaining(k.Notices("bert"), "T-1") != 0 {
		t.Fatal("bert asked while away")
	}
	mustContain(t, bottest.Title(k.Say("bert", "/ops away end")), "welcome back: your approvals are yours again (1 pending)")
	if !slices.ContainsFunc(k.Notices("bert"), func(s string) bool { return strings.Contains(s, "T-1 审批人变更，现在由你审批") }) {
		t.Fatalf("T-1 not handed back: %q", k.Notices("bert"))
	}
	mustContain(t, fmt.Sprint(bottest.Card(k.Say("bert", "/ops show T-1")).Fields), "techlead: bert, bob}")
	mustContain(t, k.Say("bob", "/ops away list")[0].Title, "nobody is away")
}
