package state

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// maxNameLen bounds user, role and platform id lengths in bytes.
const maxNameLen = 128

// NormName is the form user and role names are stored and compared in:
// Unicode NFKC (so a full-width "ａｌｉｃｅ" is "alice"), trimmed, without a
// leading "@", case-folded. It does not refuse anything; CheckName does.
// It runs on every look-up, so ASCII names (nearly all) take a short path
// that gives the same result.
func NormName(s string) string {
	if isASCII(s) {
		return strings.ToLower(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "@")))
	}
	s = norm.NFKC.String(strings.TrimSpace(s))
	s = strings.TrimSpace(strings.TrimPrefix(s, "@"))
	// A Caser keeps state: one per call, never shared between goroutines.
	return cases.Fold().String(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// CheckName says what is wrong with a user name, role name or platform id
// before it is stored or used as an index key: empty, too long, or holding
// a control or format character (NUL, newlines, bidi overrides), which
// would break index scans and could disguise one person as another.
func CheckName(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%s is empty", what)
	case len(s) > maxNameLen:
		return fmt.Errorf("%s is longer than %d bytes", what, maxNameLen)
	}
	for _, r := range s {
		if r == unicode.ReplacementChar || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("%s %q holds a control character (%U)", what, s, r)
		}
	}
	return nil
}
