// Package etcdtest runs a real etcd cluster for tests: n members of
// bin/etcd (built by `make deps` from the module proxy, the release line of
// the client) on free loopback ports, each with its own data directory. A
// test can stop, kill and restart a member and find the leader; the
// cluster is stopped when the test ends.
package etcdtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"opsbot/internal/testbin"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Binary finds bin/etcd above the working directory, or $OPSBOT_ETCD.
func Binary() (string, error) {
	return testbin.Find("etcd", "OPSBOT_ETCD", "run `make deps` (builds etcd v3.7 from the module proxy)")
}

// Member is one etcd process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	dir       string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// Running reports whether the member's process is up.
func (m *Member) Running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Cluster is a running etcd cluster.
type Cluster struct {
	// TLS is set when clients must use TLS with a client certificate.
	TLS     *tls.Config
	scheme  string
	t       failer
	bin     string
	initial string
	extra   []string
	Members []*Member
}

// Timing of the test cluster: a short heartbeat and election timeout, so a
// killed leader is replaced within about a second.
const (
	heartbeat = 50 * time.Millisecond
	election  = 500 * time.Millisecond
)

// failer is what the harness needs of a test: testing.TB, or a
// process-wide stand-in for a cluster shared by a package's tests.
type failer interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Start runs an n-member cluster and waits until it answers. Flags are
// given to every member (e.g. "--quota-backend-bytes", "16777216").
func Start(t testing.TB, n int, flags ...string) *Cluster {
	t.Helper()
	c, err := start(t, t.TempDir(), n, flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	return c
}

// panicker fails by panicking with the message; StartShared recovers it.
type panicker struct{}

type failure string

func (panicker) Helper()                           {}
func (panicker) Fatal(args ...any)                 { panic(failure(fmt.Sprint(args...))) }
func (panicker) Fatalf(format string, args ...any) { panic(failure(fmt.Sprintf(format, args...))) }

// StartShared runs an n-member cluster for a whole test binary (from
// TestMain): tests share it under key prefixes of their own. stop ends
// it and removes its directory.
func StartShared(n int) (c *Cluster, stop func(), err error) {
	dir, err := os.MkdirTemp("", "etcdtest-")
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(failure)
			if !ok {
				panic(r)
			}
			if c != nil {
				c.stopAll()
			}
			os.RemoveAll(dir)
			c, stop, err = nil, nil, errors.New(string(f))
		}
	}()
	c, err = start(panicker{}, dir, n, nil)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return c, func() { c.stopAll(); os.RemoveAll(dir) }, nil
}

// TLSFiles are the PEM files of a TLS cluster: the CA that signed the
// members' and the client's certificates, and the client's pair.
type TLSFiles struct{ CA, Cert, Key string }

// StartTLS runs an n-member cluster whose clients must use TLS and present
// a certificate signed by the cluster's CA (--client-cert-auth).
func StartTLS(t testing.TB, n int) (*Cluster, TLSFiles) {
	t.Helper()
	dir := t.TempDir()
	files, tc, err := writeCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := startScheme(t, t.TempDir(), n, []string{"--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
		"--trusted-ca-file", files.CA, "--client-cert-auth"}, "https", tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	return c, files
}

func start(t failer, base string, n int, flags []string) (*Cluster, error) {
	return startScheme(t, base, n, flags, "http", nil)
}

func startScheme(t failer, base string, n int, flags []string, scheme string, tc *tls.Config) (*Cluster, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	c := &Cluster{t: t, bin: bin, extra: flags, scheme: scheme, TLS: tc}
	var initial []string
	addrs := freeAddrs(t, 2*n)
	for i := 0; i < n; i++ {
		m := &Member{Name: fmt.Sprintf("m%d", i), ClientURL: c.scheme + "://" + addrs[2*i], PeerURL: "http://" + addrs[2*i+1],
			dir: filepath.Join(base, fmt.Sprintf("m%d", i))}
		c.Members = append(c.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	c.initial = strings.Join(initial, ",")
	for i := range c.Members {
		c.start(i, "new")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.WaitLeader(ctx); err != nil {
		c.stopAll()
		return nil, fmt.Errorf("etcd cluster did not elect a leader: %v\n%s", err, c.Logs())
	}
	return c, nil
}

// freeAddrs returns n distinct free loopback addresses: each listener is
// held until all are taken, so a port freed by one cannot be handed out
// again for the next (two members on one port fail to start).
func freeAddrs(t failer, n int) []string {
	var out []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		out = append(out, l.Addr().String())
	}
	return out
}

func (c *Cluster) start(i int, state string) {
	c.t.Helper()
	m := c.Members[i]
	if err := os.MkdirAll(m.dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	logf, err := os.OpenFile(m.dir+".log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	m.cmd = exec.Command(c.bin,
		"--name", m.Name, "--data-dir", m.dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", c.initial, "--initial-cluster-state", state, "--initial-cluster-token", "opsbot-test",
		"--heartbeat-interval", fmt.Sprint(heartbeat.Milliseconds()), "--election-timeout", fmt.Sprint(election.Milliseconds()),
		"--log-level", "warn")
	m.cmd.Args = append(m.cmd.Args, c.extra...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatalf("start etcd %s: %v", m.Name, err)
	}
	m.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait() // a member is stopped or killed on purpose
		logf.Close()
		close(exited)
	}(m.cmd, m.exited)
}

// Endpoints are the client URLs of every member, running or not.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Client connects to every member; the test closes it.
func (c *Cluster) Client() *clientv3.Client {
	c.t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: c.TLS})
	if err != nil {
		c.t.Fatal(err)
	}
	return cli
}

// Kill sends SIGKILL to member i and waits for it to end.
func (c *Cluster) Kill(i int) { c.signal(i, syscall.SIGKILL) }

// Stop sends SIGTERM to member i and waits for it to end.
func (c *Cluster) Stop(i int) { c.signal(i, syscall.SIGTERM) }

func (c *Cluster) signal(i int, sig syscall.Signal) {
	c.t.Helper()
	m := c.Members[i]
	if !m.Running() {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(15 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

// Restart starts a stopped or killed member again on its data directory.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	if c.Members[i].Running() {
		c.t.Fatalf("etcd %s is still running", c.Members[i].Name)
	}
	c.start(i, "existing")
}

// Leader asks the running members which of them leads, and returns its
// index.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	var errs []error
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: 2 * time.Second, Logger: zap.NewNop(), TLS: c.TLS})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		st, err := cli.Status(ctx, m.ClientURL)
		cli.Close()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
			continue
		}
		if st.Leader == 0 {
			errs = append(errs, fmt.Errorf("%s: no leader", m.Name))
			continue
		}
		if st.Leader == st.Header.MemberId {
			for i := range c.Members {
				if c.Members[i] == m {
					return i, nil
				}
			}
		}
	}
	return -1, fmt.Errorf("no running member leads: %w", errors.Join(errs...))
}

// WaitLeader waits until a running member leads.
func (c *Cluster) WaitLeader(ctx context.Context) (int, error) {
	for {
		i, err := c.Leader(ctx)
		if err == nil {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Logs returns what the members wrote, for a failing test's message.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, m := range c.Members {
		data, _ := os.ReadFile(m.dir + ".log")
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "== %s ==\n%s\n", m.Name, data)
	}
	return b.String()
}

func (c *Cluster) stopAll() {
	for i := range c.Members {
		c.signal(i, syscall.SIGKILL)
	}
}

// MemberClient connects to member i alone (to read what that member has,
// with Serializable).
func MemberClient(t testing.TB, c *Cluster, i int) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.Members[i].ClientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: c.TLS})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// Serializable reads from the member asked, without going through the
// leader: what that member itself has.
func Serializable() clientv3.OpOption { return clientv3.WithSerializable() }
