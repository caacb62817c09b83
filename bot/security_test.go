package bot_test

// The security suite of issue 12 ("trust at the edges"). Each test names
// the finding it reproduces; each failed against the build before the fix.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"opsbot/bot/wecom"
	"opsbot/state"
	"opsbot/templates"
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
	entries, _, err := k.Bot.Store().AuditLog(context.Background(), state.AuditQuery{}, 0, 100000)
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
		if len(msgs) < 2 || !strings.Contains(msgs[1].Body, "bob 同意 Approve") {
			t.Errorf("%s cannot read T-1: %s", who, bottest.Title(msgs))
		}
	}
}

var _ = fmt.Sprint
var _ = net.Dial
var _ = sync.Mutex{}
var _ = time.Second

// Finding 3: WeCom callbacks had no freshness check; one stamped 1970 was
// accepted and a captured body replayed 25 h later (past the 24 h
// de-duplication) opened a second ticket.
func TestFinding03WeComFreshnessAndReplay(t *testing.T) {
	k, fake, endpoint := wecomKit(t)
	open := func(at time.Time, msgID string) (string, []byte) {
		u, body, err := fake.Capture(endpoint, wecom.Callback{FromUserName: "wangxiaoli", MsgType: "text", MsgID: msgID,
			Content: `/ops new golive service=payments version=v1 rollback_app=x`}, at)
		if err != nil {
			t.Fatal(err)
		}
		return u, body
	}
	post := func(u string, body []byte) int {
		resp, err := http.Post(u, "text/xml", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(open(time.Unix(0, 0), "m-1970")); code != 401 {
		t.Fatalf("a callback stamped 1970: %d, want 401", code)
	}
	if code := post(open(time.Now().Add(-25*time.Hour), "m-old")); code != 401 {
		t.Fatalf("a callback sealed 25 h ago: %d, want 401", code)
	}
	if code := post(open(time.Now().Add(10*time.Minute), "m-future")); code != 401 {
		t.Fatalf("a callback from the future: %d, want 401", code)
	}
	u, body := open(time.Now(), "m-now")
	if code := post(u, body); code != 200 {
		t.Fatalf("a fresh callback: %d", code)
	}
	k.WaitStage("T-1", "plan_review")
	// The same captured delivery again, with a new message id inside would
	// need the keys; the identical bytes are refused by signature+nonce.
	if code := post(u, body); code != 200 {
		t.Fatalf("a replay: %d, want 200 (so a genuine retry stops)", code)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := k.Bot.Store().Get(context.Background(), "T-2"); err == nil {
		t.Fatal("a replayed callback opened a second ticket")
	}
	audit := auditResults(t, k)
	for _, want := range [][]string{{"POST /wecom/callback", "refused: freshness"}, {"POST /wecom/callback", "refused: replay"}} {
		if countContaining(audit, want...) == 0 {
			t.Errorf("audit lacks %q:\n%s", want, strings.Join(audit, "\n"))
		}
	}
}

// Finding 6 through the bot: a damaged state stops the start with a
// message naming the file and the restore command; nothing is written.
func TestFinding06BotRefusesADamagedState(t *testing.T) {
	dir := t.TempDir()
	k := bottest.Start(t, dir, bottest.NewClock())
	k.Say("alice", goliveNew)
	backup := filepath.Join(k.Cfg.Resolve(k.Cfg.State.BackupDir), "nightly.db")
	if code, body := (request{method: "POST", path: "/admin/backup", ctype: "application/json", body: `{"name":"nightly.db"}`, token: bottest.AdminToken}).send(t, k.URL); code != 200 {
		t.Fatalf("backup: %d %s", code, body)
	}
	k.Bot.Stop()
	path := k.Cfg.Resolve(k.Cfg.State.Path)
	os.Truncate(path, 0)
	_, err := bot.New(context.Background(), bot.Options{Config: k.Cfg})
	if err == nil {
		t.Fatal("the bot started on an empty state file")
	}
	for _, want := range []string{path, "is damaged", "the file is empty", "opsbot restore " + backup} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal lacks %q:\n%v", want, err)
		}
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatal("the damaged file was written to")
	}
	// opsbot restore brings back the ticket; the bot starts again.
	cfgPath := filepath.Join(dir, "opsbot.yaml")
	os.WriteFile(cfgPath, []byte(bottest.ConfigYAML(dir, "")), 0o644)
	var out, errb bytes.Buffer
	if code := bot.Main([]string{"restore", "-config", cfgPath, backup}, nil, &out, &errb); code != 0 {
		t.Fatalf("restore: %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "1 tickets") || !strings.Contains(out.String(), "kept as") {
		t.Fatalf("restore says: %s", out.String())
	}
	k2 := bottest.Start(t, dir, bottest.NewClock())
	if got := k2.Ticket("T-1"); got.Requester != "alice" {
		t.Fatalf("restored T-1: %+v", got)
	}
}

// Finding 8: no read or idle timeouts (a trickled body and an idle
// connection stayed open for good); shutdown waited on long polls.
func TestFinding08TimeoutsAndShutdown(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML("http: {read_timeout: 1s, idle_timeout: 1s, write_timeout: 30s}"))
	addr := strings.TrimPrefix(k.URL, "http://")
	closedWithin := func(conn net.Conn, d time.Duration) bool {
		conn.SetReadDeadline(time.Now().Add(d))
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				var ne net.Error
				return !(errors.As(err, &ne) && ne.Timeout())
			}
		}
	}
	// A body trickled a byte at a time is cut off by the read timeout.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/command HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	go func() {
		for i := 0; i < 20; i++ {
			time.Sleep(300 * time.Millisecond)
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	if !closedWithin(conn, 5*time.Second) {
		t.Fatal("a trickling body kept its connection past the read timeout")
	}
	// An idle keep-alive connection is closed.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprintf(idle, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if !closedWithin(idle, 5*time.Second) {
		t.Fatal("an idle connection stayed open")
	}
	// Shutdown ends a long poll instead of waiting for it.
	polled := make(chan error, 1)
	go func() {
		resp, err := http.Get(k.URL + "/api/inbox?user=bob&after=0&wait=25s")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		polled <- err
	}()
	time.Sleep(200 * time.Millisecond)
	stopped := make(chan struct{})
	go func() { k.Bot.Stop(); close(stopped) }()
	select {
	case <-polled:
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll outlived the shutdown")
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop waited for the long poll")
	}
}

// Finding 4: refused callbacks wrote the XML decoder's whole error (a
// 900 KB element name) to the audit log and the log, one entry per
// request; 80 requests grew state and log by 72 MB. Here 10,000 unsigned
// or badly signed Slack and WeCom requests carry 600-900 KB of junk in
// headers, element names and bodies; state and log grow by a bounded
// amount (the figures are in docs/benchmarks.md).
func TestFinding04RefusalFloodIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 10,000 large requests")
	}
	wfake := newWeComFake(t)
	k, _ := slackKit(t, "http", wecomYAML(wfake))
	slackURL := "http://" + k.Bot.Slack().Addr()
	wecomURL := "http://" + k.Bot.WeCom().Addr() + "/wecom/callback"
	k.Bot.FlushAudit(context.Background())
	used0, file0, log0 := k.Bot.Store().Used(), fileSizeOf(t, k.Cfg.Resolve(k.Cfg.State.Path)), len(k.LogText())
	audit0 := len(auditResults(t, k))

	const n = 10000
	junk := bytes.Repeat([]byte("J"), 900<<10)
	size := func(i int) int { return 600<<10 + (i*7919)%(300<<10) } // 600-900 KB
	client := &http.Client{Timeout: 30 * time.Second}
	send := func(i int) int {
		var req *http.Request
		ts := fmt.Sprint(time.Now().Unix())
		switch i % 5 {
		case 0: // Slack, unsigned, junk body
			req, _ = http.NewRequest("POST", slackURL+"/slack/commands", bytes.NewReader(junk[:size(i)]))
		case 1: // Slack, a forged signature over a junk body
			req, _ = http.NewRequest("POST", slackURL+"/slack/interactions", bytes.NewReader(junk[:size(i)]))
			req.Header.Set("X-Slack-Request-Timestamp", ts)
			req.Header.Set("X-Slack-Signature", "v0="+strings.Repeat("0", 64))
		case 2: // Slack, junk in a header
			req, _ = http.NewRequest("POST", slackURL+"/slack/events", strings.NewReader("{}"))
			req.Header.Set("X-Junk", string(junk[:size(i)]))
		case 3: // WeCom, a junk element name in a junk body
			body := append(append([]byte("<xml><"), junk[:size(i)]...), []byte(">x</y></xml>")...)
			req, _ = http.NewRequest("POST", wecomURL+"?msg_signature=forged&nonce=1&timestamp="+ts, bytes.NewReader(body))
		case 4: // WeCom, a 60 KB element name (under the body limit): the decoder's error names it
			body := append(append([]byte("<xml><"), junk[:60<<10]...), []byte(">x</y></xml>")...)
			req, _ = http.NewRequest("POST", wecomURL+"?msg_signature=forged&nonce=1&timestamp="+ts, bytes.NewReader(body))
		}
		resp, err := client.Do(req)
		if err != nil {
			return -1 // the server closed the connection on an oversized request
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	codes := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				c := send(i)
				mu.Lock()
				codes[c]++
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if codes[200] != 0 || codes[202] != 0 {
		t.Fatalf("junk was accepted: %v", codes)
	}
	if _, err := k.Bot.Store().Get(context.Background(), "T-1"); err == nil {
		t.Fatal("junk opened a ticket")
	}
	k.Bot.FlushAudit(context.Background())
	audit := auditResults(t, k)
	used, file, logN := k.Bot.Store().Used()-used0, fileSizeOf(t, k.Cfg.Resolve(k.Cfg.State.Path))-file0, len(k.LogText())-log0
	t.Logf("refusal flood: %d requests (status counts %v): %d audit entries, state pages +%d bytes (%.2f B/request), file +%d bytes, log +%d bytes (%.2f B/request)",
		n, codes, len(audit)-audit0, used, float64(used)/n, file, logN, float64(logN)/n)
	if len(audit)-audit0 > 40 {
		t.Errorf("%d audit entries for one source's refusals; want them counted", len(audit)-audit0)
	}
	for _, l := range audit {
		if len(l) > 600 {
			t.Errorf("an audit entry of %d bytes: %.200s…", len(l), l)
		}
	}
	if float64(used)/n > 16 || float64(logN)/n > 16 {
		t.Errorf("state +%d, log +%d bytes for %d refused requests", used, logN, n)
	}
	if countContaining(audit, "POST /wecom/callback", "more like this") == 0 {
		t.Errorf("the counts of repeated refusals are missing:\n%s", strings.Join(audit, "\n"))
	}
}

func fileSizeOf(t *testing.T, path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// Finding 4, retention: the audit log grew for ever.
func TestFinding04AuditRetention(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML("audit: {retention: 30d}"))
	ctx := context.Background()
	for i := 0; i < 1200; i++ {
		k.Say("alice", "/ops list mine")
	}
	k.Bot.FlushAudit(ctx)
	before := len(auditResults(t, k))
	k.Clock.Advance(60 * 24 * time.Hour)
	k.Say("alice", "/ops help")
	n, err := k.Bot.PruneAudit(ctx)
	if err != nil || n != before {
		t.Fatalf("pruned %d (%v), want all %d entries older than 30 days", n, err, before)
	}
	audit := auditResults(t, k)
	if countContaining(audit, "list") != 0 || countContaining(audit, "command help") != 1 {
		t.Fatalf("after retention:\n%s", strings.Join(audit, "\n"))
	}
}

// leaks are secrets in every format the redactor must catch, as people
// paste them; the part after the colon is what must never come out.
var leaks = []string{
	`{"api_key": "jsonKeyValue7Qz"}:jsonKeyValue7Qz`,
	`password Hunter2Word9:Hunter2Word9`,
	`mysql --db-password FlagPass88x -h db1:FlagPass88x`,
	`aws secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY:wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`,
	`github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ012345678:github_pat_11ABCDEFG0123456789_abcdef`,
	`redis://:RedisUrlPass5@10.0.0.1:6379:RedisUrlPass5`,
	"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUPEMBODY\n-----END OPENSSH PRIVATE KEY-----:b3BlbnNzaC1rZXktdjEAAAAABG5vbmUPEMBODY",
	"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGPGPBODYxyz\n-----END PGP PRIVATE KEY BLOCK-----:lQOYBGPGPBODYxyz",
}

func leakParts() (texts, secrets []string) {
	for _, l := range leaks {
		i := strings.LastIndex(l, ":")
		texts, secrets = append(texts, l[:i]), append(secrets, l[i+1:])
	}
	// A configured secret, printed by a script where the output is cut.
	secrets = append(secrets, configuredSecret[:12])
	return texts, secrets
}

const configuredSecret = "ConfiguredDeployKey-3f9a7c"

// Finding 5: secrets typed into commands, fields and comments, and
// printed by scripts, reached the audit, the state file, backups and
// chat. Every format above, typed into a field, a comment and a reject
// reason, sent through Slack (recorded before the ack) and printed by a
// script (one straddling the output cut): absent from replies, audit, the
// log, the raw state file, a backup and the inbox.
func TestFinding05SecretsNeverAtRestOrShown(t *testing.T) {
	t.Setenv("OPSBOT_TEST_DEPLOY_KEY", configuredSecret)
	texts, secrets := leakParts()
	k, fake := slackKit(t, "http", `
secrets_env: [OPSBOT_TEST_DEPLOY_KEY]
flows:
  - name: leaky
    fields: [{name: note, required: true}]
    stages:
      - {name: approval, kind: approval, roles: [ops]}
      - {name: run, kind: action, executor: script, params: {command: leak.sh}}
`)
	var script strings.Builder
	// The configured secret straddles the 4000-byte output limit.
	script.WriteString("#!/bin/sh\nprintf '%03990d'\necho \" $OPSBOT_TEST_DEPLOY_KEY tail\"\n")
	for _, tx := range texts {
		script.WriteString("cat <<'EOF'\n" + tx + "\nEOF\n")
	}
	os.WriteFile(filepath.Join(k.Dir, "scripts", "leak.sh"), []byte(script.String()), 0o755)

	var replies []string
	say := func(user, text string) {
		for _, m := range k.Say(user, text) {
			b, _ := json.Marshal(m)
			replies = append(replies, string(b))
		}
	}
	for i, tx := range texts {
		q, _ := json.Marshal(tx)
		say("alice", fmt.Sprintf("/ops new leaky note=%s", q))
		id := fmt.Sprintf("T-%d", i+1)
		say("dave", "/ops approve "+id+" "+strings.ReplaceAll(tx, "\n", " "))
		k.WaitStage(id, "done")
	}
	say("alice", "/ops new leaky note=x")
	say("dave", fmt.Sprintf("/ops reject T-%d %s", len(texts)+1, strings.ReplaceAll(texts[1], "\n", " ")))
	// Through Slack: the slash command is recorded before its ack.
	in := inbound{t: t, k: k, fake: fake, mode: "http"}
	for _, tx := range texts[:3] {
		in.slash("U0ALICE", "C0OPS", "new leaky note=“"+tx+"”")
	}
	waitFor(t, "the Slack tickets", func() bool {
		_, err := k.Bot.Store().Get(context.Background(), fmt.Sprintf("T-%d", len(texts)+4))
		return err == nil
	})
	for i := range texts {
		say("alice", fmt.Sprintf("/ops show T-%d", i+1))
	}
	k.Deliver()
	code, body := request{method: "POST", path: "/admin/backup", ctype: "application/json", body: `{"name":"leak-check.db"}`, token: bottest.AdminToken}.send(t, k.URL)
	if code != 200 {
		t.Fatalf("backup: %d %s", code, body)
	}
	var inbox []string
	for _, u := range []string{"alice", "dave", "bob"} {
		for _, e := range k.Inbox(u) {
			b, _ := json.Marshal(e)
			inbox = append(inbox, string(b))
		}
	}
	var slackSeen []string
	for _, c := range fake.Calls("") {
		b, _ := json.Marshal(c)
		slackSeen = append(slackSeen, string(b))
	}
	for _, r := range fake.Responses() {
		b, _ := json.Marshal(r)
		slackSeen = append(slackSeen, string(b))
	}
	k.Bot.FlushAudit(context.Background())
	raw, _ := os.ReadFile(k.Cfg.Resolve(k.Cfg.State.Path))
	bak, _ := os.ReadFile(filepath.Join(k.Cfg.Resolve(k.Cfg.State.BackupDir), "leak-check.db"))
	where := map[string]string{
		"replies":        strings.Join(replies, "\n"),
		"audit":          strings.Join(auditResults(t, k), "\n"),
		"log":            k.LogText(),
		"state file":     string(raw),
		"backup":         string(bak),
		"inbox":          strings.Join(inbox, "\n"),
		"slack":          strings.Join(slackSeen, "\n"),
		"ticket outputs": ticketsText(t, k, len(texts)+4),
	}
	for name, text := range where {
		for _, s := range secrets {
			if strings.Contains(text, s) || strings.Contains(text, jsonEscaped(s)) {
				i := max(0, strings.Index(text, s)-200)
				t.Errorf("%s holds %q: %q", name, s, text[i:min(len(text), i+300)])
			}
		}
	}
	// The check can fail: the script's output did reach the ticket.
	if !strings.Contains(where["ticket outputs"], "[REDACTED]") || !strings.Contains(where["ticket outputs"], "0000000000") {
		t.Fatalf("the script output is not on the ticket: %.400s", where["ticket outputs"])
	}
}

func jsonEscaped(s string) string {
	b, _ := json.Marshal(s)
	return strings.Trim(string(b), `"`)
}

func ticketsText(t *testing.T, k *bottest.Kit, n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		tk, err := k.Bot.Store().Get(context.Background(), fmt.Sprintf("T-%d", i))
		if err != nil {
			continue
		}
		j, _ := json.Marshal(tk)
		b.Write(j)
		evs, _ := k.Bot.Store().Events(context.Background(), tk.ID)
		j, _ = json.Marshal(evs)
		b.Write(j)
	}
	return b.String()
}

// blockingCards is a transport whose card updates hang until the bot
// stops (a chat API that stopped answering).
type blockingCards struct{}

func (blockingCards) Platform() string { return "blocking" }
func (blockingCards) Send(ctx context.Context, user string, msg templates.Message) error {
	return nil
}
func (blockingCards) UpdateCards(ctx context.Context, ticket string, msg templates.Message) error {
	<-ctx.Done()
	return ctx.Err()
}

// A shutdown in the middle of delivering cuts the delivery short instead
// of counting every queued notification as a failed attempt (which kept a
// stopping bot churning through its whole outbox, one write per entry).
func TestShutdownLeavesTheOutboxAsItWas(t *testing.T) {
	dir := t.TempDir()
	k := bottest.Start(t, dir, bottest.NewClock(), bottest.WithTransport(blockingCards{}))
	for i := 0; i < 50; i++ {
		k.Say("alice", fmt.Sprintf("/ops new golive service=s%d version=v1 rollback_app=x", i))
	}
	// The bot's own delivery loop, woken by each new ticket, is now stuck
	// in a card update that answers only when the bot stops.
	time.Sleep(300 * time.Millisecond)
	k.Bot.Stop()
	st, err := state.Open(state.Options{Path: k.Cfg.Resolve(k.Cfg.State.Path), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pending, _ := st.Pending(context.Background(), time.Now().Add(24*time.Hour), 10000)
	if len(pending) == 0 {
		t.Fatal("no card updates were queued")
	}
	for _, n := range pending {
		if n.Attempts != 0 {
			t.Fatalf("notification %d was counted %d failed attempt(s) during the shutdown: %s", n.ID, n.Attempts, n.LastError)
		}
	}
}
