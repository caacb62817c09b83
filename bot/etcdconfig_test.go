package bot_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/state"
	"opsbot/state/etcdtest"
)

// withState is the kit's configuration with its state: line replaced.
func withState(t *testing.T, stateYAML string) string {
	dir := t.TempDir()
	bottest.WriteScripts(t, dir)
	y := bottest.ConfigYAML(dir, "")
	return strings.Replace(y, fmt.Sprintf("state: {path: %q}", filepath.Join(dir, "opsbot.db")), stateYAML, 1)
}

func checkConfig(t *testing.T, yaml string) (int, string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "opsbot.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := bot.Main([]string{"config", "check", cfg}, nil, &out, &errb)
	return code, out.String() + errb.String()
}

// The etcd backend's options are checked, each with what to write.
func TestEtcdStateConfigIsChecked(t *testing.T) {
	t.Setenv("OPSBOT_STATE_KEY", "")
	code, out := checkConfig(t, `
listen: 127.0.0.1:0
state:
  backend: etcd
  etcd: {endpoints: ["10.0.0.1:2379"], prefix: opsbot, cert: client.pem, username: opsbot, password_env: OPSBOT_NO_SUCH_PASSWORD, lease_ttl: 5m}
`)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{
		`state.etcd.endpoints: "10.0.0.1:2379" is not a client URL (e.g. https://10.0.0.1:2379)`,
		`state.etcd.prefix: "opsbot" must end in '/'`,
		`state.etcd: cert and key go together`,
		`state.etcd.cert: stat`,
		`state.etcd.password_env: environment variable OPSBOT_NO_SUCH_PASSWORD is not set (the password of etcd user opsbot)`,
		`state.key_env: environment variable OPSBOT_STATE_KEY is not set; with etcd every replica needs the same sealing key`,
		`state.etcd.lease_ttl: 5m0s: between 1s and 1m`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config check output lacks %q:\n%s", want, out)
		}
	}
	_, out = checkConfig(t, "listen: 127.0.0.1:0\nstate: {backend: mysql}\n")
	if !strings.Contains(out, `state.backend: "mysql": use bbolt (one file, the default) or etcd (several replicas)`) {
		t.Errorf("an unknown backend: %s", out)
	}
}

// config check reaches the cluster: over TLS with a client certificate,
// with etcd's own user and password, and it says when no member answers.
// A backup of the state in etcd is a verified state file.
func TestConfigCheckReachesEtcd(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd")
	}
	t.Setenv("OPSBOT_STATE_KEY", "0123456789abcdef0123456789abcdef")
	c, files := etcdtest.StartTLS(t, 3)
	eps := `["` + strings.Join(c.Endpoints(), `", "`) + `"]`
	tlsYAML := withState(t, fmt.Sprintf("state:\n  backend: etcd\n  etcd: {endpoints: %s, prefix: team-a/, ca: %q, cert: %q, key: %q}",
		eps, files.CA, files.Cert, files.Key))
	if code, out := checkConfig(t, tlsYAML); code != 0 || !strings.Contains(out, "config OK") {
		t.Fatalf("TLS etcd: exit %d\n%s", code, out)
	}
	// Without the client certificate the cluster refuses the client.
	noCert := withState(t, fmt.Sprintf("state:\n  backend: etcd\n  etcd: {endpoints: %s, ca: %q, dial_timeout: 2s}", eps, files.CA))
	if code, out := checkConfig(t, noCert); code != 1 || !strings.Contains(out, "state.etcd:") {
		t.Fatalf("TLS etcd without a client certificate: exit %d\n%s", code, out)
	}
	// A backup of the state in etcd (no bot needed), then verified.
	cfg := filepath.Join(t.TempDir(), "opsbot.yaml")
	os.WriteFile(cfg, []byte(tlsYAML), 0o644)
	var out, errb bytes.Buffer
	dest := filepath.Join(t.TempDir(), "backup.db")
	if code := bot.Main([]string{"backup", "-config", cfg, dest}, nil, &out, &errb); code != 0 {
		t.Fatalf("backup of etcd: %s%s", out.String(), errb.String())
	}
	if sum, err := state.Verify(dest); err != nil || sum.Schema != state.SchemaVersion() {
		t.Fatalf("the backup of etcd: %+v %v", sum, err)
	}
	// It goes back with migrate; restore (which replaces a file) says so.
	out.Reset()
	errb.Reset()
	if code := bot.Main([]string{"restore", "-config", cfg, dest}, nil, &out, &errb); code != 1 ||
		!strings.Contains(errb.String(), "opsbot migrate -from bbolt:"+dest+" -to etcd:https://") {
		t.Fatalf("restore on etcd: %d %s", code, errb.String())
	}

	// etcd's own users.
	plain := etcdtest.Start(t, 1)
	cli := plain.Client()
	defer cli.Close()
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.UserAdd(ctx, "opsbot", "s3cret-pw"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "opsbot"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "opsbot", "opsbot", "opsbot0", 2) // readwrite on opsbot...
			return err
		},
		func() error { _, err := cli.UserGrantRole(ctx, "opsbot", "opsbot"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	userYAML := withState(t, fmt.Sprintf("state:\n  backend: etcd\n  etcd: {endpoints: [%q], username: opsbot, password_env: OPSBOT_TEST_ETCD_PW, dial_timeout: 2s}",
		plain.Endpoints()[0]))
	t.Setenv("OPSBOT_TEST_ETCD_PW", "s3cret-pw")
	if code, out := checkConfig(t, userYAML); code != 0 {
		t.Fatalf("etcd user and password: exit %d\n%s", code, out)
	}
	t.Setenv("OPSBOT_TEST_ETCD_PW", "wrong")
	if code, out := checkConfig(t, userYAML); code != 1 || strings.Contains(out, "wrong") {
		t.Fatalf("a wrong etcd password: exit %d (and the password must not be shown)\n%s", code, out)
	}
	// No member answers.
	gone := withState(t, fmt.Sprintf("state:\n  backend: etcd\n  etcd: {endpoints: [\"http://%s\"], dial_timeout: 1s}", freePort(t)))
	if code, out := checkConfig(t, gone); code != 1 || !strings.Contains(out, "state.etcd: no member answers") {
		t.Fatalf("an etcd nobody runs: exit %d\n%s", code, out)
	}
}

// A bot on etcd whose quota fills says so in its health: every write
// would fail, and the operator is told what to do.
func TestHealthReportsEtcdQuotaFull(t *testing.T) {
	if testing.Short() {
		t.Skip("runs etcd")
	}
	c := etcdtest.Start(t, 1, "--quota-backend-bytes", "16777216")
	t.Setenv("OPSBOT_STATE_KEY", "0123456789abcdef0123456789abcdef")
	k := bottest.New(t, bottest.WithState(fmt.Sprintf("state: {backend: etcd, etcd: {endpoints: [%q], dial_timeout: 1s}}", c.Endpoints()[0])),
		bottest.WithYAML(`ops: {listen: "127.0.0.1:0"}`))
	waitReady(t, k, 200, `"ready":true`)
	// etcd stopped: not ready, saying why; back by itself.
	c.Stop(0)
	waitReady(t, k, 503, "the state does not answer")
	c.Restart(0)
	waitReady(t, k, 200, `"ready":true`)
	get := func() (int, string) {
		resp, err := http.Get(k.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get(); code != 200 || !strings.Contains(body, `"etcd":"ok"`) {
		t.Fatalf("healthy bot on etcd: %d %s", code, body)
	}
	// The kit's bot works on etcd: a ticket through the local chat.
	mustContain(t, bottest.Title(k.Say("alice", `/ops new golive service=payments version=v1 rollback_app=redeploy hotfix=true`)), "T-1")
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-1")), "T-1 approve")
	cli := c.Client()
	defer cli.Close()
	big := strings.Repeat("x", 512<<10)
	for i := 0; i < 100; i++ {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("filler/%d", i), big); err != nil {
			break
		}
	}
	code, body := get()
	if code != 503 || !strings.Contains(body, "NOSPACE") || !strings.Contains(body, "alarm disarm") {
		t.Fatalf("a full etcd: %d %s", code, body)
	}
	waitReady(t, k, 503, "etcd alarm raised: NOSPACE")
}
