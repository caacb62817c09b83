package bot_test

import (
	"bytes"
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
	if !strings.Contains(out.String(), "flows: cluster-change, golive, restart") {
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
	if !strings.Contains(errb.String(), "field listen_port not found") {
		t.Errorf("unknown key not named: %s", errb.String())
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
