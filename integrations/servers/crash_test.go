package servers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/bot/local"
	"opsbot/integrations/ldap/ldaptest"
	"opsbot/integrations/puppetca"
)

// proxy forwards TCP to a server. Until held is set it passes everything;
// slow delays every answer from the server; onClient sees each chunk the
// client sends, and returning true holds the server's answers on that
// connection from then on (the request reached the server, its answer
// does not reach the bot).
type proxy struct {
	ln       net.Listener
	target   string
	slow     atomic.Int64 // nanoseconds added before each answer chunk
	onClient atomic.Pointer[func(chunk []byte) bool]
	held     chan struct{} // closed: let held answers go
	mu       sync.Mutex
	conns    []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, held: make(chan struct{})}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns = append(p.conns, c, s)
	p.mu.Unlock()
	var hold atomic.Bool
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if f := p.onClient.Load(); f != nil && (*f)(buf[:n]) {
					hold.Store(true)
				}
				s.Write(buf[:n])
			}
			if err != nil {
				s.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if d := p.slow.Load(); d > 0 {
				time.Sleep(time.Duration(d))
			}
			if hold.Load() {
				<-p.held
			}
			c.Write(buf[:n])
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// ldapOp is the protocol operation tag of each LDAP message in a chunk
// (BER: SEQUENCE { messageID INTEGER, protocolOp [APPLICATION n] }).
func ldapOps(b []byte) []byte {
	var ops []byte
	for len(b) > 2 && b[0] == 0x30 {
		l, n := berLen(b[1:])
		if n == 0 || 1+n+l > len(b) {
			return ops
		}
		msg := b[1+n : 1+n+l]
		if len(msg) > 2 && msg[0] == 0x02 {
			idl := int(msg[1])
			if 2+idl < len(msg) {
				ops = append(ops, msg[2+idl])
			}
		}
		b = b[1+n+l:]
	}
	return ops
}

func berLen(b []byte) (int, int) {
	if len(b) == 0 {
		return 0, 0
	}
	if b[0] < 0x80 {
		return int(b[0]), 1
	}
	k := int(b[0] & 0x7f)
	if k == 0 || k > 4 || len(b) < 1+k {
		return 0, 0
	}
	l := 0
	for _, x := range b[1 : 1+k] {
		l = l<<8 | int(x)
	}
	return l, 1 + k
}

// botProc is the built bot binary running on a config.
type botProc struct {
	t   *testing.T
	cmd *exec.Cmd
	url string
	log bytes.Buffer
}

func startBot(t *testing.T, bin, cfg, url string) *botProc {
	p := &botProc{t: t, url: url}
	p.cmd = exec.Command(bin, "run", "-config", cfg)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if resp, err := http.Get(url + "/healthz"); err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bot did not start:\n%s", p.log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *botProc) say(user, text string) string {
	out, err := bottest.Post(p.url+"/api/command", user, text)
	if err != nil {
		p.t.Fatal(err)
	}
	return bottest.Text(out)
}

// try sends a command whose answer may never come (the bot killed).
func (p *botProc) try(user, text string) {
	body, _ := json.Marshal(local.CommandRequest{User: user, Text: text})
	if resp, err := http.Post(p.url+"/api/command", "application/json", bytes.NewReader(body)); err == nil {
		resp.Body.Close()
	}
}

func (p *botProc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
}

func (p *botProc) waitStage(id, stage string) string {
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, _ := json.Marshal(local.CommandRequest{User: "dave", Text: "/ops show " + id})
		resp, err := http.Post(p.url+"/api/command", "application/json", bytes.NewReader(body))
		if err == nil {
			var out local.CommandResponse
			json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			card := bottest.Card(out.Replies)
			if strings.HasPrefix(card.Stage, stage+"@") || (card.Ended && strings.Contains(card.StageTitle, stage)) {
				return bottest.Text(out.Replies)
			}
			if time.Now().After(deadline) {
				p.t.Fatalf("%s: want %s, card %q\n%s", id, stage, card.Stage+" "+card.StageTitle, bottest.Text(out.Replies))
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A SIGKILL of the bot while its step is at the CA (the certificate
// revoked, not yet deleted) or at LDAP (the modify applied, its answer
// not yet back), then a restart: the step runs again and ends done, the
// effect applied once (the certificate gone; the group the new one, not
// toggled back or refused).
func TestSIGKILLDuringCACallAndLDAPModify(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	ca, caClient := caServer(t)
	dir := ldaptest.Start(t, ldaptest.Group("web")+ldaptest.Group("cache")+ldaptest.Node(pos1, "web", "pos"))
	caProxy := newProxy(t, strings.TrimPrefix(ca.URL, "https://"))
	ldapProxy := newProxy(t, strings.TrimPrefix(dir.URL, "ldap://"))
	bin := filepath.Join(t.TempDir(), "opsbot")
	if out, err := exec.Command("go", "build", "-o", bin, "opsbot").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	work := t.TempDir()
	bottest.WriteScripts(t, work)
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	yaml := strings.Replace(bottest.ConfigYAML(work, fmt.Sprintf(`
puppet_ca: {url: "https://%s", ca: %q, cert: %q, key: %q, server_name: localhost}
ldap: {url: "ldap://%s", bind_dn: %q, password_env: OPSBOT_LDAP_PASSWORD, nodes_base: "ou=nodes,%s", groups_base: "ou=groups,%s"}
`, caProxy.addr(), ca.CA, ca.Cert, ca.Key, ldapProxy.addr(), ldaptest.BindDN, ldaptest.Suffix, ldaptest.Suffix)), "listen: 127.0.0.1:0", "listen: "+addr, 1)
	cfg := filepath.Join(work, "opsbot.yaml")
	os.WriteFile(cfg, []byte(yaml), 0o600)
	t.Setenv("OPSBOT_LDAP_PASSWORD", ldaptest.Password)
	p := startBot(t, bin, cfg, "http://"+addr)
	csv := filepath.Join(work, "servers.csv")
	os.WriteFile(csv, []byte("hostname,ip,role,env,store\n"+pos1+",10.20.3.4,pos,prod,S-1001\n"), 0o600)
	var out, errb strings.Builder
	if code := bot.Main([]string{"inventory", "import", "-config", cfg, csv}, nil, &out, &errb); code != 0 {
		t.Fatalf("import: %s %s", out.String(), errb.String())
	}
	p.say("root", "/ops role grant infra dave")
	if _, _, err := ca.Request(pos1); err != nil {
		t.Fatal(err)
	}

	// The CA: answers slowed, the bot killed when the CA shows the
	// certificate revoked (its delete not sent yet).
	mustSay(t, p.say("ivan", fmt.Sprintf(`/ops new puppet-cert-clean store=S-1001 hostname=%s env=prod reason=reinstalled`, pos1)), "T-1 submitted")
	caProxy.slow.Store(int64(700 * time.Millisecond))
	go p.try("dave", "/ops approve T-1")
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := caClient.Status(context.Background(), pos1)
		if err == nil && st.State == "revoked" {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("the certificate was not seen revoked before deleted: %+v %v", st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.kill()
	caProxy.slow.Store(0)
	p = startBot(t, bin, cfg, "http://"+addr)
	done := p.waitStage("T-1", "done")
	if _, err := caClient.Status(context.Background(), pos1); err != puppetca.ErrNotFound {
		t.Fatalf("after the restart the certificate is still there: %v\n%s", err, done)
	}

	// LDAP: the modify reaches slapd, its answer is held, the bot killed.
	mustSay(t, p.say("ivan", fmt.Sprintf(`/ops new server-group-change store=S-1001 hostname=%s env=prod group=cache`, pos1)), "T-2 submitted")
	var sent atomic.Bool
	onModify := func(chunk []byte) bool {
		if bytes.Contains(ldapOps(chunk), []byte{0x66}) { // ModifyRequest
			sent.Store(true)
			return true
		}
		return false
	}
	ldapProxy.onClient.Store(&onModify)
	go p.try("dave", "/ops approve T-2")
	deadline = time.Now().Add(30 * time.Second)
	for !sent.Load() || ldapGroup(t, dir, pos1) != "cache" {
		if time.Now().After(deadline) {
			t.Fatal("the modify did not reach slapd")
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.kill()
	ldapProxy.onClient.Store(nil)
	close(ldapProxy.held)
	p = startBot(t, bin, cfg, "http://"+addr)
	done = p.waitStage("T-2", "done")
	if g := ldapGroup(t, dir, pos1); g != "cache" {
		t.Fatalf("after the restart LDAP has %q, want cache\n%s", g, done)
	}
}
