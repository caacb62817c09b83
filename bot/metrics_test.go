package bot_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/bot/slack/slackfake"
	"opsbot/integrations/redis/redistest"
	"opsbot/internal/promtest"
)

// scrape returns the ops listener's /metrics text.
func scrape(t *testing.T, k *bottest.Kit) string {
	t.Helper()
	resp, err := http.Get("http://" + k.Bot.OpsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, body)
	}
	return string(body)
}

// A go-live, a failed deploy and a forged request show in /metrics as
// counts, a histogram bucket and the refusal's reason; /healthz and
// /readyz answer on the same listener.
func TestMetricsCountWhatHappened(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML(`ops: {listen: "127.0.0.1:0"}`))
	goLive := func(svc string) string {
		msgs := k.Say("alice", "/ops new golive service="+svc+" version=v1 rollback_app=redeploy hotfix=true")
		return ticketID.FindString(bottest.Title(msgs))
	}
	id := goLive("payments")
	k.Clock.Advance(2 * time.Hour) // plan review waits two hours
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve "+id)), id+" approve")
	mustContain(t, bottest.Title(k.Say("dave", "/ops approve "+id+" go")), id+" approve")
	k.WaitStage(id, "verify")
	mustContain(t, bottest.Title(k.Say("carol", "/ops approve "+id+" verified")), id+" approve")
	k.WaitStage(id, "done")

	k.Touch("fail")
	failed := goLive("billing")
	k.Say("bob", "/ops approve "+failed)
	k.Say("dave", "/ops approve "+failed+" go")
	k.WaitStage(failed, "failed")
	k.Say("eve", "/ops approve "+failed) // nobody: refused

	// A page on another site posts a command: refused at the edge.
	req, _ := http.NewRequest("POST", k.URL+"/api/command", bytes.NewReader([]byte(`{"user":"bob","text":"/ops approve T-1"}`)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Fatalf("forged request: %v %v", resp, err)
	}

	var m string
	waitFor(t, "the failed step in /metrics", func() bool {
		m = scrape(t, k)
		return strings.Contains(m, `opsbot_jobs_total{executor="script",result="failed"}`)
	})
	for _, want := range []string{
		`opsbot_commands_total{code="",command="approve",kind="command",result="ok"} 5`,
		`opsbot_commands_total{code="",command="new",kind="command",result="ok"} 2`,
		`opsbot_transitions_total{event="approve",flow="golive",stage="deploy_approval"} 2`,
		`opsbot_transitions_total{event="succeed",flow="golive",stage="verify"} 1`,
		`opsbot_transitions_total{event="fail",flow="golive",stage="failed"} 1`,
		`opsbot_transitions_total{event="approve",flow="golive",stage="done"} 1`,
		// Two hours in plan review: in the 4 h bucket, not the 1 h one.
		`opsbot_approval_wait_seconds_bucket{flow="golive",stage="plan_review",le="3600"} 1`,
		`opsbot_approval_wait_seconds_bucket{flow="golive",stage="plan_review",le="14400"} 2`,
		`opsbot_jobs_total{executor="script",result="succeeded"} 1`,
		`opsbot_jobs_total{executor="script",result="failed"} 1`,
		`opsbot_inbound_refused_total{platform="local",reason="origin"} 1`,
		`opsbot_build_info{backend="bbolt",version=`,
		`opsbot_leader 1`,
		`opsbot_outbox_depth `,
		`opsbot_state_bytes `,
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if !strings.Contains(m, `kind="command",result="refused"`) {
		t.Errorf("eve's refused approval is not counted:\n%s", grepLines(m, "opsbot_commands_total"))
	}
	for _, bad := range []string{id, "alice", "bob", "payments"} {
		if strings.Contains(grepLines(m, "opsbot_"), `"`+bad+`"`) {
			t.Errorf("a label holds %q: labels must come from bounded sets", bad)
		}
	}
	for path, want := range map[string]string{"/healthz": `"status":"ok"`, "/readyz": `"ready":true`} {
		resp, err := http.Get("http://" + k.Bot.OpsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	// The ops listener changes nothing.
	if resp, err := http.Post("http://"+k.Bot.OpsAddr()+"/metrics", "text/plain", nil); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics: %v %v", resp, err)
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A real Prometheus scrapes a running bot: after a go-live, a forged Slack
// request and a failed script step, its HTTP API answers with the series
// and values expected.
func TestPrometheusScrapesTheBot(t *testing.T) {
	if testing.Short() {
		t.Skip("runs prometheus")
	}
	k, fake := slackKit(t, "http", `ops: {listen: "127.0.0.1:0"}`)
	prom := promtest.Start(t, k.Bot.OpsAddr())
	id := ticketID.FindString(bottest.Title(k.Say("alice", "/ops new golive service=payments version=v1 rollback_app=redeploy hotfix=true")))
	k.Clock.Advance(30 * time.Minute)
	k.Say("bob", "/ops approve "+id)
	k.Say("dave", "/ops approve "+id+" go")
	k.WaitStage(id, "verify")
	k.Say("carol", "/ops approve "+id+" verified")
	k.WaitStage(id, "done")
	k.Touch("fail")
	failed := ticketID.FindString(bottest.Title(k.Say("alice", "/ops new golive service=billing version=v1 rollback_app=redeploy hotfix=true")))
	k.Say("bob", "/ops approve "+failed)
	k.Say("dave", "/ops approve "+failed+" go")
	k.WaitStage(failed, "failed")
	// A request that claims to be Slack but is signed with another secret.
	body := []byte(fake.SlashForm("U0BOB", "C0OPS", "approve "+failed).Encode())
	if code, _, _ := slackfake.Deliver("http://"+k.Bot.Slack().Addr()+"/slack/commands", "application/x-www-form-urlencoded",
		"not-the-signing-secret", time.Now(), body); code != 401 {
		t.Fatalf("a forged Slack request was answered %d", code)
	}
	for expr, want := range map[string]float64{
		`opsbot_transitions_total{flow="golive",stage="done",event="approve"}`:             1,
		`opsbot_jobs_total{executor="script",result="succeeded"}`:                          1,
		`opsbot_jobs_total{executor="script",result="failed"}`:                             1,
		`opsbot_inbound_refused_total{platform="slack",reason="signature"}`:                1,
		`sum(opsbot_commands_total{command="approve",result="ok"})`:                        5,
		`opsbot_approval_wait_seconds_bucket{flow="golive",stage="plan_review",le="900"}`:  1,
		`opsbot_approval_wait_seconds_bucket{flow="golive",stage="plan_review",le="3600"}`: 2,
		`opsbot_approval_wait_seconds_count{flow="golive",stage="deploy_approval"}`:        2,
		`up{job="opsbot"}`: 1,
	} {
		if err := prom.Wait(expr, want); err != nil {
			t.Error(err)
		}
	}
}

// The shipped alerts and dashboard use only metrics the bot exports:
// each name in their expressions is in a running bot's /metrics. promtool
// checks the rules and runs their unit tests (deploy/prometheus).
func TestAlertsUseExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("runs promtool and redis")
	}
	dir := filepath.Join("..", "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command("promtool", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var exprs []string
	rules, err := os.ReadFile(filepath.Join(dir, "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(rules), "\n") {
		if e, ok := strings.CutPrefix(strings.TrimSpace(l), "expr: "); ok {
			exprs = append(exprs, e)
		}
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "opsbot.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found", len(exprs))
	}

	// A bot with something to report: redis reached, a ticket waiting for
	// approval, a step run, a refusal at the edge.
	srv := redistest.Start(t)
	t.Setenv("OPSBOT_HOOK_SECRET", hookSecret)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("redis: {addr: %q}\nops: {listen: \"127.0.0.1:0\"}\n"+
		"webhooks: [{name: cmdb, url: \"http://127.0.0.1:9/hook\", secret_env: OPSBOT_HOOK_SECRET}]", srv.Addr)))
	k.Say("alice", "/ops new golive service=waiting version=v1 rollback_app=redeploy hotfix=true")
	id := ticketID.FindString(bottest.Title(k.Say("alice", "/ops new golive service=payments version=v1 rollback_app=redeploy hotfix=true")))
	k.Say("bob", "/ops approve "+id)
	k.Say("dave", "/ops approve "+id+" go")
	k.WaitStage(id, "verify")
	req, _ := http.NewRequest("POST", k.URL+"/api/command", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Origin", "http://evil.example")
	http.DefaultClient.Do(req)
	var m string
	waitFor(t, "the step's count and duration in /metrics", func() bool {
		m = scrape(t, k)
		// The two are observed one after the other: a scrape may fall
		// between them.
		return strings.Contains(m, "opsbot_job_duration_seconds_bucket") && strings.Contains(m, "opsbot_jobs_total{")
	})
	exported := map[string]bool{}
	for _, l := range strings.Split(m, "\n") {
		if name, ok := strings.CutPrefix(l, "# TYPE "); ok {
			name, kind, _ := strings.Cut(name, " ")
			exported[name] = true
			if kind == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					exported[name+s] = true
				}
			}
		}
	}
	exported["up"] = true // Prometheus's own, per target
	names := regexp.MustCompile(`\b(opsbot_[a-z_]+|process_[a-z_]+|go_[a-z_]+|up)\b`)
	checked := 0
	for _, e := range exprs {
		for _, n := range names.FindAllString(e, -1) {
			checked++
			if !exported[n] {
				t.Errorf("%s (in %s) is not in the bot's /metrics", n, e)
			}
		}
	}
	if checked < 25 {
		t.Fatalf("only %d metric names checked", checked)
	}
}

func readyz(t *testing.T, k *bottest.Kit) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + k.Bot.OpsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitReady waits until /readyz answers code with a body holding want.
func waitReady(t *testing.T, k *bottest.Kit, code int, want string) {
	t.Helper()
	var got int
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		if got, body = readyz(t, k); got == code && strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: want %d with %q, got %d %s", code, want, got, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// /readyz turns not-ready, saying why, when Slack revokes the bot token
// and when the state's disk is full or read-only; and ready again by
// itself once that is mended.
func TestReadyzSaysWhyNot(t *testing.T) {
	k, fake := slackKit(t, "http", `ops: {listen: "127.0.0.1:0"}`)
	waitReady(t, k, 200, `"ready":true`)
	fake.RevokeBotToken()
	waitReady(t, k, 503, "token_revoked")
	fake.SetBotToken(fake.BotToken)
	waitReady(t, k, 200, `"ready":true`)

	// WeCom: the app's secret reset in the admin console, then the app
	// disabled.
	wfake := newWeComFake(t)
	k = bottest.New(t, bottest.WithYAML(wecomYAML(wfake)+"\nops: {listen: \"127.0.0.1:0\"}"))
	waitReady(t, k, 200, `"ready":true`)
	wfake.SetSecret("reset-in-the-console")
	wfake.ExpireTokens()
	waitReady(t, k, 503, "40001")
	wfake.SetSecret(os.Getenv("OPSBOT_WECOM_SECRET"))
	waitReady(t, k, 200, `"ready":true`)
	wfake.CloseApp(true)
	waitReady(t, k, 503, "is disabled (停用)")
	wfake.CloseApp(false)
	waitReady(t, k, 200, `"ready":true`)

	// The state on a small filesystem of its own.
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v: %s): the disk checks need one", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	k = bottest.New(t, bottest.WithYAML(`ops: {listen: "127.0.0.1:0"}`), bottest.WithState(fmt.Sprintf("state: {path: %q}", filepath.Join(mnt, "opsbot.db"))))
	waitReady(t, k, 200, `"ready":true`)
	filler := filepath.Join(mnt, "filler")
	f, _ := os.Create(filler)
	f.Write(make([]byte, 16<<20)) // until the disk is full
	f.Close()
	waitReady(t, k, 503, "is full")
	os.Remove(filler)
	waitReady(t, k, 200, `"ready":true`)

	// A filesystem mounted read-only (a remount under an open file is
	// refused, so a second one, as a disk remounted read-only after errors
	// looks).
	ro := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Fatalf("mount read-only: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", ro).Run() })
	if msg := bot.DiskProblem(ro); !strings.Contains(msg, "read-only") {
		t.Fatalf("a read-only filesystem: %q", msg)
	}
	if msg := bot.DiskProblem(mnt); msg != "" {
		t.Fatalf("a healthy filesystem: %q", msg)
	}
}

// A disk the kernel turns read-only under the running bot (ext4 with
// errors=remount-ro, aborted: what an I/O error does) makes /readyz say
// so. Such a filesystem does not show read-only to statfs and cannot be
// remounted read-write without an fsck, so this is found by the write
// probe and mended by a restart after the repair.
func TestReadyzReadOnlyDisk(t *testing.T) {
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "state.img"), filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o700)
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 32<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Skipf("no mkfs.ext4 here (%v: %s)", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device here (%v: %s): the read-only disk check needs one", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	if out, err := exec.Command("mount", "-o", "errors=remount-ro", loop, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount %s (%v: %s)", loop, err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })

	k := bottest.New(t, bottest.WithYAML(`ops: {listen: "127.0.0.1:0"}`), bottest.WithState(fmt.Sprintf("state: {path: %q}", filepath.Join(mnt, "opsbot.db"))))
	waitReady(t, k, 200, `"ready":true`)
	if out, err := exec.Command("mount", "-o", "remount,abort", mnt).CombinedOutput(); err != nil {
		t.Fatalf("abort the filesystem: %v %s", err, out)
	}
	waitReady(t, k, 503, "is read-only: no approval can be recorded")
}

// One structured line per ticket event, with who, where and the request;
// a line per step with its result and duration; log.format json.
func TestLogLinesPeopleCanFollow(t *testing.T) {
	k := bottest.New(t)
	id := ticketID.FindString(bottest.Title(k.Say("alice", "/ops new golive service=payments version=v1 rollback_app=redeploy hotfix=true")))
	k.Say("bob", "/ops approve "+id)
	k.Say("dave", "/ops approve "+id+" go")
	k.WaitStage(id, "verify")
	// The step's line is written once its transaction has committed, so
	// just after the stage moves on.
	waitFor(t, "the step's log line", func() bool { return strings.Contains(k.LogText(), id+" step deploy succeeded") })
	logs := k.LogText()
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`msg="` + id + ` created by alice \(golive\): .*" ticket=` + id + ` flow=golive event=submit stage=plan_review user=alice platform=local req=[0-9a-f]{8}`),
		regexp.MustCompile(`msg="` + id + ` approve by bob: .*" ticket=` + id + ` flow=golive event=approve stage=deploy_approval user=bob platform=local req=[0-9a-f]{8}`),
		regexp.MustCompile(`msg="` + id + ` step deploy succeeded in 0s" ticket=` + id + ` stage=deploy executor=script result=succeeded duration=0s`),
	} {
		if !want.MatchString(logs) {
			t.Errorf("the log lacks %s:\n%s", want, logs)
		}
	}
	cfg, err := bot.ParseConfig([]byte("log: {format: json, level: warn}\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	l := cfg.Logger(&buf)
	l.Info("quiet")
	l.Warn("T-1 step deploy failed", "ticket", "T-1")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["ticket"] != "T-1" || line["level"] != "WARN" {
		t.Fatalf("json log at warn: %q %v", buf.String(), err)
	}
}

// The systemd unit passes systemd-analyze verify (with the binary where
// the unit wants it) and names the paths the README's "Run it for real"
// uses.
func TestServiceUnit(t *testing.T) {
	unit, err := os.ReadFile(filepath.Join("..", "deploy", "opsbot.service"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/usr/local/bin/opsbot", "/etc/opsbot/opsbot.yaml", "/etc/opsbot/opsbot.env", "/var/lib/opsbot"} {
		if !strings.Contains(string(unit), p) || !strings.Contains(string(readme), p) {
			t.Errorf("%s is not in both the unit and the README", p)
		}
	}
	for _, want := range []string{"User=opsbot", "ProtectSystem=strict", "ReadWritePaths=/var/lib/opsbot", "NoNewPrivileges=yes", "Restart=on-failure", "EnvironmentFile="} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed here")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "opsbot.service")
	if err := os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/opsbot"), []byte(bin)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
