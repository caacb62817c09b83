// Package templatestest gives other packages' tests the neutral message of
// every template golden case, so each platform's renderer is checked
// against all of them.
package templatestest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"opsbot/templates"
)

// Case is one golden case: its name and its neutral message.
type Case struct {
	Name string
	Msg  templates.Message
}

// Golden reads the neutral messages from templates/testdata/*.golden.
func Golden(t testing.TB) []Case {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(here), "..", "testdata", "*.golden"))
	if len(files) < 20 {
		t.Fatalf("found %d template golden files", len(files))
	}
	var out []Case
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		neutral := strings.SplitN(strings.SplitN(string(data), "== text ==", 2)[0], "\n", 2)[1]
		var m templates.Message
		if err := json.Unmarshal([]byte(neutral), &m); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, Case{Name: strings.TrimSuffix(filepath.Base(f), ".golden"), Msg: m})
	}
	return out
}
