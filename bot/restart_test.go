package bot_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/state"
	"opsbot/templates"
)

// proc is an opsbot binary running on a config in dir.
type proc struct {
	t    testing.TB
	cmd  *exec.Cmd
	url  string
	logs *bottest.SyncBuffer
}

func buildBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "opsbot")
	out, err := exec.Command("go", "build", "-o", bin, "opsbot").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startProc(t *testing.T, bin, cfg string) *proc {
	t.Helper()
	p := &proc{t: t, logs: &bottest.SyncBuffer{}}
	p.cmd = exec.Command(bin, "run", "-config", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	return p.start(cfg)
}

// start starts the prepared command and waits until it serves.
func (p *proc) start(cfg string) *proc {
	t := p.t
	t.Helper()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
	data, _ := os.ReadFile(cfg)
	for _, l := range strings.Split(string(data), "\n") {
		if a, ok := strings.CutPrefix(l, "listen: "); ok {
			p.url = "http://" + a
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(p.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("bot did not start: %v\n%s", err, p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// try sends a command and returns the replies, or the error when the
// bot did not answer (it may have been killed).
func (p *proc) try(user, text string) ([]templates.Message, error) {
	return bottest.Post(p.url+"/api/command", user, text)
}

func (p *proc) say(user, text string) []templates.Message {
	p.t.Helper()
	out, err := p.try(user, text)
	if err != nil {
		p.t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) stage(id string) string {
	card := bottest.Card(p.say("alice", "/ops show "+id))
	return card.Stage[:strings.Index(card.Stage, "@")]
}

// TestSIGKILLDuringActionDoesNotRepeatIt kills the bot while a deploy
// script runs. The deploy is not safe to repeat, so the restarted bot marks
// it interrupted with a retry prompt instead of running it again; nothing
// recorded before the kill is lost. A step marked safe_to_repeat is resumed.
func TestSIGKILLDuringActionDoesNotRepeatIt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	bottest.WriteScripts(t, dir)
	cfg := filepath.Join(dir, "opsbot.yaml")
	yaml := strings.Replace(bottest.ConfigYAML(dir, `
flows:
  - name: restart
    fields: [{name: service, required: true}]
    locks: ["service:{service}"]
    stages:
      - {name: approval, kind: approval, roles: [ops]}
      - {name: restart, kind: action, executor: script, params: {command: restart.sh}, safe_to_repeat: true}
`), "listen: 127.0.0.1:0", "listen: "+freePort(t), 1)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	hold := filepath.Join(dir, "scripts", "hold")
	os.WriteFile(hold, nil, 0o644)

	p := startProc(t, bin, cfg)
	p.say("alice", `/ops new golive service=payments version=v7 rollback_app=redeploy hotfix=true`)
	p.say("bob", "/ops approve T-1")
	p.say("dave", "/ops approve T-1 ship it")
	p.say("alice", "/ops new restart service=cache")
	p.say("dave", "/ops approve T-2")
	waitFor(t, "both scripts to start", func() bool { return len(bottest.Runs(dir)) == 2 })

	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	os.Remove(hold)
	time.Sleep(200 * time.Millisecond) // let the killed scripts' process group go

	p = startProc(t, bin, cfg)
	if got := p.stage("T-1"); got != "failed" {
		t.Fatalf("T-1 after restart: %s\n%s", got, p.logs)
	}
	card := bottest.Card(p.say("alice", "/ops show T-1"))
	if !strings.Contains(card.Body, "interrupted by a restart") {
		t.Fatalf("no interruption note on the card: %q", card.Body)
	}
	if _, ok := bottest.Button(card, "Retry"); !ok {
		t.Fatalf("interrupted card has no Retry: %+v", card.Buttons)
	}
	waitFor(t, "the safe restart step to be resumed", func() bool { return p.stage("T-2") == "done" })
	runs := bottest.Runs(dir)
	deploys := 0
	for _, r := range runs {
		if strings.HasPrefix(r, "deploy T-1") {
			deploys++
		}
	}
	if deploys != 1 || len(runs) != 3 {
		t.Fatalf("after restart the scripts ran %q; the deploy must not repeat, the restart must", runs)
	}

	// Retry is the person's call, and it runs the deploy once more.
	p.say("alice", "/ops retry T-1")
	waitFor(t, "the retried deploy", func() bool { return p.stage("T-1") == "verify" })

	// Stop cleanly and read the history: nothing before the kill was lost.
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()
	st, err := state.Open(state.Options{Path: filepath.Join(dir, "opsbot.db"), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	evs, _ := st.Events(context.Background(), "T-1")
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if got := strings.Join(types, " "); got != "submit approve approve interrupt retry succeed" {
		t.Fatalf("T-1 history %q", got)
	}
	if evs[2].Comment != "ship it" || evs[2].Actor != "dave" {
		t.Fatalf("approval before the kill lost its details: %+v", evs[2])
	}
}
