package flows

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"

	"bytes"
	"go.yaml.in/yaml/v3"
)

//go:embed builtin/*.yaml
var builtinFS embed.FS

// Builtin returns fresh copies of the built-in flow declarations (not yet
// validated), sorted by name.
func Builtin() ([]*Flow, error) {
	names, err := fs.Glob(builtinFS, "builtin/*.yaml")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []*Flow
	for _, n := range names {
		data, err := builtinFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		f := &Flow{}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(f); err != nil {
			return nil, fmt.Errorf("built-in flow %s: %w", n, err)
		}
		out = append(out, f)
	}
	return out, nil
}

// Clone is a copy of a flow as declared, to be validated on its own: a
// running engine keeps using the validated original while a
// configuration is checked again.
func (f *Flow) Clone() (*Flow, error) {
	data, err := yaml.Marshal(f)
	if err != nil {
		return nil, err
	}
	out := &Flow{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		return nil, fmt.Errorf("flow %s: %w", f.Name, err)
	}
	return out, nil
}
