package bot

import (
	"encoding"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"opsbot/flows"
)

// The config's own language: every problem of a file is named by its key
// path and line ("slack.listn (line 12)"), with the key it most likely
// meant or the kind of value it wants and an example. One problem does not
// hide the others.

// ConfigError is one problem of a configuration file.
type ConfigError struct {
	Path string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", e.Path, e.Line, e.Msg)
	}
	return e.Path + ": " + e.Msg
}

var (
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	envName         = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// checkTree walks the YAML document against the type it decodes into.
func checkTree(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default
	}
	bad := func(node *yaml.Node, format string, a ...any) {
		*errs = append(*errs, &ConfigError{Path: strings.TrimPrefix(path, "."), Line: node.Line, Msg: fmt.Sprintf(format, a...)})
	}
	// Types that read themselves (durations, custom forms): let them say.
	if reflect.PointerTo(t).Implements(textUnmarshaler) || reflect.PointerTo(t).Implements(yamlUnmarshaler) {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad(n, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			bad(n, "want a mapping of keys (e.g. key: value), not %s", describe(n))
			return
		}
		fields := yamlFields(t)
		var names []string
		for k := range fields {
			names = append(names, k)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			f, ok := fields[k.Value]
			if !ok {
				hint := ""
				if c := flows.Closest(k.Value, names); c != "" {
					hint = fmt.Sprintf("; did you mean %q?", c)
				}
				*errs = append(*errs, &ConfigError{Path: strings.TrimPrefix(path+"."+k.Value, "."), Line: k.Line,
					Msg: "unknown key" + hint})
				continue
			}
			sub := path + "." + k.Value
			if strings.HasSuffix(k.Value, "_env") && v.Kind == yaml.ScalarNode && v.Value != "" && !envName.MatchString(v.Value) {
				// Never echo it: it may be the secret itself, pasted here.
				*errs = append(*errs, &ConfigError{Path: strings.TrimPrefix(sub, "."), Line: v.Line,
					Msg: "want the name of an environment variable (e.g. OPSBOT_SLACK_BOT_TOKEN), not its value; the value is not shown"})
				continue
			}
			checkTree(v, f, sub, errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			bad(n, "want a list (e.g. [a, b]), not %s", describe(n))
			return
		}
		for i, e := range n.Content {
			checkTree(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			bad(n, "want a mapping (e.g. key: value), not %s", describe(n))
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkTree(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value, errs)
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || (n.Value != "true" && n.Value != "false") || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			bad(n, "want true or false, not %s", describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad(n, "want a whole number such as 60, not %s", describe(n))
		}
	case reflect.Float32, reflect.Float64:
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			bad(n, "want a number such as 0.8, not %s", describe(n))
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			bad(n, "want a single value, not %s", describe(n))
		}
	}
}

// describe names a node for a message without echoing long values.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len([]rune(v)) > 40 {
		v = string([]rune(v)[:40]) + "…"
	}
	return fmt.Sprintf("%q", v)
}

// yamlFields maps the YAML keys of a struct (inline structs included) to
// their types.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range yamlFields(ft) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// lineRef finds "line N" in a YAML parser's message.
var lineRef = regexp.MustCompile(`line (\d+)`)

// checkSections reads a file that does not parse one top-level section
// at a time (a section starts at a line with a key at column 0): a
// section with a syntax error is told with its line in the file, and
// every other section is checked as usual.
func checkSections(data []byte) []error {
	lines := strings.SplitAfter(string(data), "\n")
	var starts []int
	for i, l := range lines {
		if l != "" && l[0] != ' ' && l[0] != '\t' && l[0] != '#' && l[0] != '-' && strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "---") {
			starts = append(starts, i)
		}
	}
	if len(starts) == 0 || starts[0] != 0 {
		starts = append([]int{0}, starts...)
	}
	var errs []error
	for i, from := range starts {
		to := len(lines)
		if i+1 < len(starts) {
			to = starts[i+1]
		}
		section := strings.Join(lines[from:to], "")
		var n yaml.Node
		if err := yaml.Unmarshal([]byte(section), &n); err != nil {
			msg := strings.TrimPrefix(err.Error(), "yaml: ")
			msg = lineRef.ReplaceAllStringFunc(msg, func(m string) string {
				k, _ := strconv.Atoi(strings.TrimPrefix(m, "line "))
				return fmt.Sprintf("line %d", k+from)
			})
			key, _, _ := strings.Cut(strings.TrimSpace(lines[from]), ":")
			errs = append(errs, fmt.Errorf("%s (line %d): the YAML does not parse: %s (check quotes, brackets and indentation)", key, from+1, msg))
			continue
		}
		if len(n.Content) == 0 {
			continue
		}
		shiftLines(&n, from)
		checkTree(n.Content[0], reflect.TypeFor[Config](), "", &errs)
	}
	return errs
}

// shiftLines moves a section's nodes to their lines in the whole file.
func shiftLines(n *yaml.Node, by int) {
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}
