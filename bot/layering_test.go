package bot_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering: the engine imports no presentation, and the transports
// get narrow interfaces rather than the state store.
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "opsbot/flows").Output()
	if err != nil {
		t.Fatal("go list:", err)
	}
	if strings.Contains(string(out), "opsbot/templates\n") || strings.Contains(string(out), "opsbot/present\n") {
		t.Fatalf("flows depends on presentation:\n%s", out)
	}
	for _, pkg := range []string{"opsbot/bot/slack", "opsbot/bot/wecom", "opsbot/bot/local", "opsbot/bot/endpoint"} {
		out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, pkg).Output()
		if err != nil {
			t.Fatal(pkg, err)
		}
		if strings.Contains(string(out)+"\n", "opsbot/state\n") {
			t.Errorf("%s imports opsbot/state", pkg)
		}
	}
}
