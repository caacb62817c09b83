package servers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/flows"
	"opsbot/integrations/inventory"
	"opsbot/integrations/ldap"
	"opsbot/integrations/ldap/ldaptest"
	"opsbot/integrations/puppetca"
	"opsbot/integrations/puppetca/puppetcatest"
	"opsbot/integrations/servers"
	"opsbot/state"
	"opsbot/templates"
)

func TestMain(m *testing.M) {
	code := m.Run()
	puppetcatest.StopShared()
	os.Exit(code)
}

const (
	pos1 = "pos-01.s1001.store.example.test"
	pos2 = "pos-02.s1001.store.example.test"
)

func caServer(t *testing.T) (*puppetcatest.Server, *puppetca.Client) {
	t.Helper()
	if why := puppetcatest.Available(); why != "" {
		t.Skip(why)
	}
	s, err := puppetcatest.Shared()
	if err != nil {
		t.Fatal(err)
	}
	c, err := puppetca.New(puppetca.Config{URL: s.URL, CA: s.CA, Cert: s.Cert, Key: s.Key, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// Against the real CA: a node's certificate is read (signed, with its
// SHA-256 fingerprint), cleaned (revoked and deleted), cleaning again is
// no error, and the node's new CSR under the same certname is accepted; a
// certificate the auth rules do not allow is refused clearly.
func TestCleanAgainstPuppetServer(t *testing.T) {
	s, c := caServer(t)
	ctx := context.Background()
	host := "web-01.store.example.test"
	if _, _, err := s.Request(host); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, host)
	if err != nil || st.State != "signed" || !strings.Contains(st.SHA256(), ":") {
		t.Fatalf("status: %+v %v", st, err)
	}
	before, found, err := c.Clean(ctx, host)
	if err != nil || !found || before.SHA256() != st.SHA256() {
		t.Fatalf("clean: %+v %v %v", before, found, err)
	}
	if _, err := c.Status(ctx, host); !errors.Is(err, puppetca.ErrNotFound) {
		t.Fatalf("after clean: %v", err)
	}
	if _, found, err := c.Clean(ctx, host); err != nil || found {
		t.Fatalf("clean again: %v %v", found, err)
	}
	if _, _, err := s.Request(host); err != nil {
		t.Fatalf("a new CSR from the same certname: %v", err)
	}
	if st2, err := c.Status(ctx, host); err != nil || st2.SHA256() == st.SHA256() {
		t.Fatalf("the new certificate: %+v %v", st2, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, "Bad Name"); err == nil || !strings.Contains(err.Error(), "e.g. web-01") {
		t.Fatalf("a bad certname: %v", err)
	}
	key, cert, err := s.Request("intruder")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/k.pem", key, 0o600)
	os.WriteFile(dir+"/c.pem", cert, 0o600)
	other, _ := puppetca.New(puppetca.Config{URL: s.URL, CA: s.CA, Cert: dir + "/c.pem", Key: dir + "/k.pem", ServerName: "localhost"})
	if _, err := other.Status(ctx, host); err == nil || !strings.Contains(err.Error(), "auth.conf") {
		t.Fatalf("a certificate the CA does not allow: %v", err)
	}
}

// hook records what the server-change hook receives.
type hook struct {
	mu   sync.Mutex
	reqs []servers.Request
}

// serverKit is a bot with the real CA and slapd, servers imported from a
// CSV, dave holding infra besides ivan.
func serverKit(t *testing.T) (*bottest.Kit, *puppetcatest.Server, *ldaptest.Server, *hook) {
	ca, _ := caServer(t)
	dir := ldaptest.Start(t, ldaptest.Group("web")+ldaptest.Group("db")+ldaptest.Group("cache")+ldaptest.Node(pos1, "web", "pos"))
	t.Setenv("OPSBOT_LDAP_PASSWORD", ldaptest.Password)
	h := &hook{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req servers.Request
		raw, _ := io.ReadAll(r.Body)
		json.Unmarshal(raw, &req)
		h.mu.Lock()
		h.reqs = append(h.reqs, req)
		h.mu.Unlock()
		fmt.Fprint(w, `{"ok": true}`)
	}))
	t.Cleanup(srv.Close)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf(`
puppet_ca: {url: %q, ca: %q, cert: %q, key: %q, server_name: localhost}
ldap: {url: %q, start_tls: true, ca: %q, bind_dn: %q, password_env: OPSBOT_LDAP_PASSWORD, nodes_base: "ou=nodes,%s", groups_base: "ou=groups,%s"}
servers: {apply: {url: %q}}
`, ca.URL, ca.CA, ca.Cert, ca.Key, dir.URL, dir.CA, ldaptest.BindDN, ldaptest.Suffix, ldaptest.Suffix, srv.URL)))
	doc, bad, err := inventory.ReadCSV(strings.NewReader("hostname,ip,role,env,store\n"+pos1+",10.20.3.4,pos,prod,S-1001\n"+pos2+",10.20.3.5,pos,prod,S-1001\n"), "servers.csv")
	if err != nil || len(bad) > 0 {
		t.Fatal(err, bad)
	}
	if rep, err := k.Bot.Inventory().Import(context.Background(), doc, nil, false); err != nil || rep.Servers != 2 {
		t.Fatalf("import: %+v %v", rep, err)
	}
	k.Say("root", "/ops role grant infra dave")
	return k, ca, dir, h
}

func text(msgs []templates.Message) string { return bottest.Text(msgs) }

func mustSay(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("want %q in:\n%s", want, got)
	}
}

// The three flows through the chat against the real CA and directory:
// request, approval, effect, done; the refusals people meet, in their
// words; a second ticket on a held server; rollback of a group change;
// a change in LDAP before approval asks for a fresh look.
func TestServerFlowsAgainstRealServers(t *testing.T) {
	k, ca, dir, h := serverKit(t)
	ctx := context.Background()
	if err := ca.Agent(pos1); err != nil { // the node's first agent run
		t.Fatal(err)
	}
	caClient, _ := puppetca.New(puppetca.Config{URL: ca.URL, CA: ca.CA, Cert: ca.Cert, Key: ca.Key, ServerName: "localhost"})
	before, _ := caClient.Status(ctx, pos1)

	// Puppet certificate clean.
	mustSay(t, text(k.Say("ivan", fmt.Sprintf(`/ops new puppet-cert-clean store=S-1001 hostname=%s env=prod reason="disk replaced"`, pos2))),
		"the Puppet CA has no certificate named "+pos2)
	mustSay(t, text(k.Say("ivan", `/ops new puppet-cert-clean store=S-1001 hostname=pos-09.s1001.store.example.test env=prod reason=x`)),
		"server pos-09.s1001.store.example.test is not in the inventory")
	mustSay(t, text(k.Say("ivan", fmt.Sprintf(`/ops new puppet-cert-clean store=S-2002 hostname=%s env=prod reason=x`, pos1))),
		pos1+" belongs to store S-1001, not S-2002")
	r := text(k.Say("ivan", fmt.Sprintf(`/ops new puppet-cert-clean store=S-1001 hostname=%s env=prod reason="disk replaced"`, pos1)))
	mustSay(t, r, "T-1 submitted")
	mustSay(t, r, "signed")
	mustSay(t, r, before.SHA256())
	mustSay(t, text(k.Say("ivan", fmt.Sprintf(`/ops new server-group-change store=S-1001 hostname=%s env=prod group=db`, pos1))),
		"server:"+pos1+" is locked by ticket T-1")
	mustSay(t, text(k.Say("ivan", "/ops approve T-1")), "you cannot approve or reject your own ticket T-1")
	mustSay(t, text(k.Say("dave", "/ops server show "+pos1)), "in flight: T-1")
	k.Say("dave", "/ops approve T-1")
	done := k.WaitStage("T-1", flows.StageDone)
	if out := done.Results["executing"].Output; !strings.Contains(out, "revoked and deleted") || !strings.Contains(out, before.SHA256()) {
		t.Fatalf("the step's output: %q", out)
	}
	if _, err := caClient.Status(ctx, pos1); !errors.Is(err, puppetca.ErrNotFound) {
		t.Fatalf("the certificate is still on the CA: %v", err)
	}
	if err := ca.Agent(pos1); err != nil {
		t.Fatalf("the node's agent asking again after the clean: %v", err)
	}
	// Infra heard of the ticket, the requester of its result.
	k.Deliver()
	mustSay(t, strings.Join(k.Notices("dave"), "\n"), "T-1")
	mustSay(t, strings.Join(k.Notices("ivan"), "\n"), "T-1 已完成 done")

	// Puppet group change.
	mustSay(t, text(k.Say("ivan", fmt.Sprintf(`/ops new server-group-change store=S-1001 hostname=%s env=prod group=cach`, pos1))),
		`LDAP has no group "cach": did you mean cache?`)
	mustSay(t, text(k.Say("ivan", fmt.Sprintf(`/ops new server-group-change store=S-1001 hostname=%s env=prod group=db`, pos2))),
		"LDAP has no entry for host "+pos2)
	r = text(k.Say("ivan", fmt.Sprintf(`/ops new server-group-change store=S-1001 hostname=%s env=prod group=cache`, pos1)))
	mustSay(t, r, "T-2 submitted")
	mustSay(t, r, "cn="+pos1+",ou=nodes,"+ldaptest.Suffix)
	mustSay(t, r, "web")
	k.Say("dave", "/ops approve T-2")
	k.WaitStage("T-2", flows.StageDone)
	if g := ldapGroup(t, dir, pos1); g != "cache" {
		t.Fatalf("LDAP has group %q, want cache", g)
	}
	mustSay(t, text(k.Say("dave", "/ops server show "+pos1)), "group: cache")
	// Rollback puts the old group back.
	k.Say("dave", "/ops rollback T-2 confirm")
	k.WaitStage("T-2", flows.StageRolledBack)
	if g := ldapGroup(t, dir, pos1); g != "web" {
		t.Fatalf("after rollback LDAP has group %q, want web", g)
	}

	// A change made in LDAP after submission: the approval is asked again
	// on a fresh look, and then goes through without overwriting it.
	k.Say("ivan", fmt.Sprintf(`/ops new server-group-change store=S-1001 hostname=%s env=prod group=db`, pos1))
	setLDAPGroup(t, dir, pos1, "cache")
	mustSay(t, text(k.Say("dave", "/ops approve T-3")), "what T-3 looked up has changed")
	k.Say("dave", "/ops approve T-3")
	k.WaitStage("T-3", flows.StageDone)
	if g := ldapGroup(t, dir, pos1); g != "db" {
		t.Fatalf("LDAP has group %q, want db", g)
	}
	t3 := k.Ticket("T-3")
	if t3.Fields["current_group"] != "cache" {
		t.Fatalf("the approved change was from %q, not the fresh cache", t3.Fields["current_group"])
	}

	// Server information change.
	mustSay(t, text(k.Say("ivan", fmt.Sprintf(`/ops new server-change hostname=%s reason=x`, pos2))), "nothing to change")
	r = text(k.Say("ivan", fmt.Sprintf(`/ops new server-change hostname=%s ip=10.20.3.9 role=kiosk reason="new rack"`, pos2)))
	mustSay(t, r, "ip 10.20.3.5 → 10.20.3.9; role pos → kiosk")
	k.Say("dave", "/ops approve T-4")
	k.WaitStage("T-4", flows.StageDone)
	s, _, _ := k.Bot.Store().Server(ctx, pos2)
	if s.IP != "10.20.3.9" || s.Role != "kiosk" || s.Ticket != "T-4" {
		t.Fatalf("the inventory: %+v", s)
	}
	h.mu.Lock()
	if len(h.reqs) != 1 || h.reqs[0].Old.IP != "10.20.3.5" || h.reqs[0].New.IP != "10.20.3.9" || h.reqs[0].Ticket != "T-4" {
		t.Fatalf("the hook got: %+v", h.reqs)
	}
	h.mu.Unlock()
	mustSay(t, text(k.Say("dave", "/ops server show "+pos2)), "IP 10.20.3.9 · 角色 role kiosk")
}

// A change in LDAP between approval and the step: the step does not
// overwrite it; the ticket goes back to approval (a fresh look).
func TestGroupChangeConflictIsNotOverwritten(t *testing.T) {
	dir := ldaptest.Start(t, ldaptest.Group("web")+ldaptest.Group("db")+ldaptest.Group("cache")+ldaptest.Node(pos1, "cache", "pos"))
	t.Setenv("OPSBOT_LDAP_PASSWORD", ldaptest.Password)
	d, err := ldap.New(ldap.Config{URL: dir.URL, StartTLS: true, CA: dir.CA, BindDN: ldaptest.BindDN, PasswordEnv: "OPSBOT_LDAP_PASSWORD",
		NodesBase: "ou=nodes," + ldaptest.Suffix, GroupsBase: "ou=groups," + ldaptest.Suffix})
	if err != nil {
		t.Fatal(err)
	}
	x := servers.New(servers.Config{LDAP: d})
	in := flows.ExecInput{Ticket: state.Ticket{ID: "T-9", Fields: map[string]string{"hostname": pos1, "dn": "cn=" + pos1 + ",ou=nodes," + ldaptest.Suffix,
		"current_group": "web", "group": "db"}}, Params: map[string]string{"op": "set_group"}, Kind: state.JobAction}
	res := x.Run(context.Background(), in)
	if res.OK || !res.Redo || res.Err == nil || !strings.Contains(res.Err.Error(), `now in group "cache", not "web"`) {
		t.Fatalf("a conflicting change: %+v", res)
	}
	if g := ldapGroup(t, dir, pos1); g != "cache" {
		t.Fatalf("the concurrent change was overwritten: %q", g)
	}
	in.Ticket.Fields["current_group"] = "cache"
	if res := x.Run(context.Background(), in); !res.OK || len(res.Undo) != 1 {
		t.Fatalf("after a fresh look: %+v", res)
	}
	if res := x.Run(context.Background(), in); !res.OK {
		t.Fatalf("the same step again (a retry after a crash): %+v", res)
	}
}

func ldapConn(t *testing.T, dir *ldaptest.Server) *goldap.Conn {
	c, err := goldap.DialURL(dir.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bind(ldaptest.Admin, ldaptest.Password); err != nil {
		t.Fatal(err)
	}
	return c
}

// ldapGroup reads a node's group with a plain search.
func ldapGroup(t *testing.T, dir *ldaptest.Server, host string) string {
	c := ldapConn(t, dir)
	defer c.Close()
	res, err := c.Search(goldap.NewSearchRequest("ou=nodes,"+ldaptest.Suffix, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 0, 0, false,
		"(cn="+host+")", []string{"puppetGroup"}, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("search %s: %v", host, err)
	}
	return res.Entries[0].GetAttributeValue("puppetGroup")
}

func setLDAPGroup(t *testing.T, dir *ldaptest.Server, host, group string) {
	c := ldapConn(t, dir)
	defer c.Close()
	m := goldap.NewModifyRequest("cn="+host+",ou=nodes,"+ldaptest.Suffix, nil)
	m.Replace("puppetGroup", []string{group})
	if err := c.Modify(m); err != nil {
		t.Fatal(err)
	}
}

// config check reads the puppet_ca: and ldap: sections' files, reaches
// the CA with the bot's certificate and binds to LDAP, saying what is
// wrong.
func TestConfigCheckReachesCAAndLDAP(t *testing.T) {
	ca, _ := caServer(t)
	dir := ldaptest.Start(t, ldaptest.Group("web"))
	kitDir := t.TempDir()
	bottest.WriteScripts(t, kitDir)
	check := func(yaml string) string {
		cfg := t.TempDir() + "/opsbot.yaml"
		os.WriteFile(cfg, []byte(bottest.ConfigYAML(kitDir, yaml)), 0o600)
		var out, errb strings.Builder
		bot.Main([]string{"config", "check", cfg}, nil, &out, &errb)
		return out.String() + errb.String()
	}
	good := fmt.Sprintf(`puppet_ca: {url: %q, ca: %q, cert: %q, key: %q, server_name: localhost}
ldap: {url: %q, start_tls: true, ca: %q, bind_dn: %q, password_env: OPSBOT_LDAP_PASSWORD, nodes_base: "ou=nodes,%s", groups_base: "ou=groups,%s"}
`, ca.URL, ca.CA, ca.Cert, ca.Key, dir.URL, dir.CA, ldaptest.BindDN, ldaptest.Suffix, ldaptest.Suffix)
	t.Setenv("OPSBOT_LDAP_PASSWORD", ldaptest.Password)
	if out := check(good); !strings.Contains(out, "config OK") {
		t.Fatalf("a good configuration: %s", out)
	}
	t.Setenv("OPSBOT_LDAP_PASSWORD", "wrong")
	mustSay(t, check(good), "ldap: ldap: bind as "+ldaptest.BindDN+" (password from $OPSBOT_LDAP_PASSWORD)")
	t.Setenv("OPSBOT_LDAP_PASSWORD", ldaptest.Password)
	mustSay(t, check(strings.Replace(good, ca.Cert, "/nonexistent/opsbot.pem", 1)), "puppet_ca.cert/key: open /nonexistent/opsbot.pem")
	mustSay(t, check(strings.Replace(good, ca.URL, "http://127.0.0.1:1", 1)), `puppet_ca.url "http://127.0.0.1:1": the CA's https URL`)
	mustSay(t, check(strings.Replace(good, "start_tls: true, ", "", 1)+"\n"), "config OK")
}

// Servers round-trip through the inventory's CSV: import, export, and a
// bad row refused with what is wrong.
func TestServersCSV(t *testing.T) {
	k := bottest.New(t)
	doc, _, err := inventory.ReadCSV(strings.NewReader("hostname,ip,role,env,store\n"+pos1+",10.20.3.4,pos,prod,S-1001\nBAD_HOST,10.1.1.1,pos,prod,S-1\n"+pos2+",10.20.3.x,pos,prod,S-1001\n"), "servers.csv")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := k.Bot.Inventory().Import(context.Background(), doc, nil, false)
	if err != nil || rep.Servers != 1 || len(rep.Rejected) != 2 {
		t.Fatalf("import: %+v %v", rep, err)
	}
	mustSay(t, rep.String(), `hostname "bad_host": lower-case letters, digits`)
	mustSay(t, rep.String(), `ip "10.20.3.x" is not an IP address`)
	var out strings.Builder
	if err := k.Bot.Inventory().Export(&out, "servers.csv"); err != nil || out.String() != "hostname,ip,role,env,store\n"+pos1+",10.20.3.4,pos,prod,S-1001\n" {
		t.Fatalf("export: %q %v", out.String(), err)
	}
	// The JSON form: exported, changed, imported again.
	out.Reset()
	if err := k.Bot.Inventory().Export(&out, "json"); err != nil {
		t.Fatal(err)
	}
	var jdoc inventory.Document
	if err := json.Unmarshal([]byte(out.String()), &jdoc); err != nil || len(jdoc.Servers) != 1 || jdoc.Servers[0].Hostname != pos1 {
		t.Fatalf("json export: %v %s", err, out.String())
	}
	jdoc.Servers[0].IP = "10.20.3.7"
	if rep, err := k.Bot.Inventory().Import(context.Background(), jdoc, nil, false); err != nil || rep.Servers != 1 {
		t.Fatalf("json import: %+v %v", rep, err)
	}
	if s, _, _ := k.Bot.Store().Server(context.Background(), pos1); s.IP != "10.20.3.7" {
		t.Fatalf("after the json import: %+v", s)
	}
}
