package bot

import (
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Redactor removes secrets from text before it reaches a log, the audit
// log or chat: Slack tokens, JWTs, bearer tokens, private keys, cloud keys,
// "password=" style values, URL credentials and configured secret values.
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

var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)`),
	regexp.MustCompile(`\bxox[abposre]-[A-Za-z0-9-]{8,}`),
	regexp.MustCompile(`\bxapp-[A-Za-z0-9-]{8,}`),
	regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}`),
	regexp.MustCompile(`\b(AKIA|ASIA)[A-Z0-9]{16}\b`),
	regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{16,}`),
	regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{30,}`),
	regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}`),
	regexp.MustCompile(`(?i)(://[^/\s:@]+:)[^@\s/]+@`),
}

// key=value, key: value and key="quoted value" for secret-looking keys.
var secretKV = regexp.MustCompile(`(?i)\b([a-z0-9_.-]*(password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|auth)[a-z0-9_.-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|“[^”]*”|[^\s,;&]+)`)

// hints are lower-case fragments every secret pattern contains; text
// without any of them skips the regular expressions (most text).
var hints = []string{"xox", "xapp-", "eyj", "akia", "asia", "glpat-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
	"bearer", "basic", "://", "private key", "pass", "pwd", "secret", "token", "key", "credential", "auth"}

// Redact returns s with secrets masked.
func (r *Redactor) Redact(s string) string {
	if s == "" {
		return s
	}
	for _, v := range r.values {
		s = strings.ReplaceAll(s, v, mask)
	}
	lower := strings.ToLower(s)
	if !slices.ContainsFunc(hints, func(h string) bool { return strings.Contains(lower, h) }) {
		return s
	}
	for _, re := range secretPatterns {
		s = re.ReplaceAllStringFunc(s, func(m string) string {
			if sub := re.FindStringSubmatch(m); len(sub) > 1 && strings.HasPrefix(sub[1], "://") {
				return sub[1] + mask + "@"
			}
			return mask
		})
	}
	return secretKV.ReplaceAllString(s, "${1}${3}"+mask)
}

// Truncate shortens s to n bytes for the audit log, marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && (s[cut]&0xC0) == 0x80 {
		cut--
	}
	return s[:cut] + "…(truncated)"
}
