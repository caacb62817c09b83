package state

import (
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// maxNameLen bounds user, role and platform id lengths in bytes.
const maxNameLen = 128

var fold = cases.Fold()

// NormName is the form user and role names are stored and compared in:
// Unicode NFKC (so a full-width "ａｌｉｃｅ" is "alice"), trimmed, without a
// leading "@", case-folded. It does not refuse anything; CheckName does.
func NormName(s string) string {
	s = norm.NFKC.String(strings.TrimSpace(s))
	s = strings.TrimSpace(strings.TrimPrefix(s, "@"))
	return fold.String(s)
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
