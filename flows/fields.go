package flows

import (
	"fmt"
	"sort"
	"strings"

	"github.com/agnivade/levenshtein"
)

// CheckFields validates raw field values against the flow: unknown names
// are refused with a "did you mean", every bad value is named, and missing
// required fields are listed. It returns the values normalized, with
// defaults filled in.
func (f *Flow) CheckFields(raw map[string]string) (map[string]string, error) {
	out := map[string]string{}
	var problems []string
	byField := map[string]string{}
	names := make([]string, 0, len(f.Fields))
	for _, fd := range f.Fields {
		names = append(names, fd.Name)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fd := f.Field(strings.ToLower(k))
		if fd == nil {
			msg := fmt.Sprintf("未知字段 unknown field %q%s", k, suggest(k, names))
			problems = append(problems, msg)
			byField[k] = msg
			continue
		}
		if fd.Computed {
			msg := fmt.Sprintf("字段 %s 由 opsbot 计算，请不要填写 · %s is computed by opsbot; leave it out", fd.Name, fd.Name)
			problems = append(problems, msg)
			byField[fd.Name] = msg
			continue
		}
		v, err := fd.CheckValue(raw[k])
		if err != nil {
			problems = append(problems, err.Error())
			byField[fd.Name] = err.Error()
			continue
		}
		if v != "" {
			out[fd.Name] = v
		}
	}
	var missing []string
	for _, fd := range f.Fields {
		if _, ok := out[fd.Name]; ok {
			continue
		}
		if _, bad := byField[fd.Name]; bad {
			continue // already reported
		}
		if fd.Default != "" {
			out[fd.Name] = fd.Default
		} else if fd.Required {
			missing = append(missing, fd.Name)
		}
	}
	if len(missing) > 0 {
		problems = append(problems, "缺少必填字段 missing required fields: "+strings.Join(missing, ", "))
		for _, m := range missing {
			byField[m] = "必填 required"
		}
	}
	if len(problems) > 0 {
		return nil, &UserError{Code: "bad_fields", Message: strings.Join(problems, "\n"), Hint: "例 e.g. " + f.Example(), Fields: byField}
	}
	return out, nil
}

// suggest returns ` (did you mean "x"?)` for the closest candidate, or "".
func suggest(word string, candidates []string) string {
	if c := Closest(word, candidates); c != "" {
		return fmt.Sprintf(" (是不是 did you mean %q?)", c)
	}
	return ""
}

// Closest returns the candidate nearest to word by edit distance, if it is
// close enough to be a typo.
func Closest(word string, candidates []string) string {
	best, bestD := "", 1<<30
	w := strings.ToLower(word)
	for _, c := range candidates {
		d := levenshtein.ComputeDistance(w, strings.ToLower(c))
		if strings.HasPrefix(strings.ToLower(c), w) && len(w) >= 2 {
			d = min(d, 1)
		}
		if d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= max(2, len(w)/3) {
		return best
	}
	return ""
}
