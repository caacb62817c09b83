package bot_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"opsbot/bot"
)

func TestExampleConfigIsValid(t *testing.T) {
	var out, errb bytes.Buffer
	if code := bot.Main([]string{"config", "check", "../opsbot.example.yaml"}, nil, &out, &errb); code != 0 {
		t.Fatalf("example config: exit %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "flows: cleanup, cluster-change, golive, puppet-cert-clean, server-change, server-group-change, restart") {
		t.Fatalf("out %q", out.String())
	}
}

func TestConfigCheckSaysWhatIsWrong(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(cfg, []byte(`
listen: 0.0.0.0:8080
redis: {addr: "localhost", password_env: OPSBOT_NO_SUCH_VAR}
users:
  - {name: Bob, ids: {slack: U1}}
  - {name: bob}
  - {name: eve, ids: {slack: U1, teams: x}}
flows:
  - name: broken
    stages: [{name: s, kind: action, executor: ansible}]
`), 0o644)
	var out, errb bytes.Buffer
	if code := bot.Main([]string{"config", "check", cfg}, nil, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		`listen: "0.0.0.0:8080" is not a loopback address`,
		`redis.password_env: environment variable OPSBOT_NO_SUCH_VAR is not set`,
		`redis.addr: "localhost" is not host:port`,
		`user bob is declared twice`,
		`slack id U1 already belongs to bob`,
		`unknown platform "teams"`,
		`stage s: unknown executor "ansible"`,
		`scripts.dir:`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("config check output lacks %q:\n%s", want, errb.String())
		}
	}
	os.WriteFile(cfg, []byte("listen: 127.0.0.1:1\nlisten_port: 3\n"), 0o644)
	errb.Reset()
	bot.Main([]string{"config", "check", cfg}, nil, &out, &errb)
	if !strings.Contains(errb.String(), `listen_port (line 2): unknown key`) {
		t.Errorf("unknown key not named: %s", errb.String())
	}
}

func TestConfigCheckClustersDNSAndCleanup(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(cfg, []byte(`
clusters:
  sizes: {"5+3": 0}
  prod_name_pattern: "prod-[a-z"
  apply: {url: "ftp://x", script: y.sh}
dns: {server: "ns1", key_name: k, key_secret_env: OPSBOT_NO_SUCH_TSIG}
channels: {infra: {wecom_robot_env: OPSBOT_NO_SUCH_ROBOT}}
cleanup:
  protected: [{env: prod, mode: maybe}, {env: tdev, mode: refuse, until: "next week"}]
  envs:
    tdev:
      targets:
        - {name: all, redis: {db: 1}}
        - {name: a, mongo: {database: game}}
        - {name: b}
        - {name: c, logs: {root: "var/log", globs: ["*.log"]}}
        - {name: d, logs: {root: /var/log, globs: ["../*"]}}
        - {name: r, redis: {db: 1}}
`), 0o644)
	var out, errb bytes.Buffer
	if code := bot.Main([]string{"config", "check", cfg}, nil, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		`clusters.sizes: 5+3 holds 0 stores`,
		`clusters.prod_name_pattern: error parsing regexp`,
		`clusters.apply: give url or script, not both`,
		`clusters.apply.url: "ftp://x" is not an http(s) URL`,
		`dns.zone: the zone cluster domains live in`,
		`dns.server: "ns1": write host:port`,
		`dns: environment variable OPSBOT_NO_SUCH_TSIG is not set`,
		`channels.infra: environment variable OPSBOT_NO_SUCH_ROBOT is not set`,
		`cleanup.protected[0] prod: mode "maybe": refuse or two_approvers`,
		`cleanup.protected[1] tdev: "next week" is not a date`,
		`targets[0] all: give the target a name (not "all")`,
		`cleanup.envs.tdev: mongo_uri_env is needed for mongo targets`,
		`targets[2] b: give exactly one of mongo, redis or logs`,
		`targets[4] d: glob "../*" is not valid`,
		`cleanup.envs.tdev: redis.addr is needed for redis targets`,
	} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("config check output lacks %q:\n%s", want, errb.String())
		}
	}
}

func TestRedactor(t *testing.T) {
	r := bot.NewRedactor("configured-secret-1")
	cases := map[string]string{
		"password=hunter2 next":                             "password=[REDACTED] next",
		`db_password: "two words"`:                          "db_password: [REDACTED]",
		"TOKEN=abc;user=x":                                  "TOKEN=[REDACTED];user=x",
		"use xoxb-123456789-abcdefgh now":                   "use [REDACTED] now",
		"Authorization: Bearer abcdefghijklmnop":            "Authorization: [REDACTED]",
		"https://deploy:pa55w0rd@git.example/r.git":         "https://deploy:[REDACTED]@git.example/r.git",
		"key configured-secret-1 here":                      "key [REDACTED] here",
		"AKIAABCDEFGHIJKLMNOP":                              "[REDACTED]",
		"glpat-abcdefghijklmnopqrst":                        "[REDACTED]",
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_nature-x": "[REDACTED]",
		"plain text with T-42 and v1.4.2":                   "plain text with T-42 and v1.4.2",
	}
	for in, want := range cases {
		if got := r.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzRedactorNeverLeaksConfiguredSecret(f *testing.F) {
	f.Add("prefix ")
	f.Add("password=")
	r := bot.NewRedactor("TopSecretValue")
	f.Fuzz(func(t *testing.T, s string) {
		if strings.Contains(r.Redact(s+"TopSecretValue"+s), "TopSecretValue") {
			t.Fatal("configured secret leaked")
		}
	})
}

func TestTimeZoneIsChecked(t *testing.T) {
	cfg, err := bot.ParseConfig([]byte("time_zone: Mars/Olympus\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	errs := fmt.Sprint(cfg.Check(cfg.Executors()))
	if !strings.Contains(errs, `time_zone: "Mars/Olympus" is not a time zone (e.g. Asia/Shanghai or UTC)`) {
		t.Fatalf("errors %s", errs)
	}
}

// TestConfigCheckSpeaksTheConfigsLanguage: every problem of a file at
// once, each by key path and line, with the likely key or the kind of
// value wanted and an example; a secret pasted into an *_env option is
// never echoed.
func TestConfigCheckSpeaksTheConfigsLanguage(t *testing.T) {
	_, err := bot.ParseConfig([]byte(`listn: 127.0.0.1:8080
local:
  enabled: "yes"
rate_limit: {per_minute: sixty}
audit: {retention: forever}
slack:
  bot_token_env: xoxb-1234567890-abcdefghijklmnop
`), t.TempDir())
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		`config: 5 problem(s)`,
		`listn (line 1): unknown key; did you mean "listen"?`,
		`local.enabled (line 3): want true or false, not "yes"`,
		`rate_limit.per_minute (line 4): want a whole number such as 60, not "sixty"`,
		`audit.retention (line 5): bad duration "forever": want e.g. 90s, 30m, 4h or 3d`,
		`slack.bot_token_env (line 7): want the name of an environment variable (e.g. OPSBOT_SLACK_BOT_TOKEN), not its value; the value is not shown`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("lacks %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "xoxb-") {
		t.Fatalf("the secret was echoed:\n%s", msg)
	}
	// A syntax error in one section does not hide the others' problems.
	_, err = bot.ParseConfig([]byte("listen: 127.0.0.1:8080\nlistn: x\nstate: {path: \"a.db\"\nrate_limit:\n  per_minute: sixty\n"), t.TempDir())
	if err == nil {
		t.Fatal("a file that does not parse was accepted")
	}
	for _, want := range []string{
		"config: 3 problem(s)",
		`listn (line 2): unknown key; did you mean "listen"?`,
		"state (line 3): the YAML does not parse: line 3: did not find expected ',' or '}'",
		`rate_limit.per_minute (line 5): want a whole number such as 60, not "sixty"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("lacks %q in:\n%s", want, err)
		}
	}
	cfg, err := bot.ParseConfig([]byte("listen: 127.0.0.1:99999\n"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if errs := fmt.Sprint(cfg.Check(cfg.Executors())); !strings.Contains(errs, `listen: port "99999" is not a port number (0 to 65535`) {
		t.Fatalf("errors %s", errs)
	}
}

// FuzzParseConfig: any file, however broken, gets an answer and never a
// panic: a parsed config, or an error that starts with "config:" and, for
// a file that does not parse, names a line for each problem.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:8080\nlistn: x\nstate: {path: \"a.db\"\nrate_limit:\n  per_minute: sixty\n"))
	f.Add([]byte("flows:\n  - name: x\n    stages: [{name: a, kind: approval, roles: [qa]}]\n"))
	f.Add([]byte("a: &x [1\nb: *x\n"))
	f.Add([]byte("---\n- a\n- b\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := bot.ParseConfig(data, t.TempDir())
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config:") {
				t.Fatalf("error without its subject: %v", err)
			}
			return
		}
		if cfg == nil {
			t.Fatal("no config and no error")
		}
	})
}

// The API listener, webhooks and the audit stream are checked with an
// example of right.
func TestConfigCheckAPIAndFeeds(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.yaml")
	t.Setenv("OPSBOT_SHORT_SECRET", "short")
	os.WriteFile(cfg, []byte(`
api: {listen: "8090", public_url: "opsbot.example.com"}
webhooks:
  - {name: cmdb, url: "ftp://cmdb", secret_env: OPSBOT_SHORT_SECRET}
  - {name: cmdb, url: "https://cmdb.example.com/hook"}
  - {name: siem, url: "https://siem.example.com/hook", secret_env: OPSBOT_SHORT_SECRET, events: [submit, aprove, done]}
audit:
  stream: {url: "https://siem.example.com", secret_env: OPSBOT_NO_SUCH_SECRET}
`), 0o644)
	var out, errb bytes.Buffer
	if code := bot.Main([]string{"config", "check", cfg}, nil, &out, &errb); code != 1 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{
		`api.listen: "8090" is not host:port (e.g. 127.0.0.1:8090 behind an HTTPS proxy)`,
		`api.public_url: "opsbot.example.com" is not a URL (e.g. https://opsbot.example.com)`,
		`webhooks[0].url: "ftp://cmdb" is not an http(s) URL`,
		`webhooks[0].secret_env: $OPSBOT_SHORT_SECRET must hold a secret of at least 16 characters`,
		`webhooks[1].name: "cmdb" must be unique`,
		`webhooks[1].secret_env: name the variable holding the signing secret`,
		`audit.stream.secret_env: $OPSBOT_NO_SUCH_SECRET must hold a secret`,
		`webhooks[2].events: "aprove" is not an event (did you mean approve?)`,
		`webhooks[2].events: "done" is not an event`,
	} {
		if !strings.Contains(out.String()+errb.String(), want) {
			t.Errorf("config check does not say %q:\n%s%s", want, out.String(), errb.String())
		}
	}
}
