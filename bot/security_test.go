package bot_test

// The security suite of issue 12 ("trust at the edges"). Each test names
// the finding it reproduces; each failed against the build before the fix.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
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

// request sends one raw request to the kit's loopback listener.
type request struct {
	method, path, host, origin, ctype, body, token string
}

func (r request) send(t *testing.T, base string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(r.method, base+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.host != "" {
		req.Host = r.host
	}
	if r.origin != "" {
		req.Header.Set("Origin", r.origin)
	}
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// auditResults returns "action args → result" of every audit entry.
func auditResults(t *testing.T, k *bottest.Kit) []string {
	t.Helper()
	k.Bot.FlushAudit(context.Background())
	entries, _, err := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{}, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Action+" "+e.Args+" → "+e.Result)
	}
	return out
}

func countContaining(lines []string, parts ...string) int {
	n := 0
	for _, l := range lines {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}

const storeImport = `{"document":{"stores":[{"id":"S-1","name":"store 1","market":"sh","province":"SH","do":"do-1","ownership":"direct","nodes":1,"open":true,"env":"uat","cluster":"uat-b"}]}}`

func seedInventory(t *testing.T, k *bottest.Kit) {
	t.Helper()
	if err := k.Bot.Inventory().Put(context.Background(), []state.Cluster{
		{Name: "uat-a", Env: "uat", Location: "Putuo", Size: "3+3", Capacity: 10},
		{Name: "uat-b", Env: "uat", Location: "Putuo", Size: "3+3", Capacity: 10},
	}, []state.StoreInfo{{ID: "S-1", Name: "store 1", Market: "sh", Province: "SH", DO: "do-1", Ownership: "direct", Nodes: 1, Open: true, Env: "uat", Cluster: "uat-a"}}); err != nil {
		t.Fatal(err)
	}
}

// Finding 1: /admin/backup and /admin/inventory/import answered without
// any credential; backup wrote wherever it was told.
func TestFinding01AdminEndpointsNeedTheToken(t *testing.T) {
	k := bottest.New(t)
	seedInventory(t, k)
	backups := k.Cfg.Resolve(k.Cfg.State.BackupDir)
	for _, c := range []struct {
		name  string
		r     request
		code  int
		class string
	}{
		{"backup without a token", request{method: "POST", path: "/admin/backup", ctype: "application/json", body: `{"name":"a.db"}`}, 401, "token"},
		{"backup with a wrong token", request{method: "POST", path: "/admin/backup", ctype: "application/json", body: `{"name":"a.db"}`, token: "guess-guess-guess-guess"}, 401, "token"},
		{"stream without a token", request{method: "GET", path: "/admin/backup"}, 401, "token"},
		{"import without a token", request{method: "POST", path: "/admin/inventory/import", ctype: "application/json", body: storeImport}, 401, "token"},
		{"export without a token", request{method: "GET", path: "/admin/inventory/export"}, 401, "token"},
	} {
		if code, body := c.r.send(t, k.URL); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	if s, _ := k.Bot.Inventory().Store("S-1"); s.Cluster != "uat-a" {
		t.Fatalf("an unauthenticated import moved S-1 to %s", s.Cluster)
	}
	if entries, _ := os.ReadDir(backups); len(entries) != 0 {
		t.Fatalf("an unauthenticated backup wrote %v", entries)
	}
	// With the token, a backup goes only into the backup directory, by a
	// plain name.
	tok := bottest.AdminToken
	for _, name := range []string{"../escape.db", "/tmp/abs.db", "..", ".hidden", "a/b.db", strings.Repeat("x", 200)} {
		body, _ := json.Marshal(map[string]string{"name": name})
		if code, resp := (request{method: "POST", path: "/admin/backup", ctype: "application/json", body: string(body), token: tok}).send(t, k.URL); code != 400 {
			t.Errorf("backup named %q: %d %s, want 400", name, code, resp)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(backups), "escape.db")); err == nil {
		t.Fatal("a backup escaped the backup directory")
	}
	code, resp := request{method: "POST", path: "/admin/backup", ctype: "application/json", body: `{"name":"good.db"}`, token: tok}.send(t, k.URL)
	if code != 200 {
		t.Fatalf("backup with the token: %d %s", code, resp)
	}
	if sum, err := state.Verify(filepath.Join(backups, "good.db")); err != nil || sum.Schema != state.SchemaVersion() {
		t.Fatalf("the backup does not verify: %+v %v", sum, err)
	}
	if code, _ := (request{method: "POST", path: "/admin/backup", ctype: "application/json", body: `{"name":"good.db"}`, token: tok}).send(t, k.URL); code != 409 {
		t.Fatalf("a second backup over good.db: %d, want 409", code)
	}
	// The import with the token works; the refusals are in the audit log.
	if code, resp := (request{method: "POST", path: "/admin/inventory/import", ctype: "application/json", body: storeImport, token: tok}).send(t, k.URL); code != 200 {
		t.Fatalf("import with the token: %d %s", code, resp)
	}
	if s, _ := k.Bot.Inventory().Store("S-1"); s.Cluster != "uat-b" {
		t.Fatalf("the authenticated import did not apply: %+v", s)
	}
	audit := strings.Join(auditResults(t, k), "\n")
	for _, want := range []string{"request refused POST /admin/backup from 127.0.0.1 → refused: token", "request refused POST /admin/inventory/import from 127.0.0.1 → refused: token",
		"backup good.db → ok", "inventory import clusters=0 stores=1"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %q:\n%s", want, audit)
		}
	}
}

// Finding 2: the local chat API took cross-site and DNS-rebinding
// requests. Every state-changing request it accepts is sent from a
// "foreign page" (another Origin, text/plain) and with a rebinding Host:
// all refused, nothing changed, each refusal audited once.
func TestFinding02ForeignPagesAndRebindingAreRefused(t *testing.T) {
	k := bottest.New(t)
	seedInventory(t, k)
	port := k.URL[strings.LastIndex(k.URL, ":")+1:]
	grant := `{"user":"root","text":"/ops role grant admin alice"}`
	targets := []struct{ path, body string }{
		{"/api/command", grant},
		{"/api/click", grant},
		{"/admin/backup", `{"name":"stolen.db"}`},
		{"/admin/inventory/import", storeImport},
	}
	attacks := []struct {
		name, class string
		r           request
	}{
		{"foreign page, text/plain", "origin", request{origin: "http://evil.example", ctype: "text/plain"}},
		{"foreign page, JSON", "origin", request{origin: "https://evil.example", ctype: "application/json"}},
		{"rebinding Host", "host", request{host: "attacker.example:" + port, origin: "http://attacker.example:" + port, ctype: "application/json"}},
		{"no Origin, text/plain", "content_type", request{ctype: "text/plain"}},
	}
	for _, tg := range targets {
		for _, a := range attacks {
			r := a.r
			r.method, r.path, r.body = "POST", tg.path, tg.body
			if strings.HasPrefix(tg.path, "/admin/") {
				r.token = bottest.AdminToken // a page cannot know it; the guard must hold anyway
			}
			if code, body := r.send(t, k.URL); code < 400 {
				t.Errorf("%s to %s: %d %s, want a refusal", a.name, tg.path, code, body)
			}
		}
	}
	// Nothing changed.
	if k.Bot.Engine().Directory().HasRole("alice", "admin") {
		t.Fatal("a foreign page granted alice admin")
	}
	if entries, _ := os.ReadDir(k.Cfg.Resolve(k.Cfg.State.BackupDir)); len(entries) != 0 {
		t.Fatalf("a foreign page wrote a backup: %v", entries)
	}
	if s, _ := k.Bot.Inventory().Store("S-1"); s.Cluster != "uat-a" {
		t.Fatalf("a foreign page moved S-1 to %s", s.Cluster)
	}
	// Each refusal is in the audit log exactly once.
	audit := auditResults(t, k)
	for _, tg := range targets {
		for _, a := range attacks {
			if n := countContaining(audit, "request refused POST "+tg.path+" from", "refused: "+a.class+":"); n != 1 {
				// Two attacks share a class (origin); they come from one source,
				// so the second is counted, not written again.
				if a.class == "origin" && n == 2 {
					continue
				}
				t.Errorf("%s to %s: %d audit entries with class %s, want 1", a.name, tg.path, n, a.class)
			}
		}
	}
	if got := countContaining(audit, "requests refused", "1 more like this"); got != len(targets) {
		t.Errorf("the second foreign-origin request per endpoint is counted: %d count entries, want %d\n%s", got, len(targets), strings.Join(audit, "\n"))
	}
	// The page itself (same origin, JSON) still works.
	r := request{method: "POST", path: "/api/command", origin: "http://127.0.0.1:" + port, ctype: "application/json", body: `{"user":"alice","text":"/ops help"}`}
	if code, body := r.send(t, k.URL); code != 200 {
		t.Fatalf("the page's own request: %d %s", code, body)
	}
}

// Finding 2, second half: the local chat stayed on with Slack or WeCom,
// so anyone on the host could act as any Slack user. It is off unless
// local.enabled is set, and config check warns about that.
func TestFinding02LocalChatIsOffWhenAPlatformIsOn(t *testing.T) {
	k, _ := slackKit(t, "http", "local: {}")
	code, body := request{method: "POST", path: "/api/command", ctype: "application/json", body: `{"user":"bob","text":"/ops list all"}`}.send(t, k.URL)
	if code != 404 || !strings.Contains(body, "local chat is off") {
		t.Fatalf("local chat with Slack on: %d %s", code, body)
	}
	if k.Bot.Local() != nil {
		t.Fatal("the local transport still receives notifications")
	}
	// config check warns when it is turned on explicitly.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "opsbot.yaml")
	os.WriteFile(cfg, []byte(bottest.ConfigYAML(dir, "slack: {mode: http}\nlocal: {enabled: true}")), 0o644)
	bottest.WriteScripts(t, dir)
	var out, errb bytes.Buffer
	bot.Main([]string{"config", "check", cfg}, nil, &out, &errb)
	if !strings.Contains(errb.String(), "⚠ local.enabled is true while a chat platform is enabled") {
		t.Fatalf("config check does not warn:\n%s", errb.String())
	}
}

// Finding 7: a NUL in a user name broke index scans; alice's "list mine"
// came back empty.
func TestFinding07ControlCharactersInNames(t *testing.T) {
	k := bottest.New(t)
	k.Say("alice", goliveNew)
	for _, name := range []string{"alice\u0000zz", "alice\nroot", "bob\u202e", "\u0000"} {
		body, _ := json.Marshal(map[string]string{"user": name, "text": goliveNew})
		code, resp := request{method: "POST", path: "/api/command", ctype: "application/json", body: string(body)}.send(t, k.URL)
		if code != 400 || !strings.Contains(resp, "control character") && !strings.Contains(resp, "is empty") {
			t.Errorf("user %q: %d %s, want 400 naming the control character", name, code, resp)
		}
	}
	// A full-width name is the same person.
	if got := bottest.Title(k.Say("ａｌｉｃｅ", "/ops list mine")); !strings.Contains(k.Say("ａｌｉｃｅ", "/ops list mine")[0].Body, "T-1") {
		t.Fatalf("full-width alice does not see her ticket: %s", got)
	}
	if b := k.Say("alice", "/ops list mine")[0].Body; !strings.Contains(b, "T-1") {
		t.Fatalf("alice's list is empty: %s", b)
	}
	if b := k.Say("root", "/ops audit alice")[0].Body; !strings.Contains(b, "/ops new golive") {
		t.Fatalf("alice's audit is empty: %s", b)
	}
	// Role commands refuse such names too, as a user error.
	if got := bottest.Title(k.Say("root", "/ops role grant admin alice\u0000zz")); !strings.Contains(got, "alice") || strings.Contains(got, "internal") {
		t.Fatalf("grant to a NUL name: %s", got)
	}
}

// Finding 9: an import buffered up to 256 MB per request with no bound on
// how many ran at once.
func TestFinding09ImportIsBoundedAndOneAtATime(t *testing.T) {
	k := bottest.New(t)
	seedInventory(t, k)
	post := func(body io.Reader) (int, string) {
		req, _ := http.NewRequest("POST", k.URL+"/admin/inventory/import", body)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+bottest.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// 40 MiB of one JSON string: refused at the bound, not buffered.
	big := io.MultiReader(strings.NewReader(`{"document":{"stores":[{"id":"`), io.LimitReader(zeros{}, 40<<20), strings.NewReader(`"}]}}`))
	if code, body := post(big); code != 413 || !strings.Contains(body, "at most 32 MiB") {
		t.Fatalf("40 MiB import: %d %s", code, endpointClip(body))
	}
	// A second import while one is streaming in is turned away.
	pr, pw := io.Pipe()
	first := make(chan int)
	go func() { code, _ := post(pr); first <- code }()
	pw.Write([]byte(`{"document":{"stores":[`))
	var second int
	waitFor(t, "the second import to be refused", func() bool {
		second, _ = post(strings.NewReader(storeImport))
		return second == 429
	})
	pw.Write([]byte(`]}}`))
	pw.Close()
	if code := <-first; code != 200 {
		t.Fatalf("the first import: %d", code)
	}
	if code, body := post(strings.NewReader(storeImport)); code != 200 {
		t.Fatalf("an import after the first finished: %d %s", code, body)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

func endpointClip(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}

// Finding 11: show and list all gave anyone any ticket's history,
// comments and script output.
func TestFinding11WhoMayReadATicket(t *testing.T) {
	k := bottest.New(t)
	k.Say("audra", "/ops help")
	k.Say("root", "/ops role grant auditor audra")
	k.Say("alice", goliveNew)
	k.Say("bob", "/ops approve T-1 the plan mentions db password rotation")
	// ivan holds only infra, which golive does not name.
	if got := bottest.Title(k.Say("ivan", "/ops show T-1")); !strings.Contains(got, "you may not read T-1") {
		t.Fatalf("ivan reads T-1: %s", got)
	}
	if b := k.Say("ivan", "/ops list all")[0].Body; strings.Contains(b, "T-1") {
		t.Fatalf("ivan's list shows T-1: %s", b)
	}
	if got := bottest.Title(k.Say("ivan", "/ops audit T-1")); !strings.Contains(got, "tickets you may read") {
		t.Fatalf("ivan reads T-1's audit: %s", got)
	}
	for _, who := range []string{"alice", "bob", "carol", "root", "audra"} {
		msgs := k.Say(who, "/ops show T-1")
		if len(msgs) < 2 || !strings.Contains(msgs[1].Body, "bob approve") {
			t.Errorf("%s cannot read T-1: %s", who, bottest.Title(msgs))
		}
	}
}

var _ = fmt.Sprint
var _ = net.Dial
var _ = sync.Mutex{}
var _ = time.Second
