package bot_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/integrations/zookeeper"
	"opsbot/integrations/zookeeper/zktest"
	"opsbot/state"
	"opsbot/templates"
)

type gameKit struct {
	t          *testing.T
	k          *bottest.Kit
	review     *zktest.Server
	production *zktest.Server
	next       int
}

func newGameKit(t *testing.T) *gameKit {
	review, production := zktest.Start(t), zktest.Start(t)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf(`zookeeper:
  review: [%q]
  production: [%q]
  cdn: "https://cdn.example.com/game/{platform}/{version}/"
  platforms: [android, ios]`, review.Addr, production.Addr)))
	return &gameKit{t: t, k: k, review: review, production: production}
}

func pkg(platform string, v int) string {
	return fmt.Sprintf("https://cdn.example.com/game/%s/%d/game.zip", platform, v)
}

// publishChecked opens a ticket, lets the check run, approves it and
// waits for it to be done; it returns the ticket id.
func (g *gameKit) publishChecked(flow, args string) string {
	g.t.Helper()
	g.next++
	id := fmt.Sprintf("T-%d", g.next)
	mustContain(g.t, bottest.Title(g.k.Say("alice", "/ops new "+flow+" "+args)), id+" submitted")
	g.k.WaitStage(id, "approval")
	mustContain(g.t, bottest.Title(g.k.Say("petra", "/ops approve "+id)), id+" approve")
	g.k.WaitStage(id, "done")
	return id
}

func (g *gameKit) resolve(platform string, section, gray, prod int) string {
	g.t.Helper()
	grayArg := ""
	if gray > 0 {
		grayArg = fmt.Sprint(gray)
	}
	title := bottest.Title(g.k.Say("bob", fmt.Sprintf("/ops version resolve platform=%s section=%d gray_version=%s prod_version=%d", platform, section, grayArg, prod)))
	_, after, _ := strings.Cut(title, "→ ")
	return after
}

func (g *gameKit) expect(platform string, cases [][4]int) {
	g.t.Helper()
	for _, c := range cases {
		if got := g.resolve(platform, c[0], c[1], c[2]); got != fmt.Sprint(c[3]) {
			g.t.Errorf("%s client section=%d gray=%d prod=%d: offered %s, want %d", platform, c[0], c[1], c[2], got, c[3])
		}
	}
}

func prodArgs(platform string, v, min int, extra string) string {
	return fmt.Sprintf("platform=%s version=%d url=%s min_updatable=%d %s", platform, v, pkg(platform, v), min, extra)
}

// TestGraySequence runs DOMAIN.md's sequence: ver 1, gray 1, gray 2, ver 2
// without ending gray (then gray-end) on android, with ending gray on ios,
// and ver 3; for every client state the resolver gives the expected update.
func TestGraySequence(t *testing.T) {
	g := newGameKit(t)
	for _, p := range []string{"android", "ios"} {
		g.publishChecked("prod-update", prodArgs(p, 100, 1, ""))
		g.expect(p, [][4]int{{1, 0, 100, 0}, {2, 0, 100, 0}})
		g.publishChecked("gray-publish", prodArgs(p, 101, 100, ""))
		g.expect(p, [][4]int{{1, 0, 100, 0}, {2, 0, 100, 101}})
		g.publishChecked("gray-publish", prodArgs(p, 102, 100, ""))
		g.expect(p, [][4]int{{2, 0, 100, 102}, {2, 101, 100, 102}, {1, 0, 100, 0}})
	}
	// android: ver 2 without ending gray: prod moves, gray stays.
	g.publishChecked("prod-update", prodArgs("android", 103, 100, "end_gray=false"))
	g.expect("android", [][4]int{{1, 0, 100, 103}, {2, 102, 100, 0}, {2, 0, 100, 102}})
	// Then end gray: everyone on gray goes to ver 2.
	g.publishChecked("gray-end", "platform=android")
	g.expect("android", [][4]int{{2, 102, 100, 103}, {1, 0, 100, 103}})
	// ios: ver 2 with ending gray: everyone to ver 2 at once.
	g.publishChecked("prod-update", prodArgs("ios", 103, 100, "end_gray=true"))
	g.expect("ios", [][4]int{{1, 0, 100, 103}, {2, 102, 100, 103}, {2, 101, 100, 103}})
	// ver 3 for both.
	for _, p := range []string{"android", "ios"} {
		g.publishChecked("prod-update", prodArgs(p, 104, 103, ""))
		g.expect(p, [][4]int{{1, 0, 103, 104}, {2, 0, 103, 104}})
	}
	// Online versions filter by release type.
	g.publishChecked("prod-update", prodArgs("ios", 105, 104, "release_type=offline"))
	body := g.k.Say("bob", "/ops version list platform=ios online=true")[0].Body
	if strings.Contains(body, "105 ") || !strings.Contains(body, "104 base online") {
		t.Fatalf("online versions:\n%s", body)
	}
}

// TestStrandedLiveVersionIsRefused: the real case. Base 1146; gray 1148
// published with minimum 1029 but a compatible list of only 1148.
func TestStrandedLiveVersionIsRefused(t *testing.T) {
	g := newGameKit(t)
	g.publishChecked("prod-update", prodArgs("android", 1146, 1000, ""))
	g.next++
	mustContain(t, bottest.Title(g.k.Say("alice", "/ops new gray-publish "+prodArgs("android", 1148, 1029, "compatible=1148"))), "T-2 submitted")
	tk := g.k.WaitStage("T-2", "failed")
	mustContain(t, tk.Results["check"].Error, "1146 is not in the compatible list [1148]")
	mustContain(t, tk.Results["check"].Output, "1146 -> 1148 ✗")
	g.k.Say("alice", "/ops cancel T-2")
	// Corrected: the list is computed from the history and the minimum.
	g.publishChecked("gray-publish", prodArgs("android", 1148, 1029, ""))
	if got := g.resolve("android", 2, 0, 1146); got != "1148" {
		t.Fatalf("1146 on the gray server is offered %s, want 1148", got)
	}
	// A package outside the CDN layout is refused at submission, with the
	// layout the version service hands out as the example.
	r := g.k.Say("alice", "/ops new gray-publish platform=android version=1149 url=https://cdn.example.com/sh/android/1149/g.zip min_updatable=1146")
	mustContain(t, bottest.Title(r), "is not under the CDN directory the version service hands out")
	mustContain(t, r[0].Body, "url=https://cdn.example.com/game/android/1149/game.zip")
}

// TestReviewPublishBothEnsemblesInOrder: the review ensemble, then the
// production one; with production down the ticket shows the half-done
// state and a retry of that step alone completes it.
func TestReviewPublishBothEnsemblesInOrder(t *testing.T) {
	g := newGameKit(t)
	g.publishChecked("prod-update", prodArgs("android", 200, 1, ""))
	g.production.Stop()
	g.next++
	mustContain(t, bottest.Title(g.k.Say("alice", "/ops new review-publish "+prodArgs("android", 201, 200, ""))), "T-2 submitted")
	g.k.WaitStage("T-2", "approval")
	g.k.Say("petra", "/ops approve T-2")
	tk := g.k.WaitStage("T-2", "failed")
	if tk.FailedStage != "write_production" || !tk.Results["write_review"].OK {
		t.Fatalf("half-done state not shown: failed %q results %+v", tk.FailedStage, tk.Results)
	}
	card := g.k.Bot.Card(tk)
	if _, ok := bottest.Button(card, "Retry"); !ok {
		t.Fatal("no retry on the half-done card")
	}
	rev, _ := zookeeper.Open(zookeeper.Config{Name: "review", Servers: []string{g.review.Addr}})
	defer rev.Close()
	if p, _, _ := rev.Pointers("android"); p.Review != 201 {
		t.Fatalf("review ensemble review pointer %d", p.Review)
	}
	g.production.Restart()
	// The bot's client reconnects to the restarted ensemble in its own
	// time (longer on a loaded machine): a retry that still finds it
	// unreachable fails the same way, and the person retries again.
	deadline := time.Now().Add(90 * time.Second)
	for {
		g.k.Say("alice", "/ops retry T-2")
		tk := waitEither(t, g.k, "T-2", "done", "failed", 60*time.Second)
		if tk.Stage == "done" {
			break
		}
		if !strings.Contains(tk.Results["write_production"].Error, "could not connect") || time.Now().After(deadline) {
			t.Fatalf("retry after the restart: %s %+v", tk.Stage, tk.Results["write_production"])
		}
		time.Sleep(time.Second)
	}
	prod, _ := zookeeper.Open(zookeeper.Config{Name: "production", Servers: []string{g.production.Addr}})
	defer prod.Close()
	if p, _, _ := prod.Pointers("android"); p.Review != 201 || p.Prod != 200 {
		t.Fatalf("production ensemble pointers %+v", p)
	}
	// The review write ran once: its record count is one.
	if recs, _ := rev.Records("android"); len(recs) != 1 {
		t.Fatalf("review ensemble has %d records", len(recs))
	}
	// Rollback restores the previous pointers on both ensembles.
	g.k.Say("petra", "/ops rollback T-2 confirm")
	g.k.WaitStage("T-2", "rolled_back")
	if p, _, _ := prod.Pointers("android"); p.Review != 0 {
		t.Fatalf("rollback left review %d on production", p.Review)
	}
	if p, _, _ := rev.Pointers("android"); p.Review != 0 {
		t.Fatalf("rollback left review %d on review", p.Review)
	}
}

// TestStoppedPlatformsAreSkippedVisibly: platform=all leaves a stopped
// platform alone and says so on the card.
func TestStoppedPlatformsAreSkippedVisibly(t *testing.T) {
	g := newGameKit(t)
	prod, _ := zookeeper.Open(zookeeper.Config{Name: "production", Servers: []string{g.production.Addr}})
	defer prod.Close()
	if err := prod.SetStatus("ios", "stopped"); err != nil {
		t.Fatal(err)
	}
	id := g.publishChecked("prod-update", "platform=all version=300 url=https://cdn.example.com/game/{platform}/300/game.zip min_updatable=1")
	tk := g.k.Ticket(id)
	mustContain(t, tk.Results["write"].Output, "production/ios: 已停服，跳过 stopped, skipped")
	if p, _, _ := prod.Pointers("ios"); p.Prod != 0 {
		t.Fatalf("stopped ios was written: %+v", p)
	}
	if p, _, _ := prod.Pointers("android"); p.Prod != 300 {
		t.Fatalf("android not written: %+v", p)
	}
}

// waitEither waits until the ticket is in one of two stages.
func waitEither(t *testing.T, k *bottest.Kit, id, a, b string, d time.Duration) state.Ticket {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		tk := k.Ticket(id)
		if tk.Stage == a || tk.Stage == b {
			return tk
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q, want %s or %s", id, tk.Stage, a, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestApproverSeesReachabilityAsItIsNow (issue 15, 1): which live versions
// can reach the new one is on the card from submission on, and is looked
// up again while the ticket waits: another publish that lands meanwhile
// changes it, the cards are redrawn, a button drawn before is refused,
// and a typed approval is asked again once.
func TestApproverSeesReachabilityAsItIsNow(t *testing.T) {
	g := newGameKit(t)
	g.publishChecked("prod-update", prodArgs("android", 100, 1, ""))
	r := g.k.Say("alice", "/ops new gray-publish "+prodArgs("android", 102, 100, ""))
	field := func(m templates.Message, label string) string {
		for _, f := range m.Fields {
			if strings.Contains(f.Label, label) {
				return f.Value
			}
		}
		return ""
	}
	if got := field(bottest.Card(r), "Reachability"); got != "production/android: 100 -> 102 ✓" {
		t.Fatalf("the card at submission shows reachability %q", got)
	}
	g.k.WaitStage("T-2", "approval")
	g.next = 2
	var approve templates.Button
	for _, e := range g.k.Inbox("petra") {
		if e.Msg != nil && e.Msg.Ticket == "T-2" && strings.Contains(e.Msg.Title, "needs your approval") {
			mustContain(t, field(*e.Msg, "Reachability"), "100 -> 102 ✓")
			approve, _ = bottest.Button(*e.Msg, "Approve")
		}
	}
	if approve.Value == "" {
		t.Fatal("petra's approval notice has no Approve button")
	}
	// Another publish lands meanwhile (platform=all holds another lock):
	// gray 101 is now live too, and must reach 102.
	g.publishChecked("gray-publish", "platform=all version=101 url=https://cdn.example.com/game/{platform}/101/game.zip min_updatable=100")
	if n, err := g.k.Bot.RefreshLookups(t.Context()); err != nil || n != 1 {
		t.Fatalf("refreshed %d (%v), want T-2", n, err)
	}
	mustContain(t, g.k.Ticket("T-2").Fields["reach"], "101 -> 102 ✓")
	mustContain(t, field(bottest.Card(g.k.Say("petra", "/ops show T-2")), "Reachability"), "production/android: 100 -> 102 ✓, 101 -> 102 ✓")
	mustContain(t, bottest.Title(g.k.Click("petra", approve.Value)), "what T-2 looked up has changed")
	// Gray ends meanwhile, and petra types her approval: asked again once
	// (the change is named), then taken.
	g.publishChecked("gray-end", "platform=all")
	mustContain(t, bottest.Title(g.k.Say("petra", "/ops approve T-2")), "has changed since the card was drawn: 可达 Reachability: production/android: 100 -> 102 ✓")
	mustContain(t, bottest.Title(g.k.Say("petra", "/ops approve T-2")), "T-2 approve")
	g.k.WaitStage("T-2", "done")
	mustContain(t, strings.Join(historyLines(t, g.k, "T-2"), "\n"), "opsbot 重新查询 looked up again: 已变化 changed: 可达 Reachability: production/android: 100 -> 102 ✓, 101 -> 102 ✓")
}

func historyLines(t *testing.T, k *bottest.Kit, id string) []string {
	t.Helper()
	return strings.Split(k.Say("root", "/ops show "+id)[1].Body, "\n")
}

// TestVersionIsNeverSilentlyRepublished (issue 15, 2): a version already
// in the history with another package is refused at submission, naming
// the record kept and the next free version; the identical record again
// is fine (only the pointers move) and the history keeps one record.
func TestVersionIsNeverSilentlyRepublished(t *testing.T) {
	g := newGameKit(t)
	g.publishChecked("prod-update", prodArgs("android", 100, 1, ""))
	r := g.k.Say("alice", "/ops new prod-update platform=android version=100 url=https://cdn.example.com/game/android/100/rebuilt.zip min_updatable=1")
	msg := bottest.Title(r) + " " + r[0].Body
	for _, want := range []string{"version 100 was published before (base, by alice", "game.zip (now https://cdn.example.com/game/android/100/rebuilt.zip)", "a rebuilt package needs a new version number, e.g. version=101", "版本 100 已发布过"} {
		mustContain(t, msg, want)
	}
	if _, err := g.k.Bot.Store().Get(t.Context(), "T-2"); err == nil {
		t.Fatal("the refused republish took a ticket")
	}
	g.publishChecked("prod-update", prodArgs("android", 100, 1, ""))
	body := g.k.Say("bob", "/ops version list platform=android")[0].Body
	if strings.Count(body, "100 base") != 1 {
		t.Fatalf("the history after republishing the same record:\n%s", body)
	}
}

// TestGrayResolverEveryClientEveryStep (issue 15, 3 and 4): the users'
// gray test cases, ver 1 = 100, gray 1 = 101, gray 2 = 102, ver 2 = 103.
// After every step, every client state is asked for both sections: a
// production client (no gray install), a gray-1 and a gray-2 client (a
// gray install beside production 100), and a ver-2 client without a gray
// install. Each server is judged by the client's own install for it; a
// client without a gray install that picks the gray server downloads the
// gray server's current version, never "up to date".
func TestGrayResolverEveryClientEveryStep(t *testing.T) {
	g := newGameKit(t)
	type client struct {
		name       string
		gray, prod int
	}
	clients := []client{{"prod client", 0, 100}, {"gray-1 client", 101, 100}, {"gray-2 client", 102, 100}, {"ver-2 client", 0, 103}}
	// want[client][section-1]: what the production server (1) and the
	// gray server (2) offer.
	check := func(p, step string, want [][2]int) {
		t.Helper()
		for i, c := range clients {
			for s := 1; s <= 2; s++ {
				if got := g.resolve(p, s, c.gray, c.prod); got != fmt.Sprint(want[i][s-1]) {
					t.Errorf("%s after %s: %s (gray %d, prod %d) on the %s server: offered %s, want %d",
						p, step, c.name, c.gray, c.prod, map[int]string{1: "production", 2: "gray"}[s], got, want[i][s-1])
				}
			}
		}
	}
	for _, p := range []string{"android", "ios"} {
		g.publishChecked("prod-update", prodArgs(p, 100, 1, ""))
		check(p, "ver 1", [][2]int{{0, 0}, {0, 0}, {0, 0}, {0, 0}})
		g.publishChecked("gray-publish", prodArgs(p, 101, 100, ""))
		check(p, "gray 1", [][2]int{{0, 101}, {0, 0}, {0, 0}, {0, 101}})
		g.publishChecked("gray-publish", prodArgs(p, 102, 100, ""))
		check(p, "gray 2", [][2]int{{0, 102}, {0, 102}, {0, 0}, {0, 102}})
	}
	// android: ver 2 without ending gray; then gray ends.
	g.publishChecked("prod-update", prodArgs("android", 103, 100, "end_gray=false"))
	check("android", "ver 2 without ending gray", [][2]int{{103, 102}, {103, 102}, {103, 0}, {0, 102}})
	// The ver-2 client without a gray install picking the gray server is
	// told why it gets the gray version.
	mustContain(t, g.k.Say("bob", "/ops version resolve platform=android section=2 gray_version= prod_version=103")[0].Body,
		"no local gray install: download the gray server's current version (ver:103)==>(gray_ver:102)")
	g.publishChecked("gray-end", "platform=android")
	check("android", "gray end", [][2]int{{103, 103}, {103, 103}, {103, 103}, {0, 0}})
	// ios: ver 2 ending gray at once.
	g.publishChecked("prod-update", prodArgs("ios", 103, 100, "end_gray=true"))
	check("ios", "ver 2 ending gray", [][2]int{{103, 103}, {103, 103}, {103, 103}, {0, 0}})

	// A request without a section says so and what is assumed.
	r := g.k.Say("bob", "/ops version resolve platform=ios gray_version= prod_version=100")
	mustContain(t, r[0].Title, "section=缺失 missing (按正式服 as production)")
	mustContain(t, r[0].Title, "→ 103")
	mustContain(t, r[0].Body, "the request names no section: answered for the production server")
	mustContain(t, bottest.Title(g.k.Say("bob", "/ops version resolve platform=ios section=7 prod_version=100")), "section=7 is not a section")
}

// TestPlatformStopStartIsACommand (issue 15, 5): /ops platform stop|start
// changes the status on both ensembles, role-guarded and audited; the
// version list shows it; a publish skips a stopped platform.
func TestPlatformStopStartIsACommand(t *testing.T) {
	g := newGameKit(t)
	mustContain(t, bottest.Title(g.k.Say("carol", "/ops platform stop ios")), "only holders of publisher, admin can stop or start a platform")
	mustContain(t, bottest.Title(g.k.Say("petra", "/ops platform stop iso")), `there is no platform "iso"`)
	mustContain(t, bottest.Title(g.k.Say("petra", "/ops platform stop ../../zookeeper")), `"../../zookeeper" is not a platform name`)
	mustContain(t, bottest.Title(g.k.Say("alice", "/ops new prod-update "+prodArgs("../x", 100, 1, ""))), `"../x" is not a platform name`)
	r := g.k.Say("petra", "/ops platform stop ios")
	mustContain(t, r[0].Title, "ios stopped: every publish skips it until /ops platform start ios")
	mustContain(t, r[0].Body, "production: 运行中 active -> 已停服 stopped")
	mustContain(t, r[0].Body, "review: 运行中 active -> 已停服 stopped")
	mustContain(t, g.k.Say("bob", "/ops version list platform=ios")[0].Title, "状态 status: 已停服 stopped")
	id := g.publishChecked("prod-update", "platform=all version=300 url=https://cdn.example.com/game/{platform}/300/game.zip min_updatable=1")
	mustContain(t, g.k.Ticket(id).Results["write"].Output, "production/ios: 已停服，跳过 stopped, skipped")
	mustContain(t, bottest.Title(g.k.Say("petra", "/ops platform start ios")), "ios started")
	mustContain(t, g.k.Say("bob", "/ops version list platform=ios")[0].Title, "状态 status: 运行中 active")
	g.k.Bot.FlushAudit(t.Context())
	audit := g.k.Say("root", "/ops audit petra")[0].Body
	mustContain(t, audit, "/ops platform stop ios] → ok")
	mustContain(t, audit, "/ops platform start ios] → ok")
	mustContain(t, g.k.Say("root", "/ops audit carol")[0].Body, "/ops platform stop ios] → refused")
}

// TestVersionListPages (issue 15, 6): a long history pages like /ops
// list, newest first, and says where the next page is.
func TestVersionListPages(t *testing.T) {
	g := newGameKit(t)
	prod, _ := zookeeper.Open(zookeeper.Config{Name: "production", Servers: []string{g.production.Addr}})
	defer prod.Close()
	for v := 1; v <= 45; v++ {
		rec := zookeeper.Record{Version: v, Kind: "base", ReleaseType: "online", URL: pkg("android", v), Compatible: []int{v - 1}}
		if _, _, err := prod.Change(t.Context(), "android", &rec, func(p zookeeper.Pointers, _ []zookeeper.Record) (zookeeper.Pointers, error) {
			p.Prod = v
			return p, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	r := g.k.Say("bob", "/ops version list platform=android")[0]
	mustContain(t, r.Title, "第 1/3 页 page 1 of 3 (45 versions)")
	lines := strings.Split(r.Body, "\n")
	if len(lines) != 21 || !strings.HasPrefix(lines[0], "45 base") || !strings.HasPrefix(lines[19], "26 base") ||
		lines[20] != "… 下一页 next page: /ops version list platform=android page=2" {
		t.Fatalf("page 1:\n%s", r.Body)
	}
	r = g.k.Say("bob", "/ops version list platform=android page=3")[0]
	if lines := strings.Split(r.Body, "\n"); len(lines) != 5 || !strings.HasPrefix(lines[0], "5 base") || !strings.HasPrefix(lines[4], "1 base") {
		t.Fatalf("page 3:\n%s", r.Body)
	}
	mustContain(t, g.k.Say("bob", "/ops version list platform=android page=4")[0].Body, "there is no page 4: 45 version(s), 3 page(s)")
	mustContain(t, bottest.Title(g.k.Say("bob", "/ops version list platform=android page=x")), `page="x" is not a page number`)
}

// TestGamePublishingGuideRunsAsWritten (issue 15, 7): every example of
// docs/game-publishing.md runs as written against real ZooKeeper
// ensembles, in order, and each answer shows what the guide quotes.
func TestGamePublishingGuideRunsAsWritten(t *testing.T) {
	doc, err := os.ReadFile("../docs/game-publishing.md")
	if err != nil {
		t.Fatal(err)
	}
	g := newGameKit(t)
	n := runDocExamples(t, g.k.Bot, doc, func(line, _ string) { t.Fatalf("the guide has a shell line: %s", line) })
	if n < 15 {
		t.Fatalf("only %d lines of the guide ran", n)
	}
	for id, stage := range map[string]string{"T-1": "done", "T-2": "done", "T-3": "done", "T-4": "done", "T-5": "done"} {
		if tk := g.k.Ticket(id); tk.Stage != stage {
			t.Errorf("%s ended in %s", id, tk.Stage)
		}
	}
}
