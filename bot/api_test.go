package bot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/state"
)

// apiClient calls the API over real HTTP with a token.
type apiClient struct {
	t     *testing.T
	base  string
	token string
}

func (c apiClient) call(method, path string, body any, hdr ...string) (int, map[string]any, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil {
		c.t.Fatalf("%s %s: %d, not JSON: %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out, resp.Header
}

// errCode is the error code of an API error body.
func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// cliKit writes a config file pointing the command line at the running
// kit and returns a runner of `opsbot ...`.
func cliKit(t *testing.T, k *bottest.Kit) func(args ...string) (int, string, string) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "opsbot.yaml")
	yaml := strings.Replace(bottest.ConfigYAML(k.Dir, ""), "listen: 127.0.0.1:0", "listen: "+k.Bot.Addr(), 1)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return func(args ...string) (int, string, string) {
		var out, errb strings.Builder
		args = append(args[:2:2], append([]string{"-config", cfgPath}, args[2:]...)...)
		code := bot.Main(args, nil, &out, &errb)
		return code, out.String(), errb.String()
	}
}

// runGate runs `opsbot gate` in the background and returns a function
// that waits for its exit code and output.
func runGate(args ...string) func() (int, string) {
	var out, errb bytes.Buffer
	var code int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); code = bot.GateMain(args, &out, &errb) }()
	return func() (int, string) { wg.Wait(); return code, out.String() + errb.String() }
}

// A CI-style client opens a go-live through the API (twice with one
// Idempotency-Key: one ticket), `opsbot gate` waits while people approve
// in the local chat and in Slack, and exits 0; a rejected ticket makes it
// exit 1 with who and why; tokens without the scope, revoked or expired
// are refused and audited; a token never approves unless the flow says so.
func TestAPIGate(t *testing.T) {
	k, fake := slackKit(t, "http", `api: {listen: "127.0.0.1:0", public_url: "https://opsbot.example.com"}
flows:
  - name: smoke
    title: 冒烟检查 Smoke check
    fields: [{name: service, required: true}]
    stages:
      - {name: bot_check, title: 自动检查 Automated check, kind: approval, roles: [ci], tokens_may_approve: true}`)
	in := inbound{t, k, fake, "http"}
	cli := cliKit(t, k)
	code, ci, stderr := cli("token", "create", "--name", "ci", "--as", "svc-ci", "--scopes", "tickets:create,tickets:read")
	if code != 0 || !strings.HasPrefix(ci, "opsbot_") || !strings.Contains(stderr, "shown once") {
		t.Fatalf("token create: %d %q %s", code, ci, stderr)
	}
	ci = strings.TrimSpace(ci)
	_, ro, _ := cli("token", "create", "--name", "reader", "--as", "svc-ci", "--scopes", "tickets:read")
	_, short, _ := cli("token", "create", "--name", "short", "--as", "svc-ci", "--scopes", "tickets:read", "--expires", "1h")
	_, approver, _ := cli("token", "create", "--name", "approver", "--as", "svc-ci", "--scopes", "tickets:read,tickets:approve")
	if code, _, e := cli("token", "create", "--name", "x", "--as", "svc-ci", "--scopes", "tickets:creat"); code == 0 || !strings.Contains(e, "did you mean tickets:create") {
		t.Fatalf("a misspelt scope: %d %s", code, e)
	}
	// Only the hash is kept.
	raw, _ := os.ReadFile(filepath.Join(k.Dir, "opsbot.db"))
	if bytes.Contains(raw, []byte(ci)) {
		t.Fatal("the token is in the state file in clear")
	}
	base := "http://" + k.Bot.APIAddr()
	api := apiClient{t, base, ci}

	// Create, twice with one key: one ticket.
	body := map[string]any{"flow": "golive", "fields": map[string]string{"service": "payments", "version": "v1.4.2", "rollback_app": "redeploy v1.4.1", "hotfix": "true"}}
	st, first, hdr := api.call("POST", "/api/v1/tickets", body, "Idempotency-Key", "pipeline-1")
	if st != 201 || first["id"] != "T-1" || first["stage"] != "plan_review" || hdr.Get("Location") != "/api/v1/tickets/T-1" ||
		first["link"] != "https://opsbot.example.com/api/v1/tickets/T-1" {
		t.Fatalf("create: %d %v %v", st, first, hdr)
	}
	st, again, hdr := api.call("POST", "/api/v1/tickets", body, "Idempotency-Key", "pipeline-1")
	if st != 200 || again["id"] != "T-1" || hdr.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the same key again: %d %v", st, again)
	}
	other := map[string]any{"flow": "golive", "fields": map[string]string{"service": "payments", "version": "v9", "rollback_app": "x"}}
	if st, b, _ := api.call("POST", "/api/v1/tickets", other, "Idempotency-Key", "pipeline-1"); st != 422 || errCode(b) != "idempotency_key_reused" {
		t.Fatalf("a key reused for another request: %d %v", st, b)
	}
	if st, b, _ := api.call("POST", "/api/v1/tickets", map[string]any{"flow": "golive", "fields": map[string]string{"service": "payments"}}); st != 400 || errCode(b) != "bad_fields" {
		t.Fatalf("missing fields: %d %v", st, b)
	}
	if _, err := k.Bot.Store().Get(context.Background(), "T-2"); err == nil {
		t.Fatal("a refused request opened a ticket")
	}
	// A token never approves by default.
	if st, b, _ := (apiClient{t, base, strings.TrimSpace(approver)}).call("POST", "/api/v1/tickets/T-1/approve", nil); st != 403 || errCode(b) != "token_cannot_decide" {
		t.Fatalf("a token approving: %d %v", st, b)
	}

	// The gate: people approve in the local chat and in Slack.
	t.Setenv("OPSBOT_URL", base)
	t.Setenv("OPSBOT_TOKEN", ci)
	t.Setenv("CI_PIPELINE_ID", "77")
	t.Setenv("CI_JOB_NAME", "deploy")
	wait := runGate("--flow", "golive", "--wait", "--timeout", "2m", "service=orders", "version=v2.0.0", "rollback_app=redeploy v1.9.9", "hotfix=true")
	k.WaitStage("T-2", "plan_review")
	k.Say("bob", "/ops approve T-2")
	k.WaitStage("T-2", "deploy_approval")
	in.slash("U0DAVE", "C0OPS", "approve T-2")
	k.WaitStage("T-2", "verify")
	k.Say("carol", "/ops approve T-2 verified")
	code, out := wait()
	if code != bot.GateDone || !strings.Contains(out, "T-2 golive") || !strings.Contains(out, "https://opsbot.example.com/api/v1/tickets/T-2") ||
		!strings.Contains(out, "T-2 已完成 done: approved by bob, dave, carol") {
		t.Fatalf("gate: exit %d\n%s", code, out)
	}
	// The same CI job run again finds its ticket.
	if code, out := runGate("--flow", "golive", "service=orders", "version=v2.0.0", "rollback_app=redeploy v1.9.9", "hotfix=true")(); code != 0 || !strings.HasPrefix(out, "T-2 ") {
		t.Fatalf("the job retried: %d %s", code, out)
	}

	// Rejected: exit 1 with who and why.
	t.Setenv("CI_PIPELINE_ID", "78")
	wait = runGate("--flow", "golive", "--wait", "service=orders", "version=v2.0.1", "rollback_app=redeploy v2.0.0")
	k.WaitStage("T-3", "plan_review")
	k.Say("bob", "/ops reject T-3 not during the sale")
	if code, out := wait(); code != bot.GateStopped || !strings.Contains(out, "T-3 已驳回 rejected by bob: not during the sale") {
		t.Fatalf("gate on reject: exit %d\n%s", code, out)
	}

	// Reading: get, list with filters and a cursor, wait.
	if st, b, _ := api.call("GET", "/api/v1/tickets/T-2", nil); st != 200 || b["stage"] != "done" || len(b["approvals"].([]any)) != 3 {
		t.Fatalf("get: %d %v", st, b)
	}
	st, page, _ := api.call("GET", "/api/v1/tickets?flow=golive&limit=2", nil)
	if ts := page["tickets"].([]any); st != 200 || len(ts) != 2 || ts[0].(map[string]any)["id"] != "T-3" || page["next_cursor"] != "T-2" {
		t.Fatalf("list: %d %v", st, page)
	}
	if _, page, _ = api.call("GET", "/api/v1/tickets?flow=golive&limit=2&cursor=T-2", nil); len(page["tickets"].([]any)) != 1 || page["next_cursor"] != nil {
		t.Fatalf("list, page 2: %v", page)
	}
	if _, page, _ = api.call("GET", "/api/v1/tickets?open=true", nil); len(page["tickets"].([]any)) != 1 {
		t.Fatalf("list open: %v", page)
	}
	if st, b, _ := api.call("GET", "/api/v1/tickets/T-1/wait?until=deploy_approval&timeout=300ms", nil); st != 200 || b["reached"] != false {
		t.Fatalf("a wait that times out: %d %v", st, b)
	}

	// Where a stage allows tokens, the service user holding its role
	// approves through the API.
	mustContain(t, bottest.Title(k.Say("root", "/ops role grant ci svc-ci")), "granted ci")
	k.Say("alice", "/ops new smoke service=payments")
	tokApprove := apiClient{t, base, strings.TrimSpace(approver)}
	if st, b, _ := tokApprove.call("POST", "/api/v1/tickets/T-4/approve", map[string]string{"comment": "smoke tests green"}); st != 200 || b["stage"] != "done" {
		t.Fatalf("a token approving where the stage allows it: %d %v", st, b)
	}
	// A gate that times out: exit 3, the ticket stays open.
	t.Setenv("CI_PIPELINE_ID", "79")
	if code, out := runGate("--flow", "golive", "--wait", "--timeout", "1s", "service=orders", "version=v2.0.2", "rollback_app=x")(); code != bot.GateTimeout ||
		!strings.Contains(out, "T-5 is still at 方案审批 Plan review after 1s") {
		t.Fatalf("gate timing out: exit %d\n%s", code, out)
	}

	// Refusals: no scope, revoked, expired, none; each audited.
	if st, b, _ := (apiClient{t, base, strings.TrimSpace(ro)}).call("POST", "/api/v1/tickets", body); st != 403 || errCode(b) != "scope" {
		t.Fatalf("a token without the scope: %d %v", st, b)
	}
	if code, out, e := cli("token", "revoke", "ci"); code != 0 || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %d %s %s", code, out, e)
	}
	if st, b, _ := api.call("GET", "/api/v1/tickets/T-1", nil); st != 401 || errCode(b) != "token" || !strings.Contains(b["error"].(map[string]any)["message"].(string), "revoked") {
		t.Fatalf("a revoked token: %d %v", st, b)
	}
	if st, _, _ := (apiClient{t, base, strings.TrimSpace(short)}).call("GET", "/api/v1/tickets/T-1", nil); st != 200 {
		t.Fatalf("an unexpired token: %d", st)
	}
	k.Clock.Advance(2 * time.Hour)
	if st, b, _ := (apiClient{t, base, strings.TrimSpace(short)}).call("GET", "/api/v1/tickets/T-1", nil); st != 401 || !strings.Contains(b["error"].(map[string]any)["message"].(string), "expired") {
		t.Fatalf("an expired token: %d %v", st, b)
	}
	if st, _, h := (apiClient{t, base, ""}).call("GET", "/api/v1/tickets/T-1", nil); st != 401 || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d", st)
	}
	_, list, _ := cli("token", "list")
	for _, want := range []string{"ci ", "revoked", "short", "expired", "reader"} {
		if !strings.Contains(list, want) {
			t.Fatalf("token list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "opsbot_") {
		t.Fatal("token list shows a secret")
	}
	k.Bot.FlushAudit(context.Background())
	entries, _, err := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{}, 0, 500)
	if err != nil {
		t.Fatal(err)
	}
	var log []string
	for _, e := range entries {
		log = append(log, e.Platform+" | "+e.Action+" | "+e.Args+" | "+e.Result)
	}
	all := strings.Join(log, "\n")
	for _, want := range []string{
		"api | api POST /api/v1/tickets | via ci: POST /api/v1/tickets | ok",
		"ok: the ticket this Idempotency-Key created",
		"api | api GET /api/v1/tickets/{id}/wait | via ci: GET /api/v1/tickets/T-2/wait",
		"revoked token ci", "expired token short", "token reader lacks tickets:create",
		"admin | token create | name=ci as=svc-ci", "admin | token revoke | name=ci",
	} {
		if !strings.Contains(all, want) {
			t.Fatalf("the audit lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, ci) {
		t.Fatal("a token secret in the audit")
	}
}

// Each service user is rate limited like a person: a 429 with
// Retry-After and the limit, in the API's error form.
func TestAPIRateLimited(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML("api: {listen: \"127.0.0.1:0\"}\nrate_limit: {per_minute: 1, burst: 1}"))
	tok, err := k.Bot.CreateAPIToken("ci", "svc-ci", "tickets:read")
	if err != nil {
		t.Fatal(err)
	}
	api := apiClient{t, "http://" + k.Bot.APIAddr(), tok}
	var st int
	var body map[string]any
	var hdr http.Header
	for range 5 {
		if st, body, hdr = api.call("GET", "/api/v1/tickets", nil); st != 200 {
			break
		}
	}
	if st != 429 || errCode(body) != "rate_limited" || hdr.Get("Retry-After") == "" {
		t.Fatalf("past the limit: %d %v %v", st, body, hdr)
	}
}
