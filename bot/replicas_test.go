package bot_test

// Several bot processes on one state in a real three-member etcd cluster.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/bot/slack/slackfake"
	"opsbot/integrations/gitlab/gitlabfake"
	"opsbot/state"
	"opsbot/state/etcdtest"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// leaseTTL is the replicas' lease in these tests: a dead replica's work
// is taken over within it (and a poll).
const leaseTTL = 2 * time.Second

// replicaSet is n bot processes sharing a state in etcd, with a fake
// Slack (each replica serves its own HTTP endpoint: the test is the load
// balancer) and the GitLab fake.
type replicaSet struct {
	t      testing.TB
	etcd   *etcdtest.Cluster
	bin    string
	dir    string
	env    []string
	slack  *slackfake.Server
	gitlab *gitlabfake.Fake
	cfgs   []string
	slackA []string // each replica's Slack endpoint
	procs  []*proc
	store  *state.Store
}

func startReplicas(t testing.TB, n int, extra string) *replicaSet {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary and runs etcd")
	}
	rs := &replicaSet{t: t, etcd: etcdtest.Start(t, 3), bin: buildBinary(t), dir: t.TempDir(), slack: slackfake.New(t), gitlab: puppetRepo(t)}
	for _, u := range []slackfake.User{{ID: "U0ALICE", Name: "alice.w", Email: "alice@example.com"},
		{ID: "U0BOB", Name: "bob", Email: "bob@example.com"}, {ID: "U0DAVE", Name: "dave", Email: "dave@example.com"},
		{ID: "U0CAROL", Name: "carol", Email: "carol@example.com"}} {
		rs.slack.AddUser(u)
	}
	bottest.WriteScripts(t, rs.dir)
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i * 7)
	}
	rs.env = append(os.Environ(), "OPSBOT_SLACK_BOT_TOKEN="+rs.slack.BotToken, "OPSBOT_SLACK_SIGNING_SECRET="+signingSecret,
		"OPSBOT_GITLAB_TOKEN="+rs.gitlab.Token, "OPSBOT_STATE_KEY="+hex.EncodeToString(key))
	eps := `["` + strings.Join(rs.etcd.Endpoints(), `", "`) + `"]`
	for i := 0; i < n; i++ {
		slackAddr := freePort(t)
		y := bottest.ConfigYAML(rs.dir, fmt.Sprintf("slack: {mode: http, listen: %q, api_url: %q, per_channel_per_minute: 100000}\n%s\n%s",
			slackAddr, rs.slack.APIURL(), gitlabYAML(rs.gitlab), extra))
		y = strings.Replace(y, "listen: 127.0.0.1:0", "listen: "+freePort(t), 1)
		y = strings.Replace(y, fmt.Sprintf("state: {path: %q}", filepath.Join(rs.dir, "opsbot.db")),
			fmt.Sprintf("state: {backend: etcd, etcd: {endpoints: %s, prefix: opsbot/, lease_ttl: %s}}", eps, leaseTTL), 1)
		cfg := filepath.Join(rs.dir, fmt.Sprintf("replica%d.yaml", i))
		if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		rs.cfgs, rs.slackA = append(rs.cfgs, cfg), append(rs.slackA, slackAddr)
		rs.procs = append(rs.procs, nil)
		rs.start(i)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: rs.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	t.Cleanup(func() {
		if t.Failed() && os.Getenv("OPSBOT_REPLICA_LOGS") != "" {
			var b strings.Builder
			for i, p := range rs.procs {
				fmt.Fprintf(&b, "== replica %d ==\n%s\n", i, p.logs.String())
			}
			os.WriteFile(os.Getenv("OPSBOT_REPLICA_LOGS"), []byte(b.String()), 0o644)
		}
	})
	if rs.store, err = state.OpenEtcd(context.Background(), cli, state.EtcdOptions{Prefix: "opsbot/", Key: []byte(hex.EncodeToString(key))}); err != nil {
		t.Fatal(err)
	}
	return rs
}

// start (re)starts replica i.
func (rs *replicaSet) start(i int) *proc {
	rs.t.Helper()
	p := &proc{t: rs.t, logs: &bottest.SyncBuffer{}}
	p.cmd = exec.Command(rs.bin, "run", "-config", rs.cfgs[i])
	p.cmd.Env = rs.env
	p.cmd.Dir = rs.dir
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	rs.procs[i] = p.start(rs.cfgs[i])
	return rs.procs[i]
}

// kill sends SIGKILL to replica i.
func (rs *replicaSet) kill(i int) {
	p := rs.procs[i]
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

// leader is the replica that leads now (by its /healthz), or -1.
func (rs *replicaSet) leader() int {
	for i, p := range rs.procs {
		if p == nil || p.cmd.ProcessState != nil {
			continue
		}
		if h := health(p); h["leader"] == true {
			return i
		}
	}
	return -1
}

func health(p *proc) map[string]any {
	resp, err := http.Get(p.url + "/healthz")
	if err != nil {
		return map[string]any{"status": "down", "err": err.Error()}
	}
	defer resp.Body.Close()
	out := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	out["code"] = resp.StatusCode
	return out
}

// slash posts "/ops text" from a Slack user to replica i's endpoint.
func (rs *replicaSet) slash(i int, user, text string) (int, string) {
	body := []byte(rs.slack.SlashForm(user, "C0OPS", text).Encode())
	code, resp, err := slackfake.Deliver("http://"+rs.slackA[i]+"/slack/commands", "application/x-www-form-urlencoded", signingSecret, time.Now(), body)
	if err != nil {
		return 0, err.Error()
	}
	return code, resp
}

// click posts a button press to replica i's endpoint.
func (rs *replicaSet) click(i int, payload []byte) (int, string) {
	body := []byte(url.Values{"payload": {string(payload)}}.Encode())
	code, resp, err := slackfake.Deliver("http://"+rs.slackA[i]+"/slack/interactions", "application/x-www-form-urlencoded", signingSecret, time.Now(), body)
	if err != nil {
		return 0, err.Error()
	}
	return code, resp
}

// ticket reads a ticket from etcd.
func (rs *replicaSet) ticket(id string) state.Ticket {
	rs.t.Helper()
	tk, err := rs.store.Get(context.Background(), id)
	if err != nil {
		rs.t.Fatalf("%s: %v", id, err)
	}
	return tk
}

func (rs *replicaSet) events(id string) []state.Event {
	rs.t.Helper()
	evs, err := rs.store.Events(context.Background(), id)
	if err != nil {
		rs.t.Fatalf("%s: %v", id, err)
	}
	return evs
}

func (rs *replicaSet) waitStage(id, stage string, within time.Duration) state.Ticket {
	rs.t.Helper()
	tk, err := rs.reach(id, stage, within)
	if err != nil {
		rs.t.Fatalf("%v\n%s", err, rs.logs())
	}
	return tk
}

// reach waits for a ticket to reach a stage (from any goroutine).
func (rs *replicaSet) reach(id, stage string, within time.Duration) (state.Ticket, error) {
	deadline := time.Now().Add(within)
	for {
		tk, err := rs.store.Get(context.Background(), id)
		if err == nil && tk.Stage == stage {
			return tk, nil
		}
		if time.Now().After(deadline) {
			return tk, fmt.Errorf("%s did not reach %s in %s (at %s %v)", id, stage, within, tk.Stage, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var ticketID = regexp.MustCompile(`T-\d+`)

// newTicket runs "/ops new ..." on p and returns the new ticket's id.
func newTicket(p *proc, user, text string) (string, error) {
	msgs, err := p.try(user, text)
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 || !strings.Contains(msgs[0].Title, "已提交") {
		return "", fmt.Errorf("%s: %+v", text, msgs)
	}
	return ticketID.FindString(msgs[0].Title), nil
}

func (rs *replicaSet) logs() string {
	var b strings.Builder
	for i, p := range rs.procs {
		l := p.logs.String()
		if len(l) > 6000 {
			l = l[len(l)-6000:]
		}
		fmt.Fprintf(&b, "== replica %d ==\n%s\n", i, l)
	}
	return b.String()
}

// dmButton finds the newest Slack direct message to user about ticket id
// with a button labelled label, and returns its ts and value.
func (rs *replicaSet) dmButton(user, id, label string) (string, string, bool) {
	msgs := rs.slack.Messages(user)
	for i := len(msgs) - 1; i >= 0; i-- {
		m := msgs[i]
		if !strings.Contains(blocksText(m.Blocks), id+" ") {
			continue
		}
		for _, b := range m.Blocks {
			if b["type"] != "actions" {
				continue
			}
			for _, e := range b["elements"].([]any) {
				el := e.(map[string]any)
				if strings.Contains(el["text"].(map[string]any)["text"].(string), label) {
					return m.TS, el["value"].(string), true
				}
			}
		}
	}
	return "", "", false
}

// Two replicas, work spread over both: go-lives approved through Slack
// clicks and local commands on either replica, and Puppet releases
// pressed on either. Every ticket is done, every merge made once, and no
// Slack message is posted twice.
func TestReplicasShareTheWork(t *testing.T) {
	rs := startReplicas(t, 2, "")
	const goLives = 18
	var wg sync.WaitGroup
	errs := make(chan error, goLives*4)
	for i := 0; i < goLives; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := i % 2 // the replica this ticket's commands go to first
			id, err := newTicket(rs.procs[r], "alice", fmt.Sprintf(`/ops new golive service=svc%02d version=v%d rollback_app=redeploy hotfix=true`, i, i))
			if err != nil {
				errs <- fmt.Errorf("replica %d: %v", r, err)
				return
			}
			// bob approves with a click on his Slack DM, sent to the
			// other replica than the one that posted it (any of them).
			var ts, value string
			deadline := time.Now().Add(20 * time.Second)
			for {
				var ok bool
				if ts, value, ok = rs.dmButton("U0BOB", id, "Approve"); ok {
					break
				}
				if time.Now().After(deadline) {
					errs <- fmt.Errorf("%s: no Slack DM to bob with Approve", id)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			if code, resp := rs.click(1-r, rs.slack.ClickPayload("U0BOB", "U0BOB", ts, value)); code != 200 {
				errs <- fmt.Errorf("%s: click: %d %s", id, code, resp)
				return
			}
			if _, err := rs.reach(id, "deploy_approval", 20*time.Second); err != nil {
				errs <- err
				return
			}
			if msgs, err := rs.procs[1-r].try("dave", "/ops approve "+id+" go"); err != nil || len(msgs) == 0 {
				errs <- fmt.Errorf("%s: dave's approval: %v", id, err)
				return
			}
			if _, err := rs.reach(id, "verify", 30*time.Second); err != nil {
				errs <- err
				return
			}
			if code, resp := rs.slash(r, "U0CAROL", "approve "+id+" verified"); code != 200 {
				errs <- fmt.Errorf("%s: carol's approval: %d %s", id, code, resp)
				return
			}
			if _, err := rs.reach(id, "done", 20*time.Second); err != nil {
				errs <- err
			}
		}()
	}

	// Meanwhile two Puppet releases, one after the other (they share a
	// lock), pressed on alternate replicas.
	cst := time.FixedZone("CST", 8*3600)
	now := time.Now().In(cst)
	window := strings.NewReplacer(`"2026-05-09 17:00"`, `"`+now.Add(-time.Hour).Format("2006-01-02 15:04")+`"`,
		`"2026-05-09 23:00"`, `"`+now.Add(3*time.Hour).Format("2006-01-02 15:04")+`"`,
		`batches="zone01,zone02;zone03,zone04;zone05,zone06"`, `batches="zone01,zone02;zone03"`)
	rs.gitlab.Branch("release/chrony2", "uat")
	rs.gitlab.Commit("release/chrony2", "chrony2", map[string]string{"manifests/chrony2.pp": "class chrony2 {}\n"})
	for n, branch := range []string{"release/ntp", "release/chrony2"} {
		create := strings.Replace(window.Replace(releaseNew), "branch=release/ntp", "branch="+branch, 1)
		create = strings.Replace(create, `title="NTP rollout"`, `title="`+branch+`"`, 1)
		id, err := newTicket(rs.procs[n], "alice", create)
		if err != nil {
			t.Fatal(err)
		}
		rs.waitStage(id, "infra_approval", 30*time.Second)
		rs.procs[1-n].say("ivan", "/ops approve "+id)
		rs.waitStage(id, "releasing", 20*time.Second)
		for batch := 1; batch <= 2; batch++ {
			rs.procs[(n+batch)%2].say("dave", "/ops release "+id+" confirm")
			deadline := time.Now().Add(30 * time.Second)
			for rs.ticket(id).Batches[batch-1].State != "succeeded" {
				if time.Now().After(deadline) {
					t.Fatalf("%s batch %d: %+v\n%s", id, batch, rs.ticket(id).Batches, rs.logs())
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		rs.waitStage(id, "done", 30*time.Second)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.Fatal(rs.logs())
	}

	// Every merge once: each release's merge requests are titled with
	// its plan's title, here its branch.
	merged := map[string]int{}
	for _, m := range rs.gitlab.MRs() {
		if m.State == "merged" {
			plan, _, _ := strings.Cut(m.Title, ":")
			merged[plan+" "+m.SourceBranch+"->"+m.TargetBranch]++
		}
	}
	for pair, n := range merged {
		if n != 1 {
			t.Errorf("%s merged %d times", pair, n)
		}
	}
	if len(merged) != 10 {
		t.Errorf("merges %v: want each release through uat, production and zone01..zone03", merged)
	}
	// Every deploy once.
	deploys := map[string]int{}
	for _, r := range bottest.Runs(rs.dir) {
		if f := strings.Fields(r); len(f) > 1 && f[0] == "deploy" {
			deploys[f[1]]++
		}
	}
	if len(deploys) != goLives {
		t.Errorf("%d tickets deployed, want %d: %v", len(deploys), goLives, deploys)
	}
	for id, n := range deploys {
		if n != 1 {
			t.Errorf("%s deployed %d times", id, n)
		}
	}
	// Every notification delivered (Slack allows a message a second per
	// conversation, so the last ones take a while)...
	deadline := time.Now().Add(90 * time.Second)
	for {
		n, err := rs.store.OutboxLen(context.Background())
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d notifications still undelivered (%v)\n%s", n, err, rs.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// ...once: no two posts alike to one conversation.
	seen := map[string]int{}
	for _, c := range rs.slack.Calls("chat.postMessage") {
		if c.Error != "" {
			continue // refused (rate limited): the bot waits and posts it again
		}
		seen[c.Channel+" "+c.Text+" "+fmt.Sprint(c.Blocks)]++
	}
	for k, n := range seen {
		if n > 1 {
			t.Errorf("posted %d times: %.200s", n, k)
		}
	}
	for i, p := range rs.procs {
		for _, l := range strings.Split(p.logs.String(), "\n") {
			if strings.Contains(l, "replica leads") || strings.Contains(l, "lost its") {
				t.Logf("replica %d: %s", i, l)
			}
		}
	}
	t.Logf("%d go-lives and 2 Puppet releases over 2 replicas: %d Slack posts, %d merges", goLives, len(seen), len(merged))
}

// releaseWindow fills the release command's window around now (the
// processes run on the real clock).
func releaseWindow(cmd string) string {
	cst := time.FixedZone("CST", 8*3600)
	now := time.Now().In(cst)
	return strings.NewReplacer(`"2026-05-09 17:00"`, `"`+now.Add(-time.Hour).Format("2006-01-02 15:04")+`"`,
		`"2026-05-09 23:00"`, `"`+now.Add(3*time.Hour).Format("2006-01-02 15:04")+`"`).Replace(cmd)
}

// The replica running a release batch is killed after its first merge:
// the other replica takes the job over within the lease TTL and a second,
// finishes the batch without merging anything twice, and says so in the
// ticket's thread.
func TestReplicaKilledMidReleaseIsTakenOver(t *testing.T) {
	rs := startReplicas(t, 2, "")
	// Opened in Slack, so the release has a thread the takeover is told in.
	create := strings.TrimPrefix(releaseWindow(releaseNew), "/ops ")
	if code, resp := rs.slash(0, "U0ALICE", create); code != 200 {
		t.Fatalf("open the release: %d %s", code, resp)
	}
	rs.waitStage("T-1", "infra_approval", 30*time.Second)
	rs.procs[1].say("ivan", "/ops approve T-1")
	rs.waitStage("T-1", "releasing", 20*time.Second)

	// Press release on the leader, so that its death also moves the
	// leadership (timers, outbox, settling) to the other replica.
	victim := -1
	waitFor(t, "a leader", func() bool { victim = rs.leader(); return victim >= 0 })
	other := 1 - victim
	rs.gitlab.SetLatency(200 * time.Millisecond)
	rs.procs[victim].say("dave", "/ops release T-1 confirm")
	waitFor(t, "the first merge", func() bool {
		for _, m := range rs.gitlab.MRs() {
			if m.State == "merged" {
				return true
			}
		}
		return false
	})
	jobs, err := rs.store.ActiveJobs(context.Background())
	if err != nil || len(jobs) != 1 || jobs[0].Status != state.JobRunning {
		t.Fatalf("the release job before the kill: %+v %v", jobs, err)
	}
	owner := jobs[0].Owner
	killed := time.Now()
	rs.kill(victim)
	rs.gitlab.SetLatency(0)

	// Taken over: the job leaves the dead replica.
	var took time.Duration
	deadline := time.Now().Add(3 * leaseTTL)
	for {
		j, err := rs.store.Job(context.Background(), jobs[0].ID)
		if err == nil && (j.Status != state.JobRunning || j.Owner != owner) {
			took = time.Since(killed)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the job was not taken over in %s: %+v\n%s", 3*leaseTTL, j, rs.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("SIGKILL of the replica running the release: taken over after %s (lease TTL %s)", took.Round(time.Millisecond), leaseTTL)
	if took > leaseTTL+time.Second {
		t.Errorf("taken over after %s, more than the lease TTL %s + 1s", took, leaseTTL)
	}
	deadline = time.Now().Add(30 * time.Second)
	for rs.ticket("T-1").Batches[0].State != "succeeded" {
		if time.Now().After(deadline) {
			t.Fatalf("batch 1 did not finish: %+v\n%s", rs.ticket("T-1").Batches, rs.logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	mergedOnce(t, rs.gitlab, "release/ntp->uat", "uat->production", "production->zone01", "production->zone02")
	// The thread says another replica took the step over.
	waitFor(t, "the takeover notice in the ticket's thread", func() bool {
		for _, m := range rs.slack.Messages("C0OPS") {
			if m.ThreadTS != "" && strings.Contains(m.Text, "another replica took it over") {
				return true
			}
		}
		return false
	})
	if !strings.Contains(rs.procs[other].logs.String(), "taking over a job from a replica that stopped") {
		t.Errorf("the surviving replica did not log the takeover:\n%s", rs.procs[other].logs)
	}
}

// The etcd leader is killed while approvals stream in through both
// replicas: no acknowledged approval is lost and none is applied twice.
// Then the cluster loses its quorum for a while: the bots say so in their
// health and log, and carry on by themselves once it is back.
func TestEtcdLeaderKilledDuringApprovals(t *testing.T) {
	rs := startReplicas(t, 2, "")
	const n = 120
	ids := make([]string, n)
	for i := range ids {
		id, err := newTicket(rs.procs[i%2], "alice", fmt.Sprintf(`/ops new golive service=e%02d version=v1 rollback_app=redeploy hotfix=true`, i))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	afterKill := 0
	var killedAt time.Time
	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := w; i < n; i += 4 {
				// A refused or failed approval is tried again, as a person
				// would: the first acknowledged one counts.
				for attempt := 0; attempt < 20; attempt++ {
					msgs, err := rs.procs[(i+attempt)%2].try("bob", "/ops approve "+ids[i])
					if err == nil && len(msgs) > 0 && strings.Contains(msgs[0].Title, ids[i]+" approve") {
						mu.Lock()
						acked[ids[i]] = true
						if !killedAt.IsZero() {
							afterKill++
						}
						mu.Unlock()
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	close(start)
	waitFor(t, "a quarter of the approvals", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= n/4 })
	leader, err := rs.etcd.Leader(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	killedAt = time.Now()
	mu.Unlock()
	rs.etcd.Kill(leader)
	wg.Wait()
	if afterKill < n/4 {
		t.Fatalf("only %d approvals were acknowledged after the kill: the kill was not in the middle", afterKill)
	}
	for _, id := range ids {
		approvals := 0
		for _, e := range rs.events(id) {
			if e.Type == "approve" {
				approvals++
			}
		}
		switch {
		case acked[id] && approvals != 1:
			t.Errorf("%s: acknowledged, %d approvals recorded", id, approvals)
		case !acked[id] && approvals > 1:
			t.Errorf("%s: %d approvals recorded", id, approvals)
		}
	}
	if len(acked) < n/2 {
		t.Fatalf("only %d of %d approvals were acknowledged across the leader's death", len(acked), n)
	}
	t.Logf("etcd leader killed mid-stream: %d of %d approvals acknowledged (%d after the kill), none lost, none doubled", len(acked), n, afterKill)
	rs.etcd.Restart(leader)

	// Quorum lost: two of three members down.
	a, b := (leader+1)%3, (leader+2)%3
	rs.etcd.Kill(a)
	rs.etcd.Kill(b)
	lost := time.Now()
	waitFor(t, "a replica's health to report the outage", func() bool {
		h := health(rs.procs[0])
		return h["code"] == 503 && strings.Contains(fmt.Sprint(h["etcd"]), "unreachable")
	})
	waitFor(t, "the outage in the log", func() bool { return strings.Contains(rs.procs[0].logs.String(), "etcd unreachable") })
	t.Logf("health reported the outage %s after the quorum was lost", time.Since(lost).Round(time.Millisecond))
	rs.etcd.Restart(a)
	rs.etcd.Restart(b)
	for i := range rs.procs {
		waitFor(t, fmt.Sprintf("replica %d healthy again", i), func() bool { return health(rs.procs[i])["code"] == 200 })
	}
	waitFor(t, "the recovery in the log", func() bool { return strings.Contains(rs.procs[0].logs.String(), "etcd reachable again") })
	waitFor(t, "a leader again", func() bool { return rs.leader() >= 0 })
	// Work goes on: an approval through each replica.
	for i := 0; i < 2; i++ {
		id, err := newTicket(rs.procs[i], "alice", fmt.Sprintf(`/ops new golive service=after%d version=v1 rollback_app=redeploy hotfix=true`, i))
		if err != nil {
			t.Fatal(err)
		}
		mustContain(t, bottest.Title(rs.procs[1-i].say("bob", "/ops approve "+id)), id+" approve")
	}
}

// Two replicas given the same click, the same lock and the same timer:
// one outcome each.
func TestReplicasRaceToOneOutcome(t *testing.T) {
	rs := startReplicas(t, 2, `
flows:
  - name: quick
    fields: [{name: service, required: true}]
    locks: ["service:{service}"]
    stages: [{name: approval, kind: approval, roles: [ops], expire_after: 2s}]
`)
	// The same click delivered to both replicas at once (a retry landing
	// elsewhere, or a load balancer's doubt).
	id, err := newTicket(rs.procs[0], "alice", `/ops new golive service=click version=v1 rollback_app=redeploy hotfix=true`)
	if err != nil {
		t.Fatal(err)
	}
	var ts, value string
	waitFor(t, "bob's DM", func() bool { var ok bool; ts, value, ok = rs.dmButton("U0BOB", id, "Approve"); return ok })
	payload := rs.slack.ClickPayload("U0BOB", "U0BOB", ts, value)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); rs.click(i, payload) }()
	}
	wg.Wait()
	rs.waitStage(id, "deploy_approval", 10*time.Second)
	time.Sleep(500 * time.Millisecond) // a second application would be written by now
	approvals := 0
	for _, e := range rs.events(id) {
		if e.Type == "approve" {
			approvals++
		}
	}
	if approvals != 1 {
		t.Fatalf("one click on two replicas: %d approvals", approvals)
	}

	// The same resource from both replicas at once.
	replies := make([]string, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msgs, err := rs.procs[i].try("alice", `/ops new golive service=contended version=v1 rollback_app=redeploy hotfix=true`)
			if err == nil && len(msgs) > 0 {
				replies[i] = msgs[0].Title + " " + msgs[0].Body
			}
		}()
	}
	wg.Wait()
	page, err := rs.store.List(context.Background(), state.Index{Kind: "flow", Keys: []string{"golive"}},
		func(tk state.Ticket) bool { return tk.Fields["service"] == "contended" }, 0, 10)
	if err != nil || len(page.Tickets) != 1 {
		t.Fatalf("two replicas took one lock: %d tickets %v\n%q", len(page.Tickets), err, replies)
	}
	if holder := page.Tickets[0].ID; !strings.Contains(strings.Join(replies, "\n"), holder) {
		t.Fatalf("the refused request does not name the holder %s: %q", holder, replies)
	}

	// The same timer: an approval that expires after 2s expires once.
	quick, err := newTicket(rs.procs[1], "alice", `/ops new quick service=q`)
	if err != nil {
		t.Fatal(err)
	}
	rs.waitStage(quick, "expired", 15*time.Second)
	time.Sleep(time.Second)
	expired := 0
	for _, e := range rs.events(quick) {
		if e.Type == "expire" {
			expired++
		}
	}
	if expired != 1 {
		t.Fatalf("the expiry fired %d times", expired)
	}

	// A Slack command a replica acknowledged and then died before
	// handling: the leader handles it, once.
	form := []byte(rs.slack.SlashForm("U0ALICE", "C0OPS", "new golive service=orphaned version=v1 rollback_app=redeploy hotfix=true").Encode())
	if _, _, err := rs.store.AddInbound(context.Background(), state.Inbound{Platform: "slack", Kind: "slash_form", Payload: form,
		At: time.Now(), Owner: "host-4242-dead"}, "slack:orphaned", time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	orphaned := func() int {
		page, _ := rs.store.List(context.Background(), state.Index{Kind: "flow", Keys: []string{"golive"}},
			func(tk state.Ticket) bool { return tk.Fields["service"] == "orphaned" }, 0, 10)
		return len(page.Tickets)
	}
	waitFor(t, "the dead replica's command to be handled", func() bool { return orphaned() > 0 })
	time.Sleep(2 * time.Second) // more rounds of the orphan loop on both replicas
	if n := orphaned(); n != 1 {
		t.Fatalf("the dead replica's command made %d tickets", n)
	}
	if in, _ := rs.store.PendingInbound(context.Background(), "slack"); len(in) != 0 {
		t.Fatalf("handled input kept: %+v", in)
	}
}
