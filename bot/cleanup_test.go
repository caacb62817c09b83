package bot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"opsbot/bot/bottest"
	"opsbot/integrations/cleanup/mongotest"
	"opsbot/integrations/redis/redistest"
	"opsbot/state"
)

type cleanupKit struct {
	t     *testing.T
	k     *bottest.Kit
	mongo *mongotest.Server
	redis *goredis.Client
	logs  string
}

// newCleanupKit: env tdev (Mongo on FerretDB, Redis db 1, a log
// directory), env prod protected by two approvers, env staging refused
// outright by the config, and env tsit protected from May 10 to May 20.
func newCleanupKit(t *testing.T) *cleanupKit {
	ck := &cleanupKit{t: t, mongo: mongotest.Start(t), logs: t.TempDir()}
	rs := redistest.Start(t)
	ck.redis = goredis.NewClient(&goredis.Options{Addr: rs.Addr, DB: 1})
	t.Cleanup(func() { ck.redis.Close() })
	t.Setenv("TEST_MONGO_URI", ck.mongo.URI)
	env := func(name string, backup bool) string {
		return fmt.Sprintf(`    %s:
      backup: %v
      mongo_uri_env: TEST_MONGO_URI
      redis: {addr: %q}
      targets:
        - {name: players, mongo: {database: %s_game, collections: [players]}}
        - {name: sessions, redis: {db: 1, patterns: ["%s:session:*"]}}
        - {name: logs, logs: {root: %q, globs: ["%s-*.log"]}}
`, name, backup, rs.Addr, name, name, ck.logs, name)
	}
	ck.k = bottest.New(t, bottest.WithYAML(`cleanup:
  backup_dir: `+t.TempDir()+`
  change_threshold: 0.2
  freeze_roles: [ops]
  protected:
    - {env: prod, mode: two_approvers, reason: "live players"}
    - {env: staging, mode: refuse, reason: "shared with partners"}
    - {env: tsit, mode: two_approvers, from: "2026-05-10", until: "2026-05-20", reason: "5.2 test round"}
  envs:
`+env("tdev", false)+env("prod", true)+env("staging", false)+env("tsit", false)))
	return ck
}

func (ck *cleanupKit) seed(env string, docs, keys, files int) {
	ctx := context.Background()
	var batch []any
	for i := range docs {
		batch = append(batch, bson.D{{Key: "_id", Value: fmt.Sprintf("%s-%d", env, i)}, {Key: "lvl", Value: i}})
	}
	if len(batch) > 0 {
		if _, err := ck.mongo.Client.Database(env+"_game").Collection("players").InsertMany(ctx, batch); err != nil {
			ck.t.Fatal(err)
		}
	}
	for i := range keys {
		ck.redis.Set(ctx, fmt.Sprintf("%s:session:%d", env, i), i, time.Hour)
	}
	for i := range files {
		os.WriteFile(filepath.Join(ck.logs, fmt.Sprintf("%s-%d.log", env, i)), []byte(strings.Repeat("x", 100)), 0o644)
	}
}

func (ck *cleanupKit) docs(env string) int64 {
	n, _ := ck.mongo.Client.Database(env+"_game").Collection("players").CountDocuments(context.Background(), bson.D{})
	return n
}

func (ck *cleanupKit) keys(env string) int {
	ks, _, _ := ck.redis.Scan(context.Background(), 0, env+":session:*", 10000).Result()
	return len(ks)
}

func (ck *cleanupKit) say(user, text string) string { return bottest.Title(ck.k.Say(user, text)) }

// TestCleanupDryRunApproveWipe: the approval card shows the dry run; the
// wipe deletes exactly that and reports it per target in the thread; the
// audit log has each destructive step.
func TestCleanupDryRunApproveWipe(t *testing.T) {
	ck := newCleanupKit(t)
	k := ck.k
	ck.seed("tdev", 40, 25, 3)
	ck.seed("prod", 5, 5, 1) // another env: untouched
	mustContain(t, ck.say("alice", "/ops new cleanup env=tdev targets=all reason=reset"), "T-1 submitted")
	tk := k.WaitStage("T-1", "approval")
	plan := fmt.Sprintf("players: tdev_game.players 40 docs\nsessions: db1 tdev:session:* 25 keys\nlogs: %s 3 files (300 B)", ck.logs)
	if tk.Outputs["plan"] != plan {
		t.Fatalf("plan %q", tk.Outputs["plan"])
	}
	card := k.Bot.Card(tk)
	found := false
	for _, f := range card.Fields {
		found = found || (f.Label == "试运行结果 Dry run (to be deleted)" && f.Value == plan)
	}
	if !found {
		t.Fatalf("the approval card does not show the plan: %+v", card.Fields)
	}
	approve(t, k, "dave", "T-1", "wipe")
	tk = k.WaitStage("T-1", "done")
	if _, skipped := tk.Results["backup"]; skipped {
		t.Fatal("backup ran though neither the env nor the requester asked")
	}
	for _, line := range strings.Split(plan, "\n") {
		mustContain(t, tk.Results["wipe"].Output, "🧹 已删除 deleted "+line)
	}
	if ck.docs("tdev") != 0 || ck.keys("tdev") != 0 || ck.docs("prod") != 5 || ck.keys("prod") != 5 {
		t.Fatalf("after: tdev %d/%d prod %d/%d", ck.docs("tdev"), ck.keys("tdev"), ck.docs("prod"), ck.keys("prod"))
	}
	if _, err := os.Stat(filepath.Join(ck.logs, "prod-0.log")); err != nil {
		t.Fatal("prod's log was removed")
	}
	audit := strings.Join(auditArgs(t, k, "T-1"), "\n")
	mustContain(t, audit, "cleanup wipe: wipe players: tdev_game.players 40 docs → ok")
	mustContain(t, audit, "cleanup wipe: wipe sessions: db1 tdev:session:* 25 keys → ok")
	// Names only: a database, pattern or path that no target names is refused.
	mustContain(t, ck.say("alice", "/ops new cleanup env=tdev targets=players,admin_db reason=x"),
		"env tdev 没有目标 admin_db · env tdev has no target admin_db: one of players, sessions, logs, or all")
	mustContain(t, ck.say("alice", "/ops new cleanup env=tdevv targets=all reason=x"),
		`env tdevv has no cleanup targets configured: one of prod, staging, tdev, tsit (是不是 did you mean "tdev"?)`)
}

func auditArgs(t *testing.T, k *bottest.Kit, ticket string) []string {
	t.Helper()
	k.Bot.FlushAudit(context.Background())
	es, _, err := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{Ticket: ticket}, 0, 500)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Action+": "+e.Args+" → "+e.Result)
	}
	return out
}

// TestCleanupFrozenThenUnfrozen: a frozen env is refused with the reason
// and end date; only freeze roles freeze; after unfreeze the cleanup runs.
func TestCleanupFrozenThenUnfrozen(t *testing.T) {
	ck := newCleanupKit(t)
	ck.seed("tdev", 3, 3, 0)
	mustContain(t, ck.say("alice", `/ops freeze env=tdev until=2026-05-12 reason="5.2 release"`), "only holders of ops, admin can set or lift freezes")
	mustContain(t, ck.say("dave", `/ops freeze env=tdev until=2026-05-12 reason="5.2 release"`), "F-1 已冻结 env tdev · env tdev frozen 2026-05-09 10:00 UTC → 2026-05-12 00:00 UTC")
	mustContain(t, ck.say("dave", `/ops freeze env=tdev until=2026-05-01 reason=x`), "until=2026-05-01 is in the past")
	mustContain(t, ck.say("alice", "/ops new cleanup env=tdev targets=all reason=reset"),
		"❄️ 冻结中（env tdev，5.2 release，由 dave 设置），新的 cleanup 工单 被拒绝，至 2026-05-12 00:00 UTC · frozen (env tdev: 5.2 release, set by dave): a new cleanup ticket is refused until 2026-05-12 00:00 UTC")
	mustContain(t, ck.k.Say("bob", "/ops freeze list")[0].Body, "F-1 env tdev · 2026-05-09 10:00 UTC → 2026-05-12 00:00 UTC (生效中 in force): 5.2 release · by dave")
	mustContain(t, ck.say("alice", "/ops unfreeze env=tdev"), "only holders of ops, admin")
	mustContain(t, ck.say("dave", "/ops unfreeze env=tdev"), "lifted: F-1 (env tdev: 5.2 release)")
	mustContain(t, ck.say("alice", "/ops new cleanup env=tdev targets=all reason=reset"), "T-1 submitted")
	ck.k.WaitStage("T-1", "approval")
	approve(t, ck.k, "dave", "T-1", "wipe")
	ck.k.WaitStage("T-1", "done")
	if ck.docs("tdev") != 0 {
		t.Fatal("not wiped")
	}
	audit := strings.Join(auditArgs(t, ck.k, ""), "\n")
	mustContain(t, audit, `command freeze: /ops freeze env=tdev until=2026-05-12 reason="5.2 release" → ok`)
	mustContain(t, audit, `command freeze: /ops freeze env=tdev until=2026-05-12 reason="5.2 release" → refused: not_role_holder`)
	mustContain(t, audit, "command unfreeze: /ops unfreeze env=tdev → ok")
}

// TestCleanupProtectedNeedsTwoApprovers: prod needs the env typed and two
// distinct approvers; staging is refused; tsit only inside its window;
// prod backs up first and /ops restore puts the data back.
func TestCleanupProtectedNeedsTwoApprovers(t *testing.T) {
	ck := newCleanupKit(t)
	k := ck.k
	ck.seed("prod", 12, 7, 2)
	mustContain(t, ck.say("alice", "/ops new cleanup env=staging targets=all reason=x"),
		"staging 是受保护环境，禁止清档 · staging is protected (shared with partners): cleanup is refused")
	mustContain(t, ck.say("alice", "/ops new cleanup env=prod targets=all reason=x"),
		"prod 是受保护环境：请填写 confirm=prod 确认，并需两位不同的审批人 · prod is protected (live players); type confirm=prod to go on, and two different approvers will be needed")
	mustContain(t, ck.say("alice", "/ops new cleanup env=prod targets=all confirm=Prod reason=x"), "type confirm=prod to go on")
	mustContain(t, ck.say("alice", "/ops new cleanup env=prod targets=all confirm=prod reason=x"), "T-1 submitted")
	tk := k.WaitStage("T-1", "approval")
	if tk.Fields["protection"] != "two_approvers" || tk.Fields["backup"] != "true" {
		t.Fatalf("fields %v", tk.Fields)
	}
	// Approving the wipe of a protected environment asks for a
	// confirmation first.
	mustContain(t, ck.say("dave", "/ops approve T-1"), "please confirm: 同意会开始不能撤回的操作")
	if tk = k.Ticket("T-1"); len(tk.Approvals) != 0 {
		t.Fatal("an unconfirmed approval counted")
	}
	mustContain(t, ck.say("dave", "/ops approve T-1 confirm"), "T-1 approve")
	if tk = k.Ticket("T-1"); tk.Stage != "approval" || len(tk.Approvals) != 1 {
		t.Fatalf("one approval moved it: %s %d", tk.Stage, len(tk.Approvals))
	}
	mustContain(t, ck.say("dave", "/ops approve T-1"), "you already approved T-1; it needs approvals from different people")
	if ck.docs("prod") != 12 {
		t.Fatal("wiped after one approver")
	}
	mustContain(t, ck.say("root", "/ops role grant ops erin"), "ops")
	mustContain(t, ck.say("erin", "/ops approve T-1 确认"), "T-1 approve")
	tk = k.WaitStage("T-1", "done")
	mustContain(t, tk.Results["backup"].Output, "players: 已备份 backed up 12 docs")
	if ck.docs("prod") != 0 || ck.keys("prod") != 0 {
		t.Fatal("not wiped")
	}
	mustContain(t, ck.say("dave", "/ops restore T-1 确认"), "T-1 rollback")
	tk = k.WaitStage("T-1", "rolled_back")
	mustContain(t, tk.Results["rolling_back"].Output, "sessions: 已恢复 restored 7 keys")
	if ck.docs("prod") != 12 || ck.keys("prod") != 7 {
		t.Fatalf("restored %d docs %d keys", ck.docs("prod"), ck.keys("prod"))
	}
	if ttl := ck.redis.TTL(context.Background(), "prod:session:3").Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("restored TTL %v", ttl)
	}
	// tsit is protected from May 10; the kit's clock says May 9.
	ck.seed("tsit", 1, 0, 0)
	mustContain(t, ck.say("alice", "/ops new cleanup env=tsit targets=players reason=x"), "T-2 submitted")
	k.Clock.Advance(24 * time.Hour)
	mustContain(t, ck.say("alice", "/ops new cleanup env=tsit targets=players reason=x"), "tsit is protected until 2026-05-20 00:00 UTC (5.2 test round); type confirm=tsit")
}

// TestCleanupAsksAgainWhenDataChanged: data grew beyond the threshold
// between approval and the wipe: nothing is deleted, a new dry run runs
// and the ticket waits for approval of the new plan.
func TestCleanupAsksAgainWhenDataChanged(t *testing.T) {
	ck := newCleanupKit(t)
	k := ck.k
	ck.seed("tdev", 10, 10, 0)
	mustContain(t, ck.say("alice", "/ops new cleanup env=tdev targets=players,sessions reason=reset"), "T-1 submitted")
	k.WaitStage("T-1", "approval")
	for i := range 5 { // 10 -> 15 keys: +50%
		ck.redis.Set(context.Background(), fmt.Sprintf("tdev:session:late-%d", i), 1, 0)
	}
	mustContain(t, ck.say("dave", "/ops approve T-1"), "T-1 approve")
	waitFor(t, "the ticket to come back for approval", func() bool {
		tk := k.Ticket("T-1")
		return tk.Stage == "approval" && strings.Contains(tk.Outputs["plan"], "15 keys")
	})
	tk := k.Ticket("T-1")
	mustContain(t, tk.Results["wipe"].Error, "sessions: 10 → 15 keys (+50%)")
	if ck.docs("tdev") != 10 || ck.keys("tdev") != 15 {
		t.Fatal("a stopped wipe deleted something")
	}
	k.Deliver()
	mustContain(t, strings.Join(k.Notices("alice"), "\n"), "T-1 数据已变化，重新试运行并审批 changed since the approved plan")
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, " "); got != "submit succeed approve redo succeed" {
		t.Fatalf("events %q", got)
	}
	approve(t, k, "dave", "T-1", "wipe")
	tk = k.WaitStage("T-1", "done")
	mustContain(t, tk.Results["wipe"].Output, "sessions: db1 tdev:session:* 15 keys")
}
