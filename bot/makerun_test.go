package bot_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"opsbot/bot/bottest"
)

// Ctrl-C in the terminal that runs `make run` (SIGINT to the whole
// foreground process group, as a terminal sends it) stops the bot, which
// exits 0, so make reports no error.
func TestMakeRunStopsOnCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the bot with make")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatal("make is not installed")
	}
	dir := t.TempDir()
	bottest.WriteScripts(t, dir)
	cfg := filepath.Join(dir, "opsbot.yaml")
	if err := os.WriteFile(cfg, []byte(bottest.ConfigYAML(dir, "")), 0o600); err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("..")
	out := &bottest.SyncBuffer{}
	cmd := exec.Command("make", "--no-print-directory", "-C", root, "run", "ARGS=-config "+cfg)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(3 * time.Minute) // the build comes first
	for !strings.Contains(out.String(), "opsbot serving") {
		select {
		case err := <-done:
			t.Fatalf("make run ended before serving: %v\n%s", err, out)
		case <-deadline:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("make run did not serve:\n%s", out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	start := time.Now()
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		// make itself was interrupted too, as in a terminal: it ends by
		// the signal (the shell shows ^C); what must not be there is
		// make's error for a recipe that failed ("make: *** ... Error 1").
		if (err != nil && err.Error() != "signal: interrupt") || strings.Contains(out.String(), "make: ***") {
			t.Fatalf("Ctrl-C under make run: %v\n%s", err, out)
		}
		t.Logf("stopped %s after Ctrl-C", time.Since(start).Round(time.Millisecond))
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("make run still runs 30 s after Ctrl-C:\n%s", out)
	}
	if !strings.Contains(out.String(), "shutting down") {
		t.Fatalf("the bot did not shut down cleanly:\n%s", out)
	}
}
