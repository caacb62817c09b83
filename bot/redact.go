package bot

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strings"

	"opsbot/bot/endpoint"
)

// Redactor removes secrets from text before it reaches a log, the audit
// log, chat or the state: configured secret values, and anything shaped
// like a secret: Slack, GitLab, GitHub (classic and fine-grained) and AWS
// keys, JWTs, bearer and basic credentials, PEM and PGP private key
// blocks, credentials in URLs (also without a user name, as in
// redis://:pass@host), and the values of secret-named settings in every
// common spelling: key=value, key: value, "key": "value" (JSON),
// "password hunter2", "--db-password x".
type Redactor struct {
	values []string
}

// NewRedactor redacts the given secret values (shorter than 4 characters
// are ignored: they would mask ordinary words) besides the patterns.
func NewRedactor(values ...string) *Redactor {
	r := &Redactor{}
	for _, v := range values {
		if len(v) >= 4 {
			r.values = append(r.values, v)
		}
	}
	// Longest first, so a secret containing another is masked whole.
	sort.Slice(r.values, func(i, j int) bool { return len(r.values[i]) > len(r.values[j]) })
	return r
}

const mask = "[REDACTED]"

// secretNames are the words that make a setting's value a secret.
const secretNames = `password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credentials?|auth`

var (
	// Whole matches are masked.
	secretPatterns = []*regexp.Regexp{
		regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|$)`),
		regexp.MustCompile(`\bxox[abposre]-[A-Za-z0-9-]{8,}`),
		regexp.MustCompile(`\bxapp-[A-Za-z0-9-]{8,}`),
		regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}`),
		regexp.MustCompile(`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`),
		regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{16,}`),
		regexp.MustCompile(`\bopsbot_[A-Za-z0-9_-]{40,}`), // opsbot's own API tokens
		regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{30,}`),
		regexp.MustCompile(`\bgithub_pat_[A-Za-z0-9_]{22,}`),
		regexp.MustCompile(`(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`),
	}
	// scheme://user:password@host keeps the scheme and user.
	urlCreds = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@`)
	// --db-password x, --token=x, -p is left alone (too short to tell).
	secretFlag = regexp.MustCompile(`(?i)(--[a-z0-9_-]*(?:` + secretNames + `)[a-z0-9_-]*)(=|[ \t]+)("[^"]*"|'[^']*'|[^\s"']+)`)
	// key=value, key: value, "key": "value" and key="quoted value".
	secretKV = regexp.MustCompile(`(?i)(\\?["']?\b[a-z0-9_.-]*(?:` + secretNames + `)[a-z0-9_.-]*\\?["']?)([ \t]*[=:：][ \t]*)(\\"(?:[^"\\]|\\[^"])*\\"|"(?:[^"\\]|\\.)*"|'[^']*'|“[^”]*”|[^\s,;&"'}\\]+)`)
	// "password hunter2", "password is hunter2", "密码 hunter2".
	secretWord = regexp.MustCompile(`(?i)(\b(?:password|passwd|passphrase|pwd)|密码|口令)([ \t]+(?:is[ \t]+)?|[ \t]*(?:是|为)[ \t]*)([^\s,;"'=:：]+)`)
)

var secretName = regexp.MustCompile(`(?i)` + secretNames)

// secretKey tells a secret setting's name from one that only looks like
// it: "author" and "authority" hold "auth" but name no secret.
func secretKey(k string) bool {
	k = strings.ToLower(k)
	k = strings.ReplaceAll(strings.ReplaceAll(k, "authority", ""), "author", "")
	return secretName.MatchString(k)
}

// hints are lower-case fragments every pattern's match contains; text
// without any of them skips the regular expressions (most text).
var hints = []string{"xox", "xapp-", "eyj", "akia", "asia", "glpat-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
	"bearer", "basic", "://", "private key", "pass", "pwd", "secret", "token", "key", "credential", "auth", "密码", "口令"}

// Redact returns s with secrets masked.
func (r *Redactor) Redact(s string) string {
	if s == "" {
		return s
	}
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, mask)
	}
	s = maskAWSSecrets(s)
	lower := strings.ToLower(s)
	if !slices.ContainsFunc(hints, func(h string) bool { return strings.Contains(lower, h) }) {
		return s
	}
	for _, re := range secretPatterns {
		s = re.ReplaceAllString(s, mask)
	}
	s = urlCreds.ReplaceAllString(s, "${1}"+mask+"@")
	s = secretWord.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretWord.FindStringSubmatch(m)
		if sub[3] == mask || strings.HasPrefix(sub[3], "[") {
			return m
		}
		return sub[1] + sub[2] + mask
	})
	for _, re := range []*regexp.Regexp{secretFlag, secretKV} {
		s = re.ReplaceAllStringFunc(s, func(m string) string {
			sub := re.FindStringSubmatch(m)
			if sub[3] == mask || !secretKey(sub[1]) {
				return m
			}
			return sub[1] + sub[2] + mask
		})
	}
	return s
}

// maskAWSSecrets masks AWS secret access keys: exactly 40 characters of
// [A-Za-z0-9/+] standing alone, with both upper- and lower-case letters
// (a git commit id, 40 lower-case hex digits, is left alone).
func maskAWSSecrets(s string) string {
	isB64 := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '/' || c == '+'
	}
	var b strings.Builder
	last := 0
	for i := 0; i < len(s); {
		if !isB64(s[i]) {
			i++
			continue
		}
		j := i
		upper, lowerc := false, false
		for j < len(s) && isB64(s[j]) {
			upper = upper || s[j] >= 'A' && s[j] <= 'Z'
			lowerc = lowerc || s[j] >= 'a' && s[j] <= 'z'
			j++
		}
		if j-i == 40 && upper && lowerc && (j == len(s) || s[j] != '=') {
			b.WriteString(s[last:i])
			b.WriteString(mask)
			last = j
		}
		i = j
	}
	if last == 0 {
		return s
	}
	b.WriteString(s[last:])
	return b.String()
}

// Truncate shortens s to n bytes for the audit log, marking the cut.
// Redact first: a secret cut in half is no longer recognized.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:endpoint.CutIndex(s, n)] + "…(truncated)"
}

// redactingHandler masks secrets in every log message and string attribute.
type redactingHandler struct {
	slog.Handler
	r *Redactor
}

func (h *redactingHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, h.r.Redact(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h *redactingHandler) attr(a slog.Attr) slog.Attr {
	switch a.Value.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.Redact(a.Value.String()))
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, h.r.Redact(err.Error()))
		}
		return slog.String(a.Key, h.r.Redact(fmt.Sprint(a.Value.Any())))
	}
	return a
}

func (h *redactingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		clean[i] = h.attr(a)
	}
	return &redactingHandler{Handler: h.Handler.WithAttrs(clean), r: h.r}
}

func (h *redactingHandler) WithGroup(name string) slog.Handler {
	return &redactingHandler{Handler: h.Handler.WithGroup(name), r: h.r}
}
