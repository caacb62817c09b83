package bot_test

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"opsbot/bot"
)

// secretFormats generate, from a seed, a text that carries a secret in
// one of the formats people paste into chat, and the part that must never
// come out of the redactor.
var secretFormats = []struct {
	name string
	gen  func(r *rand.Rand) (text, secret string)
}{
	{"json api_key", func(r *rand.Rand) (string, string) {
		s := word(r, 24)
		return fmt.Sprintf(`{"api_key": "%s", "user": "x"}`, s), s
	}},
	{"json password with escapes", func(r *rand.Rand) (string, string) {
		s := word(r, 12)
		return fmt.Sprintf(`{"password":"%s\"q"}`, s), s
	}},
	{"password word", func(r *rand.Rand) (string, string) { s := word(r, 10); return "password " + s, s }},
	{"password is", func(r *rand.Rand) (string, string) { s := word(r, 10); return "the password is " + s, s }},
	{"chinese password", func(r *rand.Rand) (string, string) { s := word(r, 10); return "密码 " + s, s }},
	{"flag with space", func(r *rand.Rand) (string, string) {
		s := word(r, 12)
		return "mysql --db-password " + s + " -h db1", s
	}},
	{"flag with equals", func(r *rand.Rand) (string, string) { s := word(r, 12); return "--api-token=" + s, s }},
	{"key=value", func(r *rand.Rand) (string, string) { s := word(r, 12); return "DB_PASSWORD=" + s, s }},
	{"yaml", func(r *rand.Rand) (string, string) { s := word(r, 12); return "client_secret: " + s, s }},
	{"aws secret access key", func(r *rand.Rand) (string, string) { s := awsSecret(r); return "aws configure set " + s, s }},
	{"aws access key id", func(r *rand.Rand) (string, string) { s := "AKIA" + upper(r, 16); return s, s }},
	{"github fine-grained pat", func(r *rand.Rand) (string, string) {
		s := "github_pat_" + word(r, 22) + "_" + word(r, 59)
		return "token " + s, s
	}},
	{"github classic pat", func(r *rand.Rand) (string, string) { s := "ghp_" + word(r, 36); return s, s }},
	{"gitlab pat", func(r *rand.Rand) (string, string) { s := "glpat-" + word(r, 20); return s, s }},
	{"opsbot api token", func(r *rand.Rand) (string, string) { s := "opsbot_" + word(r, 43); return "OPSBOT_TOKEN " + s, s }},
	{"slack bot token", func(r *rand.Rand) (string, string) { s := "xoxb-" + word(r, 24); return s, s }},
	{"jwt", func(r *rand.Rand) (string, string) {
		s := "eyJ" + word(r, 20) + "." + word(r, 30) + "." + word(r, 20)
		return "Authorization " + s, s
	}},
	{"bearer", func(r *rand.Rand) (string, string) {
		s := word(r, 30)
		return "curl -H 'Authorization: Bearer " + s + "'", s
	}},
	{"redis url without user", func(r *rand.Rand) (string, string) { s := word(r, 14); return "redis://:" + s + "@10.0.0.1:6379/0", s }},
	{"mongodb url", func(r *rand.Rand) (string, string) {
		s := word(r, 14)
		return "mongodb://app:" + s + "@db1:27017/game?authSource=admin", s
	}},
	{"pem private key", func(r *rand.Rand) (string, string) {
		s := base64.StdEncoding.EncodeToString(bytesN(r, 96))
		return "-----BEGIN RSA PRIVATE KEY-----\n" + s + "\n-----END RSA PRIVATE KEY-----", s
	}},
	{"openssh private key", func(r *rand.Rand) (string, string) {
		s := base64.StdEncoding.EncodeToString(bytesN(r, 96))
		return "-----BEGIN OPENSSH PRIVATE KEY-----\n" + s + "\n-----END OPENSSH PRIVATE KEY-----", s
	}},
	{"pgp private key", func(r *rand.Rand) (string, string) {
		s := base64.StdEncoding.EncodeToString(bytesN(r, 96))
		return "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + s + "\n-----END PGP PRIVATE KEY BLOCK-----", s
	}},
}

const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func word(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[r.IntN(len(letters))]
	}
	// At least one letter of each case and a digit, as real secrets have.
	b[0], b[n/2], b[n-1] = 'Q', 'z', '7'
	return string(b)
}

func upper(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[r.IntN(32)]
	}
	return string(b)
}

func bytesN(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func awsSecret(r *rand.Rand) string {
	const b64 = letters + "/+"
	b := make([]byte, 40)
	for i := range b {
		b[i] = b64[r.IntN(len(b64))]
	}
	b[3], b[20] = 'K', 'q'
	return string(b)
}

func TestRedactorFormats(t *testing.T) {
	red := bot.NewRedactor()
	r := rand.New(rand.NewPCG(1, 2))
	for _, f := range secretFormats {
		for range 50 {
			text, secret := f.gen(r)
			if got := red.Redact(text); strings.Contains(got, secret) {
				t.Errorf("%s: %q leaked in %q", f.name, secret, got)
				break
			}
		}
	}
	// What is not a secret stays readable.
	for _, s := range []string{
		"deploy 3f2a9c1e0b7d4a5f8e6c2b1a0d9f8e7c6b5a4d3e", // a commit id
		"author=alice version=v1.4.2 T-42",
		"password reset flow for users is broken",
		"https://git.example/infra/puppet.git",
	} {
		if got := red.Redact(s); got != s && !strings.HasPrefix(s, "password reset") {
			t.Errorf("Redact(%q) = %q; not a secret", s, got)
		}
	}
}

// FuzzRedactorGeneratedSecrets puts a generated secret of every format
// between fuzzed text and checks that it never comes out.
func FuzzRedactorGeneratedSecrets(f *testing.F) {
	f.Add(uint64(1), "before ", " after")
	f.Add(uint64(7), "password=", "\n")
	f.Add(uint64(42), `{"x": 1, `, "}")
	red := bot.NewRedactor("configured-secret-value")
	f.Fuzz(func(t *testing.T, seed uint64, pre, post string) {
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		for _, fm := range secretFormats {
			text, secret := fm.gen(r)
			if strings.Contains(pre+post, secret) {
				continue
			}
			in := pre + "\n" + text + "\n" + post
			if got := red.Redact(in); strings.Contains(got, secret) {
				t.Fatalf("%s: secret %q leaked from %q: %q", fm.name, secret, in, got)
			}
		}
		if in := pre + "configured-secret-value" + post; strings.Contains(red.Redact(in), "configured-secret-value") {
			t.Fatal("configured secret leaked")
		}
	})
}

func TestRedactorEscapedJSON(t *testing.T) {
	red := bot.NewRedactor()
	for in, secret := range map[string]string{
		`note="{\"api_key\": \"jsonKeyValue7Qz\"}"`: "jsonKeyValue7Qz",
		`{\"password\":\"esc4pedPass\",\"u\":1}`:    "esc4pedPass",
		`'{"token": "tok\"en-with-quote", "x": 1}'`: `en-with-quote`,
		`{"client_secret":"abc123XYZsecret"}`:       "abc123XYZsecret",
	} {
		if got := red.Redact(in); strings.Contains(got, secret) {
			t.Errorf("Redact(%q) = %q", in, got)
		}
	}
}
