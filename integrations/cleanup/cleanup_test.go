package cleanup_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"

	"opsbot/flows"
	"opsbot/integrations/cleanup"
	"opsbot/integrations/cleanup/mongotest"
	"opsbot/integrations/redis/redistest"
	"opsbot/state"
)

type fixture struct {
	t       *testing.T
	mongo   *mongotest.Server
	redis   *redistest.Server
	rc      *goredis.Client
	logs    string
	outside string
	x       *cleanup.Executor
	env     cleanup.Env
	now     time.Time
	freezes []state.Freeze
}

func newFixture(t *testing.T) *fixture {
	fx := &fixture{t: t, mongo: mongotest.Start(t), redis: redistest.Start(t), now: time.Date(2026, 5, 9, 10, 0, 0, 0, time.UTC)}
	fx.rc = goredis.NewClient(&goredis.Options{Addr: fx.redis.Addr})
	t.Cleanup(func() { fx.rc.Close() })
	fx.logs, fx.outside = t.TempDir(), t.TempDir()
	fx.env = cleanup.Env{Name: "tdev", MongoURI: fx.mongo.URI, Redis: cleanup.RedisConn{Addr: fx.redis.Addr}, Targets: []cleanup.Target{
		{Name: "players", Kind: cleanup.KindMongo, Database: "game", Collections: []string{"players", "items"}},
		{Name: "guilds", Kind: cleanup.KindMongo, Database: "guild"},
		{Name: "sessions", Kind: cleanup.KindRedis, DB: 2, Patterns: []string{"session:*", "cache:*"}},
		{Name: "logs", Kind: cleanup.KindLogs, Root: fx.logs, Globs: []string{"*.log", "archive/*.gz"}, OlderThan: time.Hour},
	}}
	fx.x = cleanup.New(cleanup.Config{Zone: time.FixedZone("CST", 8*3600), Envs: map[string]cleanup.Env{"tdev": fx.env}, BackupDir: t.TempDir(), ChangeThreshold: 0.2, Batch: 100,
		Now:     func() time.Time { return fx.now },
		Freezes: func(context.Context) ([]state.Freeze, error) { return fx.freezes, nil }})
	t.Cleanup(fx.x.Close)
	fx.seed()
	return fx
}

// seed fills every kind of target, plus things no target names.
func (fx *fixture) seed() {
	t, ctx := fx.t, context.Background()
	docs := func(n int, tag string) []any {
		var out []any
		for i := range n {
			out = append(out, bson.D{{Key: "_id", Value: fmt.Sprintf("%s-%d", tag, i)}, {Key: "n", Value: i}, {Key: "tag", Value: tag},
				{Key: "nested", Value: bson.D{{Key: "level", Value: i % 7}, {Key: "items", Value: bson.A{"a", i}}}}})
		}
		return out
	}
	for _, c := range []struct {
		db, coll string
		n        int
	}{{"game", "players", 120}, {"game", "items", 45}, {"game", "config", 10}, {"guild", "guilds", 30}, {"guild", "members", 70}} {
		if _, err := fx.mongo.Client.Database(c.db).Collection(c.coll).InsertMany(ctx, docs(c.n, c.coll)); err != nil {
			t.Fatal(err)
		}
	}
	db2 := goredis.NewClient(&goredis.Options{Addr: fx.redis.Addr, DB: 2})
	defer db2.Close()
	db3 := goredis.NewClient(&goredis.Options{Addr: fx.redis.Addr, DB: 3})
	defer db3.Close()
	pipe := db2.Pipeline()
	for i := range 300 {
		pipe.Set(ctx, fmt.Sprintf("session:%d", i), fmt.Sprintf("s%d", i), time.Duration(i+100)*time.Minute)
	}
	for i := range 200 {
		pipe.HSet(ctx, fmt.Sprintf("cache:%d", i), "v", i)
	}
	for i := range 50 {
		pipe.Set(ctx, fmt.Sprintf("keep:%d", i), i, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db3.Set(ctx, "session:other-db", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	old := fx.now.Add(-2 * time.Hour)
	write := func(rel, body string, mtime time.Time) {
		p := filepath.Join(fx.logs, rel)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	write("game.log", strings.Repeat("a", 1000), old)
	write("zone1/battle.log", strings.Repeat("b", 2500), old)
	write("zone1/fresh.log", "new", fx.now.Add(-time.Minute)) // younger than an hour: kept
	write("archive/old.gz", "gz", old)
	write("readme.txt", "keep me", old)
	// Symlinks pointing outside the root: neither followed nor deleted.
	os.WriteFile(filepath.Join(fx.outside, "precious.log"), []byte("outside"), 0o644)
	os.Chtimes(filepath.Join(fx.outside, "precious.log"), old, old)
	if err := os.Symlink(filepath.Join(fx.outside, "precious.log"), filepath.Join(fx.logs, "link.log")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fx.outside, filepath.Join(fx.logs, "linkdir")); err != nil {
		t.Fatal(err)
	}
}

func (fx *fixture) ticket(targets string) state.Ticket {
	return state.Ticket{ID: "T-1", Flow: "cleanup", Fields: map[string]string{"env": "tdev", "targets": targets}, Outputs: map[string]string{}}
}

func (fx *fixture) run(tk *state.Ticket, op string) flows.ExecResult {
	fx.t.Helper()
	kind := "action"
	if op == "undo" {
		kind = "undo"
	}
	r := fx.x.Run(context.Background(), flows.ExecInput{Ticket: *tk, Stage: op, Kind: state.JobKind(kind), Params: map[string]string{"op": op}, Attempt: 1})
	for k, v := range r.Set {
		tk.Outputs[k] = v
	}
	return r
}

func (fx *fixture) count(db, coll string) int64 {
	n, err := fx.mongo.Client.Database(db).Collection(coll).CountDocuments(context.Background(), bson.D{})
	if err != nil {
		fx.t.Fatal(err)
	}
	return n
}

func (fx *fixture) keys(db int, pattern string) int {
	c := goredis.NewClient(&goredis.Options{Addr: fx.redis.Addr, DB: db})
	defer c.Close()
	var n int
	iter := c.Scan(context.Background(), 0, pattern, 100).Iterator()
	for iter.Next(context.Background()) {
		n++
	}
	return n
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// TestDryRunCountsWhatTheWipeDeletes: per target, the dry run's counts are
// what the wipe then deletes; what no target names is intact; symlinks out
// of the root are not followed; Redis is wiped with SCAN and UNLINK only.
func TestDryRunCountsWhatTheWipeDeletes(t *testing.T) {
	fx := newFixture(t)
	tk := fx.ticket("players,guilds,sessions,logs")
	r := fx.run(&tk, "dry_run")
	if !r.OK {
		t.Fatal(r.Err)
	}
	wantPlan := strings.Join([]string{
		"players: game.players 120 docs, game.items 45 docs",
		"guilds: guild.guilds 30 docs, guild.members 70 docs",
		"sessions: db2 session:* 300 keys, db2 cache:* 200 keys",
		fmt.Sprintf("logs: %s 1 files (1000 B), %s/archive 1 files (2 B), %s/zone1 1 files (2.4 KiB)", fx.logs, fx.logs, fx.logs),
	}, "\n")
	if tk.Outputs["plan"] != wantPlan {
		t.Fatalf("plan:\n%s\nwant:\n%s", tk.Outputs["plan"], wantPlan)
	}
	r = fx.run(&tk, "wipe")
	if !r.OK {
		t.Fatalf("wipe: %+v", r)
	}
	for _, line := range strings.Split(wantPlan, "\n") {
		if !strings.Contains(r.Output, "🧹 已删除 deleted "+line) {
			t.Errorf("wipe output lacks %q:\n%s", line, r.Output)
		}
	}
	if len(r.Audit) != 4 || !strings.HasPrefix(r.Audit[2].Text, "wipe sessions: db2 session:* 300 keys") || r.Audit[2].Failed {
		t.Fatalf("audit %+v", r.Audit)
	}
	if tk.Outputs["wiped"] != "players,guilds,sessions,logs" {
		t.Fatalf("wiped %q", tk.Outputs["wiped"])
	}
	// Gone.
	for _, c := range [][2]string{{"game", "players"}, {"game", "items"}, {"guild", "guilds"}, {"guild", "members"}} {
		if n := fx.count(c[0], c[1]); n != 0 {
			t.Errorf("%s.%s still has %d", c[0], c[1], n)
		}
	}
	if fx.keys(2, "session:*")+fx.keys(2, "cache:*") != 0 {
		t.Error("redis keys left")
	}
	for _, p := range []string{"game.log", "zone1/battle.log", "archive/old.gz"} {
		if exists(filepath.Join(fx.logs, p)) {
			t.Errorf("%s left", p)
		}
	}
	// Intact.
	if n := fx.count("game", "config"); n != 10 {
		t.Errorf("game.config has %d, want 10", n)
	}
	if fx.keys(2, "keep:*") != 50 || fx.keys(3, "*") != 1 {
		t.Errorf("untouched keys: keep %d, db3 %d", fx.keys(2, "keep:*"), fx.keys(3, "*"))
	}
	for _, p := range []string{"zone1/fresh.log", "readme.txt", "link.log", "linkdir"} {
		if !exists(filepath.Join(fx.logs, p)) {
			t.Errorf("%s was removed", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(fx.outside, "precious.log")); err != nil || string(b) != "outside" {
		t.Errorf("the file behind the symlink: %q %v", b, err)
	}
	// Redis saw SCAN and UNLINK, never KEYS or a flush.
	stats, err := fx.rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"cmdstat_keys:", "cmdstat_flushdb:", "cmdstat_flushall:", "cmdstat_del:"} {
		if strings.Contains(stats, cmd) {
			t.Errorf("redis ran %s", cmd)
		}
	}
	for _, cmd := range []string{"cmdstat_scan:", "cmdstat_unlink:"} {
		if !strings.Contains(stats, cmd) {
			t.Errorf("redis never ran %s", cmd)
		}
	}
}

// TestBackupWipeRestore: the restored data is as it was: documents,
// keys with their time to live, files with their contents and times.
func TestBackupWipeRestore(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	readAll := func(db, coll string) []bson.M {
		cur, err := fx.mongo.Client.Database(db).Collection(coll).Find(ctx, bson.D{})
		if err != nil {
			t.Fatal(err)
		}
		var out []bson.M
		if err := cur.All(ctx, &out); err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(out, func(a, b bson.M) int { return strings.Compare(a["_id"].(string), b["_id"].(string)) })
		return out
	}
	before := readAll("game", "players")
	db2 := goredis.NewClient(&goredis.Options{Addr: fx.redis.Addr, DB: 2})
	defer db2.Close()
	ttlBefore := db2.TTL(ctx, "session:5").Val()
	hashBefore := db2.HGetAll(ctx, "cache:7").Val()
	logBefore, _ := os.ReadFile(filepath.Join(fx.logs, "zone1/battle.log"))
	stBefore, _ := os.Stat(filepath.Join(fx.logs, "zone1/battle.log"))

	tk := fx.ticket("players,sessions,logs")
	for _, op := range []string{"dry_run", "backup", "wipe"} {
		if r := fx.run(&tk, op); !r.OK {
			t.Fatalf("%s: %+v", op, r)
		}
	}
	if fx.count("game", "players") != 0 || fx.keys(2, "session:*") != 0 || exists(filepath.Join(fx.logs, "zone1/battle.log")) {
		t.Fatal("not wiped")
	}
	r := fx.run(&tk, "undo")
	if !r.OK {
		t.Fatalf("restore: %+v", r)
	}
	for _, want := range []string{"players: 已恢复 restored 165 docs", "sessions: 已恢复 restored 500 keys", "logs: 已恢复 restored 3 files"} {
		if !strings.Contains(r.Output, want) {
			t.Errorf("restore output lacks %q:\n%s", want, r.Output)
		}
	}
	after := readAll("game", "players")
	if !reflect.DeepEqual(after, before) || len(after) != 120 {
		t.Fatalf("documents differ:\n%v\n%v", before[:2], after[:2])
	}
	if fx.count("game", "items") != 45 {
		t.Fatal("items not restored")
	}
	if ttl := db2.TTL(ctx, "session:5").Val(); ttl <= 0 || ttl > ttlBefore {
		t.Fatalf("TTL %v, was %v", ttl, ttlBefore)
	}
	if db2.TTL(ctx, "keep:1").Val() != -1 {
		t.Fatal("a key without a TTL got one")
	}
	if got := db2.HGetAll(ctx, "cache:7").Val(); fmt.Sprint(got) != fmt.Sprint(hashBefore) {
		t.Fatalf("hash %v, was %v", got, hashBefore)
	}
	logAfter, _ := os.ReadFile(filepath.Join(fx.logs, "zone1/battle.log"))
	stAfter, _ := os.Stat(filepath.Join(fx.logs, "zone1/battle.log"))
	if string(logAfter) != string(logBefore) || !stAfter.ModTime().Equal(stBefore.ModTime()) || stAfter.Mode() != stBefore.Mode() {
		t.Fatalf("log file %q %v %v, was %v %v", logAfter[:10], stAfter.ModTime(), stAfter.Mode(), stBefore.ModTime(), stBefore.Mode())
	}
	// A second restore changes nothing and fails nothing.
	if r := fx.run(&tk, "undo"); !r.OK {
		t.Fatalf("second restore: %+v", r)
	}
	if fx.count("game", "players") != 120 {
		t.Fatal("second restore duplicated documents")
	}
}

// TestWipeStopsWhenTheDataChanged: beyond the threshold the wipe deletes
// nothing and asks for a new dry run; within it, it goes ahead.
func TestWipeStopsWhenTheDataChanged(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	tk := fx.ticket("sessions,players")
	fx.run(&tk, "dry_run")
	db2 := goredis.NewClient(&goredis.Options{Addr: fx.redis.Addr, DB: 2})
	defer db2.Close()
	for i := range 150 { // 500 -> 650 keys: +30%
		db2.Set(ctx, fmt.Sprintf("session:new-%d", i), 1, 0)
	}
	r := fx.run(&tk, "wipe")
	if r.OK || !r.Redo || !strings.Contains(fmt.Sprint(r.Err), "sessions: 500 → 650 keys (+30%)") || !strings.Contains(fmt.Sprint(r.Err), "nothing was wiped") {
		t.Fatalf("changed: %+v", r)
	}
	if fx.keys(2, "session:*") != 450 || fx.count("game", "players") != 120 {
		t.Fatal("a stopped wipe deleted something")
	}
	// A new dry run, then a small change (+10%) is within the threshold.
	fx.run(&tk, "dry_run")
	for i := range 65 {
		db2.Set(ctx, fmt.Sprintf("cache:new-%d", i), 1, 0)
	}
	r = fx.run(&tk, "wipe")
	if !r.OK || !strings.Contains(r.Output, "sessions: db2 session:* 450 keys, db2 cache:* 265 keys") {
		t.Fatalf("within the threshold: %+v", r)
	}
	// A wipe killed halfway records nothing; the retry finds fewer than
	// planned and asks again rather than trusting the old plan.
	tk = fx.ticket("guilds")
	fx.run(&tk, "dry_run")
	fx.mongo.Client.Database("guild").Collection("members").DeleteMany(ctx, bson.D{{Key: "n", Value: bson.D{{Key: "$lt", Value: 35}}}})
	if r = fx.run(&tk, "wipe"); !r.Redo || !strings.Contains(fmt.Sprint(r.Err), "guilds: 100 → 65 docs (-35%)") {
		t.Fatalf("after a partial wipe: %+v", r)
	}
}

// TestPartialFailureRetriesOnlyTheFailed: one target fails during the
// wipe; the others are wiped and reported; the retry does only the failed
// one, and a target already wiped is neither recounted nor wiped again.
func TestPartialFailureRetriesOnlyTheFailed(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	tk := fx.ticket("players,sessions,logs")
	fx.run(&tk, "dry_run")
	// Redis refuses UNLINK (SCAN still works): the sessions target fails.
	if err := fx.rc.Do(ctx, "ACL", "SETUSER", "default", "-unlink").Err(); err != nil {
		t.Fatal(err)
	}
	r := fx.run(&tk, "wipe")
	if r.OK || r.Redo || !strings.Contains(fmt.Sprint(r.Err), "1 个目标清理失败，重试只处理失败的目标 · 1 target(s) failed (a retry does only those): sessions: NOPERM") {
		t.Fatalf("partial: %+v", r)
	}
	if !strings.Contains(r.Output, "🧹 已删除 deleted players: game.players 120 docs, game.items 45 docs") ||
		!strings.Contains(r.Output, "❌ sessions 失败 failed after deleting") || !strings.Contains(r.Output, "🧹 已删除 deleted logs:") {
		t.Fatalf("per-target report:\n%s", r.Output)
	}
	var failedAudit []string
	for _, a := range r.Audit {
		if a.Failed {
			failedAudit = append(failedAudit, a.Text)
		}
	}
	if len(r.Audit) != 3 || len(failedAudit) != 1 || !strings.HasPrefix(failedAudit[0], "wipe sessions failed: NOPERM") {
		t.Fatalf("audit lines %+v", r.Audit)
	}
	if tk.Outputs["wiped"] != "players,logs" || fx.keys(2, "session:*") != 300 {
		t.Fatalf("wiped %q, sessions left %d", tk.Outputs["wiped"], fx.keys(2, "session:*"))
	}
	if err := fx.rc.Do(ctx, "ACL", "SETUSER", "default", "+unlink").Err(); err != nil {
		t.Fatal(err)
	}
	// New players arrive; players was wiped already, so the retry leaves
	// them (and does not count them as a change).
	fx.mongo.Client.Database("game").Collection("players").InsertOne(ctx, bson.D{{Key: "_id", Value: "late"}})
	r = fx.run(&tk, "wipe")
	if !r.OK || strings.Contains(r.Output, "players") || !strings.Contains(r.Output, "🧹 已删除 deleted sessions: db2 session:* 300 keys, db2 cache:* 200 keys") {
		t.Fatalf("retry: %+v", r)
	}
	if fx.count("game", "players") != 1 || tk.Outputs["wiped"] != "players,logs,sessions" {
		t.Fatalf("retry touched a wiped target: %d, %q", fx.count("game", "players"), tk.Outputs["wiped"])
	}
}

// TestFreezeAndProtectionGuards: a freeze refuses with its reason and end;
// it ends by itself; configured protections apply in their window.
func TestFreezeAndProtectionGuards(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	fx.freezes = []state.Freeze{{ID: "F-1", Envs: []string{"tdev"}, Until: fx.now.Add(24 * time.Hour), Reason: "5.2 release", By: "root"}}
	g, err := fx.x.Guard(ctx, "tdev", &state.Ticket{})
	if err != nil || g.Refused != "tdev 已冻结至 2026-05-10 18:00 CST（5.2 release，由 root 设置）· tdev is frozen until 2026-05-10 18:00 CST: 5.2 release (set by root). Cleanup is refused; /ops unfreeze F-1 lifts it" {
		t.Fatalf("frozen: %+v %v", g, err)
	}
	// At submission the engine checks freezes (an exception may pass).
	if g, _ := fx.x.Guard(ctx, "tdev", nil); g.Refused != "" {
		t.Fatalf("at submission: %+v", g)
	}
	// A ticket let through as an approved exception wipes.
	ex := &state.Ticket{Exception: &state.Exception{Freeze: "F-1", Roles: []string{"director"}, ApprovedBy: "erin"}}
	fx.freezes[0].Except = []string{"director"}
	if g, _ := fx.x.Guard(ctx, "tdev", ex); g.Refused != "" {
		t.Fatalf("approved exception: %+v", g)
	}
	fx.freezes[0].Except = nil
	// A freeze that began after approval still stops the wipe.
	tk := fx.ticket("sessions")
	fx.run(&tk, "dry_run")
	if r := fx.run(&tk, "wipe"); r.OK || !strings.Contains(fmt.Sprint(r.Err), "tdev is frozen until") || fx.keys(2, "session:*") != 300 {
		t.Fatalf("wipe while frozen: %+v", r)
	}
	fx.now = fx.now.Add(25 * time.Hour) // the freeze ended
	if g, _ := fx.x.Guard(ctx, "tdev", &state.Ticket{}); g.Refused != "" || g.Two {
		t.Fatalf("after the freeze: %+v", g)
	}
}
