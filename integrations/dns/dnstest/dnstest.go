// Package dnstest starts a real BIND name server (Debian's named) on a
// free loopback port, authoritative for a zone that accepts dynamic
// updates signed with a TSIG key, for tests.
package dnstest

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// Named is a running name server.
type Named struct {
	Addr    string // 127.0.0.1:port, UDP and TCP
	Zone    string
	KeyName string
	Secret  string // base64 TSIG secret (hmac-sha256)
	dir     string
	cmd     *exec.Cmd
}

// Binary is where Debian's bind9 package puts named.
const Binary = "/usr/sbin/named"

// freePort finds a loopback port free for both TCP and UDP.
func freePort(t testing.TB) int {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port for both TCP and UDP")
	return 0
}

// NewSecret returns a fresh base64 TSIG secret.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// Start runs named for zone; it is stopped when the test ends. The test
// fails (it is not skipped) when named is missing: `make deps` installs it.
func Start(t testing.TB, zone string) *Named {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("%s not found: run `make deps` (installs Debian's bind9)", Binary)
	}
	n := &Named{Zone: zone, KeyName: "opsbot-key", Secret: NewSecret(), dir: t.TempDir()}
	port := freePort(t)
	n.Addr = "127.0.0.1:" + strconv.Itoa(port)
	zoneFile := fmt.Sprintf(`$TTL 60
@ IN SOA ns1.%[1]s. hostmaster.%[1]s. ( 1 60 60 600 60 )
@ IN NS ns1.%[1]s.
ns1 IN A 127.0.0.1
`, zone)
	conf := fmt.Sprintf(`options {
	directory "%[1]s";
	pid-file "%[1]s/named.pid";
	session-keyfile "%[1]s/session.key";
	managed-keys-directory "%[1]s";
	listen-on port %[2]d { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
};
controls { };
key "%[3]s" { algorithm hmac-sha256; secret "%[4]s"; };
zone "%[5]s" {
	type primary;
	file "%[1]s/zone.db";
	update-policy { grant %[3]s zonesub ANY; };
};
`, n.dir, port, n.KeyName, n.Secret, zone)
	if err := os.WriteFile(filepath.Join(n.dir, "zone.db"), []byte(zoneFile), 0o644); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(n.dir, "named.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-g", "-c", confPath, "-n", "1"}
	if os.Geteuid() == 0 {
		args = append(args, "-u", "root")
	}
	n.cmd = exec.Command(Binary, args...)
	logf, err := os.Create(filepath.Join(n.dir, "named.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // named keeps its own descriptor
	n.cmd.Stdout, n.cmd.Stderr = logf, logf
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := new(mdns.Msg)
		m.SetQuestion(mdns.Fqdn(zone), mdns.TypeSOA)
		c := &mdns.Client{Timeout: 300 * time.Millisecond}
		if r, _, err := c.Exchange(m, n.Addr); err == nil && r.Rcode == mdns.RcodeSuccess && len(r.Answer) > 0 {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("named did not answer on %s:\n%s", n.Addr, n.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops named.
func (n *Named) Stop() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = n.cmd.Process.Kill()
			<-done
		}
		n.cmd = nil
	}
}

// Log is named's output so far.
func (n *Named) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "named.log"))
	return string(b)
}

// Lookup asks named for the A records of name.
func (n *Named) Lookup(name string) ([]string, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), mdns.TypeA)
	c := &mdns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, n.Addr)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*mdns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, nil
}
