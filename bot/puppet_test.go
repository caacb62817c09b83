package bot_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/integrations/gitlab"
	"opsbot/integrations/gitlab/gitlabfake"
	"opsbot/state"
)

var zones = []string{"zone01", "zone02", "zone03", "zone04", "zone05", "zone06"}

// puppetRepo makes the control repository: main, uat, production and six
// zones at the same commit, and a temporary branch with the change.
func puppetRepo(t testing.TB) *gitlabfake.Fake {
	fake := gitlabfake.New(t)
	fake.Commit("main", "base", map[string]string{"manifests/site.pp": "node default {}\n", "Puppetfile": "mod 'puppetlabs/stdlib', '9.0.0'\n"})
	for _, b := range append([]string{"uat", "production"}, zones...) {
		fake.Branch(b, "main")
	}
	fake.Branch("release/ntp", "uat")
	fake.Commit("release/ntp", "ntp", map[string]string{"manifests/ntp.pp": "class ntp { package { 'chrony': } }\n"})
	t.Setenv("OPSBOT_GITLAB_TOKEN", fake.Token)
	return fake
}

func gitlabYAML(fake *gitlabfake.Fake) string {
	return fmt.Sprintf("gitlab: {base_url: %q, project: %q, max_concurrent: 3, zone_stores: {zone01: [S001, S002], zone02: [S003]}}",
		fake.URL(), gitlabfake.Project)
}

func puppetKit(t *testing.T) (*bottest.Kit, *gitlabfake.Fake) {
	fake := puppetRepo(t)
	return bottest.New(t, bottest.WithYAML(gitlabYAML(fake))), fake
}

// The kit's clock is 2026-05-09 18:00 China time: inside this window.
const releaseNew = `/ops new puppet-release title="NTP rollout" description="switch to chrony" branch=release/ntp ` +
	`window_start="2026-05-09 17:00" window_end="2026-05-09 23:00" batches="zone01,zone02;zone03,zone04;zone05,zone06" operators=dave`

// toReleasing opens the release and gets it approved.
func toReleasing(t *testing.T, k *bottest.Kit, id string) state.Ticket {
	t.Helper()
	tk := k.WaitStage(id, "infra_approval")
	mustContain(t, tk.Results["config_edit"].Output, "manifests/ntp.pp +1 -0")
	mustContain(t, tk.Results["config_edit"].Output, "Puppetfile OK")
	mustContain(t, bottest.Title(k.Say("ivan", "/ops approve "+id)), id+" approve")
	return k.WaitStage(id, "releasing")
}

func releaseBatch(t *testing.T, k *bottest.Kit, id string, n int, want string) state.Ticket {
	t.Helper()
	mustContain(t, bottest.Title(k.Say("dave", "/ops release "+id+" confirm")), id+" release")
	var tk state.Ticket
	waitFor(t, fmt.Sprintf("batch %d to be %s", n, want), func() bool {
		tk = k.Ticket(id)
		return tk.Batches[n-1].State == want
	})
	return tk
}

func TestPuppetReleaseHappyPath(t *testing.T) {
	k, fake := puppetKit(t)
	mustContain(t, bottest.Title(k.Say("alice", releaseNew)), "T-1 submitted")
	tk := toReleasing(t, k, "T-1")
	card := k.Bot.Card(tk)
	mustContain(t, fmt.Sprint(card.Fields), "zone01 (S001,S002)")
	mustContain(t, fmt.Sprint(card.Fields), "zone03 (无门店 no stores)")
	mustContain(t, fmt.Sprint(card.Fields), "{批次1门店 Batch 1 stores S001,S002,S003}")
	mustContain(t, fmt.Sprint(card.Fields), "{批次2门店 Batch 2 stores 无门店 no stores}")
	if b, ok := bottest.Button(card, "Release batch 1"); !ok || !strings.HasSuffix(b.Value, "batch=1 confirm") || b.Unconfirmed != "/ops release T-1#3 batch=1" || b.Confirm == "" {
		t.Fatalf("card buttons %+v", card.Buttons)
	}
	releaseBatch(t, k, "T-1", 1, state.BatchSucceeded)
	releaseBatch(t, k, "T-1", 2, state.BatchSucceeded)
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-1 confirm")), "T-1 release")
	tk = k.WaitStage("T-1", "done")
	for _, b := range append([]string{"uat", "production"}, zones...) {
		if got := fake.Read(b, "manifests/ntp.pp"); !strings.Contains(got, "chrony") {
			t.Errorf("%s lacks the change", b)
		}
	}
	if n := len(tk.Batches[0].Steps); n != 4 {
		t.Fatalf("batch 1 steps %+v", tk.Batches[0].Steps)
	}
	for _, b := range tk.Batches {
		for _, s := range b.Steps {
			if s.MR == 0 || s.Result != "merged" || s.MergeSHA == "" {
				t.Errorf("batch %s step %+v not recorded", b.Name, s)
			}
		}
	}
	if n := len(fake.MRs()); n != 8 {
		t.Fatalf("%d merge requests, want 8 (uat, production, six zones)", n)
	}
	// Every notification names the release plan.
	for _, n := range k.Notices("alice") {
		mustContain(t, n, "NTP rollout")
	}
	if !slices.ContainsFunc(k.Notices("alice"), func(s string) bool { return strings.Contains(s, "已完成 done") }) {
		t.Fatal("alice not told the release is done")
	}
}

func TestPuppetConflictStopsTheRelease(t *testing.T) {
	k, fake := puppetKit(t)
	fake.Commit("release/ntp", "site change", map[string]string{"manifests/site.pp": "node default { include ntp }\n"})
	fake.Commit("production", "hotfix", map[string]string{"manifests/site.pp": "node default { include hotfix }\n"})
	// The zones have the hotfix too (synced), so nothing stops the release
	// before it reaches production, where the change conflicts.
	for _, z := range zones {
		fake.Branch(z, "production")
	}
	zoneBefore := fake.Head("zone01")
	k.Say("alice", releaseNew)
	toReleasing(t, k, "T-1")
	tk := releaseBatch(t, k, "T-1", 1, state.BatchFailed)
	steps := tk.Batches[0].Steps
	if len(steps) != 2 || steps[0].Result != "merged" || steps[1].Result != "conflict" || !slices.Contains(steps[1].Files, "manifests/site.pp") {
		t.Fatalf("steps %+v", steps)
	}
	if fake.Head("zone01") != zoneBefore {
		t.Fatal("a zone was merged past the conflict")
	}
	card := k.Bot.Card(tk)
	mustContain(t, fmt.Sprint(card.Fields), "production !2 conflict [manifests/site.pp]")
	mustContain(t, fmt.Sprint(card.Fields), "Next safe step")
	// The conflict keeps its type: the files are on the step's result (the
	// card shows them in the batch row above).
	if r := tk.Results["releasing"]; !slices.Contains(r.Files, "manifests/site.pp") {
		t.Fatalf("result %+v lacks the conflicting file", r)
	}
	if _, ok := bottest.Button(card, "Release batch"); ok {
		t.Fatal("a failed release still offers the next batch")
	}
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-1")), "roll it back")
}

func TestPuppetRollbackSyncAndTheIncident(t *testing.T) {
	k, fake := puppetKit(t)
	ctx := context.Background()
	k.Say("alice", releaseNew)
	toReleasing(t, k, "T-1")
	releaseBatch(t, k, "T-1", 1, state.BatchSucceeded)
	releaseBatch(t, k, "T-1", 2, state.BatchSucceeded)
	mustContain(t, bottest.Title(k.Say("alice", "/ops cancel T-1")), "roll back every released batch")
	// Batch 2 first: newest first.
	mustContain(t, bottest.Title(k.Say("dave", "/ops rollback T-1 batch=1")), "the next is 2")
	mustContain(t, bottest.Title(k.Say("dave", "/ops rollback T-1 confirm")), "T-1 rollback")
	waitFor(t, "batch 2 rolled back", func() bool { return k.Ticket("T-1").Batches[1].State == state.BatchRolledBack })
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-1")), "cannot release again")
	mustContain(t, bottest.Title(k.Say("dave", "/ops rollback T-1 confirm")), "T-1 rollback")
	waitFor(t, "batch 1 rolled back", func() bool { return k.Ticket("T-1").Batches[0].State == state.BatchRolledBack })
	for _, b := range append([]string{"uat", "production"}, zones[:4]...) {
		if got := fake.Read(b, "manifests/ntp.pp"); got != "" {
			t.Errorf("%s still has the change after the rollback", b)
		}
	}
	bySHA := map[string]string{}
	for _, b := range k.Ticket("T-1").Batches[:2] {
		for _, s := range b.Steps {
			if s.Result != "reverted" || s.Revert == "" {
				t.Fatalf("step %+v not reverted", s)
			}
			bySHA[s.MergeSHA] = s.Target
		}
	}
	// The reverts ran newest first: batch 2's zones, then batch 1's zones,
	// then production, then uat.
	var order []string
	for _, c := range fake.Calls() {
		if strings.HasSuffix(c, "/revert") {
			sha := strings.Split(c, "/")[len(strings.Split(c, "/"))-2]
			order = append(order, bySHA[sha])
		}
	}
	if got := strings.Join(order, " "); got != "zone04 zone03 zone02 zone01 production uat" {
		t.Fatalf("revert order %q", got)
	}
	// Cancel: the sync merge requests are opened and the branch deleted.
	mustContain(t, bottest.Title(k.Say("dave", "/ops cancel T-1")), "T-1 cancel")
	var sync []gitlabfake.MR
	waitFor(t, "the sync merge requests", func() bool {
		sync = nil
		for _, m := range fake.MRs() {
			if strings.Contains(m.Title, "sync") {
				sync = append(sync, m)
			}
		}
		return len(sync) == 5 && fake.Head("release/ntp") == "" // uat->production, production->4 zones
	})
	// The job's report lands on the ticket once the job is recorded.
	waitFor(t, "the sync merge requests reported on the ticket", func() bool { return strings.Contains(k.Ticket("T-1").Note, "sync MR !") })

	// The real incident: a new release before the sync is merged would
	// revert on production what uat never got. The bot refuses it.
	fake.Branch("release/ntp2", "uat")
	fake.Commit("release/ntp2", "ntp again", map[string]string{"manifests/ntp.pp": "class ntp { package { 'ntp': } }\n"})
	k.Say("alice", strings.Replace(releaseNew, "release/ntp ", "release/ntp2 ", 1))
	toReleasing(t, k, "T-2")
	uatBefore := fake.Head("uat")
	// Refused before anything merged: the batch stays pending (nothing to
	// roll back), and the note names each unsynced branch with its sync MR.
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-2 confirm")), "T-2 release")
	var tk state.Ticket
	waitFor(t, "the refusal recorded", func() bool {
		tk = k.Ticket("T-2")
		return tk.Batches[0].State == state.BatchPending && tk.Batches[0].Note != ""
	})
	mustContain(t, tk.Batches[0].Note, "production lacks")
	mustContain(t, tk.Batches[0].Note, "commit(s) of uat: 同步 sync MR !")
	mustContain(t, tk.Batches[0].Note, "nothing was merged: merge the sync merge requests, then release this batch again")
	if fake.Head("uat") != uatBefore {
		t.Fatal("the refused release merged into uat")
	}
	if !slices.ContainsFunc(k.Notices("dave"), func(s string) bool { return strings.Contains(s, "batch not released, nothing was merged") }) {
		t.Fatalf("dave was not told the batch was not released: %q", k.Notices("dave"))
	}
	// Merging the sync requests (cleanly) lets the same ticket release.
	c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
	for _, m := range sync {
		if _, err := c.Merge(ctx, m.IID); err != nil {
			t.Fatalf("sync !%d does not merge cleanly: %v", m.IID, err)
		}
	}
	releaseBatch(t, k, "T-2", 1, state.BatchSucceeded)
}

func TestPuppetOperatorAndWindowChecks(t *testing.T) {
	k, _ := puppetKit(t)
	mustContain(t, bottest.Title(k.Say("alice", strings.Replace(releaseNew, "zone01,zone02;", "uat,zone02;", 1))), "batches hold zone branches only")
	k.Say("alice", releaseNew)
	toReleasing(t, k, "T-1")
	mustContain(t, bottest.Title(k.Say("bob", "/ops release T-1")), "only this release's operators (dave)")
	k.Clock.Advance(5*time.Hour + 30*time.Minute) // 23:30 China time: within the hour after the window
	releaseBatch(t, k, "T-1", 1, state.BatchSucceeded)
	k.Clock.Advance(time.Hour) // 00:30: over an hour after it ended
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-1")), "the planned window ended at")
}

func TestPuppetConfigCheckRunsOncePerHead(t *testing.T) {
	k, fake := puppetKit(t)
	fake.Commit("release/ntp", "bad pin", map[string]string{"Puppetfile": "mod 'ntp', :git => 'https://git/ntp.git', :commit => 'abc'\n"})
	k.Say("alice", releaseNew)
	tk := k.WaitStage("T-1", "failed")
	mustContain(t, tk.Results["config_edit"].Output, ":commit \"abc\" is not a 40-hex sha")
	// The executor's user error keeps its hint all the way to the card.
	mustContain(t, tk.Results["config_edit"].Hint, "fix the Puppetfile on the branch")
	mustContain(t, k.Bot.Card(tk).Body, "提示 hint: 在分支上修正 Puppetfile")
	calls := len(fake.Calls())
	k.Say("alice", "/ops retry T-1")
	tk = k.WaitStage("T-1", "failed")
	mustContain(t, tk.Results["config_edit"].Error, "has not moved since the failed check")
	if n := len(fake.Calls()) - calls; n != 1 {
		t.Fatalf("the unchanged branch was checked again: %d calls", n)
	}
	fake.Commit("release/ntp", "fix pin", map[string]string{"Puppetfile": "mod 'ntp', :git => 'https://git/ntp.git', :tag => 'v1.2.0'\n"})
	k.Say("alice", "/ops retry T-1")
	k.WaitStage("T-1", "infra_approval")
}

// TestPuppetSIGKILLMidBatch kills the bot while a batch is merging and
// restarts it: the batch completes and no branch gets the same merge twice.
func TestPuppetSIGKILLMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	bin := buildBinary(t)
	fake := puppetRepo(t)
	dir := t.TempDir()
	bottest.WriteScripts(t, dir)
	cfg := filepath.Join(dir, "opsbot.yaml")
	yaml := strings.Replace(bottest.ConfigYAML(dir, gitlabYAML(fake)), "listen: 127.0.0.1:0", "listen: "+freePort(t), 1)
	os.WriteFile(cfg, []byte(yaml), 0o644)
	cst := time.FixedZone("CST", 8*3600)
	now := time.Now().In(cst)
	create := strings.NewReplacer(`"2026-05-09 17:00"`, `"`+now.Add(-time.Hour).Format("2006-01-02 15:04")+`"`,
		`"2026-05-09 23:00"`, `"`+now.Add(3*time.Hour).Format("2006-01-02 15:04")+`"`).Replace(releaseNew)

	p := startProc(t, bin, cfg)
	p.say("alice", create)
	waitFor(t, "the config check", func() bool { return p.stage("T-1") == "infra_approval" })
	p.say("ivan", "/ops approve T-1")
	waitFor(t, "releasing", func() bool { return p.stage("T-1") == "releasing" })
	fake.SetLatency(150 * time.Millisecond)
	p.say("dave", "/ops release T-1 confirm")
	waitFor(t, "the first merge", func() bool {
		for _, m := range fake.MRs() {
			if m.State == "merged" {
				return true
			}
		}
		return false
	})
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	fake.SetLatency(0)

	p = startProc(t, bin, cfg)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(fmt.Sprint(bottest.Card(p.say("alice", "/ops show T-1")).Fields), "已发布 succeeded") {
		if time.Now().After(deadline) {
			t.Fatalf("batch 1 did not finish after the restart: %v\n%s", bottest.Card(p.say("alice", "/ops show T-1")).Fields, p.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mergedOnce(t, fake, "release/ntp->uat", "uat->production", "production->zone01", "production->zone02")
	for _, b := range []string{"uat", "production", "zone01", "zone02"} {
		if !strings.Contains(fake.Read(b, "manifests/ntp.pp"), "chrony") {
			t.Errorf("%s lacks the change", b)
		}
	}
}

// releasedAndRolledBack releases T-1's first two batches, rolls them back
// and cancels: the sync merge requests (uat -> production, production ->
// zone01..zone04) are open. It returns them.
func releasedAndRolledBack(t *testing.T, k *bottest.Kit, fake *gitlabfake.Fake) map[string]gitlabfake.MR {
	t.Helper()
	k.Say("alice", releaseNew)
	toReleasing(t, k, "T-1")
	releaseBatch(t, k, "T-1", 1, state.BatchSucceeded)
	releaseBatch(t, k, "T-1", 2, state.BatchSucceeded)
	for n := 2; n >= 1; n-- {
		mustContain(t, bottest.Title(k.Say("dave", "/ops rollback T-1 confirm")), "T-1 rollback")
		waitFor(t, fmt.Sprintf("batch %d rolled back", n), func() bool { return k.Ticket("T-1").Batches[n-1].State == state.BatchRolledBack })
	}
	mustContain(t, bottest.Title(k.Say("dave", "/ops cancel T-1")), "T-1 cancel")
	sync := map[string]gitlabfake.MR{}
	waitFor(t, "the sync merge requests", func() bool {
		for _, m := range fake.MRs() {
			if strings.Contains(m.Title, "sync") {
				sync[m.TargetBranch] = m
			}
		}
		return len(sync) == 5
	})
	fake.Branch("release/ntp2", "uat")
	fake.Commit("release/ntp2", "ntp again", map[string]string{"manifests/ntp.pp": "class ntp { package { 'ntp': } }\n"})
	return sync
}

// TestPuppetSyncGuardChecksEveryBranch (issue 15, 8 and 9): with the
// uat -> production sync merged but the zone syncs still open, a new
// release is refused before anything merges, naming each unsynced zone
// and its sync MR; the batch stays pending, and once those are merged the
// same ticket releases. A later batch is checked the same way, leaving
// out what this release itself merged into production (zone04, synced
// before, is not named although production now has this release).
func TestPuppetSyncGuardChecksEveryBranch(t *testing.T) {
	k, fake := puppetKit(t)
	ctx := context.Background()
	sync := releasedAndRolledBack(t, k, fake)
	c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
	merge := func(target string) {
		t.Helper()
		if _, err := c.Merge(ctx, sync[target].IID); err != nil {
			t.Fatalf("sync -> %s: %v", target, err)
		}
	}
	merge("production")
	k.Say("alice", strings.Replace(releaseNew, "release/ntp ", "release/ntp2 ", 1))
	toReleasing(t, k, "T-2")
	heads := map[string]string{}
	for _, b := range append([]string{"uat", "production"}, zones...) {
		heads[b] = fake.Head(b)
	}
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-2 confirm")), "T-2 release")
	var tk state.Ticket
	waitFor(t, "the refusal recorded", func() bool {
		tk = k.Ticket("T-2")
		return tk.Batches[0].State == state.BatchPending && tk.Batches[0].Note != ""
	})
	note := tk.Batches[0].Note
	for _, z := range []string{"zone01", "zone02"} {
		mustContain(t, note, fmt.Sprintf("%s lacks", z))
		mustContain(t, note, fmt.Sprintf("同步 sync MR !%d production -> %s", sync[z].IID, z))
	}
	if strings.Contains(note, "zone03") || strings.Contains(note, "production lacks") {
		t.Fatalf("the refusal names branches batch 1 does not touch, or a synced one:\n%s", note)
	}
	for b, h := range heads {
		if fake.Head(b) != h {
			t.Fatalf("the refused release changed %s", b)
		}
	}
	// The card offers the same batch again, not a rollback.
	if _, ok := bottest.Button(k.Bot.Card(tk), "Release batch 1"); !ok {
		t.Fatalf("after the refusal the card offers %+v", k.Bot.Card(tk).Buttons)
	}
	merge("zone01")
	merge("zone02")
	merge("zone04")
	releaseBatch(t, k, "T-2", 1, state.BatchSucceeded)
	// Batch 2: zone03 still lacks production's reverts; zone04 is synced.
	// Production now also has this release, which is not counted.
	mustContain(t, bottest.Title(k.Say("dave", "/ops release T-2 confirm")), "T-2 release")
	waitFor(t, "batch 2 refused", func() bool {
		tk = k.Ticket("T-2")
		return tk.Batches[1].State == state.BatchPending && tk.Batches[1].Note != ""
	})
	var prodMerge string
	for _, s := range tk.Batches[0].Steps {
		if s.Target == "production" {
			prodMerge = s.MergeSHA
		}
	}
	before, _ := c.Ahead(ctx, "zone03", prodMerge+"^1")
	now, _ := c.Ahead(ctx, "zone03", "production")
	if before == 0 || before >= now {
		t.Fatalf("zone03 lacks %d commits of production before this release and %d now", before, now)
	}
	mustContain(t, tk.Batches[1].Note, fmt.Sprintf("zone03 lacks %d commit(s) of production: 同步 sync MR !%d", before, sync["zone03"].IID))
	if strings.Contains(tk.Batches[1].Note, "zone04") {
		t.Fatalf("a synced zone is named:\n%s", tk.Batches[1].Note)
	}
	for _, z := range zones[:2] {
		if got := fake.Read(z, "manifests/ntp.pp"); !strings.Contains(got, "'ntp'") {
			t.Errorf("%s lacks the new release: %q", z, got)
		}
	}
	if fake.Head("zone03") != heads["zone03"] {
		t.Fatal("the refused batch 2 changed zone03")
	}
}

// TestPuppetRevertCountsEveryMerge (issue 15, 10): a revert that fails in
// a batch of six merges counts all six.
func TestPuppetRevertCountsEveryMerge(t *testing.T) {
	k, fake := puppetKit(t)
	k.Say("alice", strings.Replace(releaseNew, `batches="zone01,zone02;zone03,zone04;zone05,zone06"`, `batches="zone01,zone02,zone03,zone04;zone05,zone06"`, 1))
	toReleasing(t, k, "T-1")
	tk := releaseBatch(t, k, "T-1", 1, state.BatchSucceeded)
	if n := len(tk.Batches[0].Steps); n != 6 {
		t.Fatalf("batch 1 made %d merges, want 6", n)
	}
	// Someone changed the file on zone02 since: its revert conflicts.
	fake.Commit("zone02", "local tweak", map[string]string{"manifests/ntp.pp": "class ntp { package { 'chrony': ensure => latest } }\n"})
	mustContain(t, bottest.Title(k.Say("dave", "/ops rollback T-1 confirm")), "T-1 rollback")
	waitFor(t, "the rollback to fail", func() bool { return k.Ticket("T-1").Batches[0].State == state.BatchRollbackFailed })
	note := k.Ticket("T-1").Batches[0].Note
	mustContain(t, note, "reverting on zone02 failed (部分回滚 partial: 2 of 6 reverted)")
}

// TestPuppetEveryMessageNamesThePlan (issue 15, 11): every message about
// the release, to everyone (notices, the answers to release, rollback and
// cancel, the sync report) and every merge request, names the release
// plan ("NTP rollout").
func TestPuppetEveryMessageNamesThePlan(t *testing.T) {
	k, fake := puppetKit(t)
	releasedAndRolledBack(t, k, fake)
	waitFor(t, "the sync report", func() bool { return strings.Contains(k.Ticket("T-1").Note, "sync MR !") })
	n := 0
	for _, u := range []string{"alice", "dave", "ivan", "root"} {
		for _, e := range k.Inbox(u) {
			if e.Msg == nil || (e.Msg.Ticket != "T-1" && !strings.Contains(e.Msg.Title, "T-1")) {
				continue
			}
			n++
			if !strings.Contains(e.Msg.Title, "NTP rollout") {
				t.Errorf("%s's %s %q does not name the plan", u, e.Kind, e.Msg.Title)
			}
		}
	}
	if n < 15 {
		t.Fatalf("only %d messages about T-1", n)
	}
	for _, m := range fake.MRs() {
		mustContain(t, m.Title, "NTP rollout")
	}
	var cleanup bool
	for _, ti := range k.Notices("alice") {
		cleanup = cleanup || strings.Contains(ti, "clean-up done: NTP rollout")
	}
	if !cleanup {
		t.Fatalf("alice was not told the clean-up (sync MRs) ran: %q", k.Notices("alice"))
	}
}

// mergedOnce checks that the merge requests merged are exactly want
// (source->target), each once.
func mergedOnce(t *testing.T, fake *gitlabfake.Fake, want ...string) {
	t.Helper()
	merged := map[string]int{}
	for _, m := range fake.MRs() {
		if m.State == "merged" {
			merged[m.SourceBranch+"->"+m.TargetBranch]++
		}
	}
	for pair, n := range merged {
		if n != 1 {
			t.Errorf("%s merged %d times", pair, n)
		}
	}
	if len(merged) != len(want) {
		t.Fatalf("merged %v, want %v", merged, want)
	}
	for _, w := range want {
		if merged[w] == 0 {
			t.Fatalf("%s not merged (merged: %v)", w, merged)
		}
	}
}
