package bot_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"opsbot/bot/bottest"
	"opsbot/bot/slack/slackfake"
	"opsbot/state"
)

// TestSIGKILLLoopLosesAndDuplicatesNothing kills the bot with SIGKILL at
// a random moment, five times, while commands stream in through the local
// API (answered after they are applied) and through Slack (answered once
// recorded, applied after the ack). After a final restart every command
// that was answered has exactly one ticket: none lost, none doubled.
func TestSIGKILLLoopLosesAndDuplicatesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	bin := buildBinary(t)
	fake := slackfake.New(t)
	fake.AddUser(slackfake.User{ID: "U0ALICE", Name: "alice.w", Email: "alice@example.com"})
	dir := t.TempDir()
	bottest.WriteScripts(t, dir)
	cfg := filepath.Join(dir, "opsbot.yaml")
	port, slackPort := freePort(t), freePort(t)
	yaml := strings.Replace(bottest.ConfigYAML(dir, fmt.Sprintf(`
slack: {mode: http, listen: %q, api_url: %q}
flows:
  - name: note
    fields: [{name: service, required: true}]
    locks: ["service:{service}"]
    stages: [{name: approval, kind: approval, roles: [ops]}]
`, slackPort, fake.APIURL())), "listen: 127.0.0.1:0", "listen: "+port, 1)
	os.WriteFile(cfg, []byte(yaml), 0o644)
	env := append(os.Environ(), "OPSBOT_SLACK_BOT_TOKEN="+fake.BotToken, "OPSBOT_SLACK_SIGNING_SECRET="+signingSecret)

	var mu sync.Mutex
	acked := map[string]string{} // service -> how it was answered
	const runs = 5
	rng := rand.New(rand.NewPCG(7, 11))
	sent := 0
	for run := 0; run < runs; run++ {
		p := startProcEnv(t, bin, cfg, env)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil && i < 400; i++ {
					svc := fmt.Sprintf("r%d-w%d-%d", run, w, i)
					mu.Lock()
					sent++
					mu.Unlock()
					if w%2 == 0 {
						if msgs, err := p.try("alice", "/ops new note service="+svc); err == nil && len(msgs) > 0 && strings.Contains(msgs[0].Title, "已提交") {
							mu.Lock()
							acked[svc] = "local"
							mu.Unlock()
						}
						continue
					}
					body := []byte(fake.SlashForm("U0ALICE", "C0OPS", "new note service="+svc).Encode())
					if code, _, err := slackfake.Deliver("http://"+slackPort+"/slack/commands", "application/x-www-form-urlencoded", signingSecret, time.Now(), body); err == nil && code == 200 {
						mu.Lock()
						acked[svc] = "slack"
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(300+rng.IntN(1200)) * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
		cancel()
		wg.Wait()
	}
	count := func() map[string]int {
		st, err := state.Open(state.Options{Path: filepath.Join(dir, "opsbot.db"), ReadOnly: true, OpenTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		page, err := st.List(context.Background(), state.Index{Kind: "all"}, nil, 0, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, tk := range page.Tickets {
			n[tk.Fields["service"]]++
		}
		return n
	}
	// A clean start replays what was recorded but not yet applied, in the
	// background; give it a few starts to finish on a loaded machine.
	var n map[string]int
	for attempt := 0; attempt < 5; attempt++ {
		p := startProcEnv(t, bin, cfg, env)
		time.Sleep(time.Second)
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
		n = count()
		missing := 0
		for svc := range acked {
			if n[svc] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
	}
	lost, dup := 0, 0
	for svc, how := range acked {
		if n[svc] == 0 {
			lost++
			t.Errorf("%s (answered through %s) has no ticket", svc, how)
		}
	}
	for svc, c := range n {
		if c > 1 {
			dup++
			t.Errorf("%s has %d tickets", svc, c)
		}
	}
	t.Logf("SIGKILL loop: %d runs, %d commands sent, %d answered, %d tickets, %d lost, %d duplicated", runs, sent, len(acked), len(n), lost, dup)
	if len(acked) < 100 {
		t.Fatalf("only %d commands were answered; the load did not run", len(acked))
	}
}

func startProcEnv(t *testing.T, bin, cfg string, env []string) *proc {
	t.Helper()
	p := &proc{t: t, logs: &bottest.SyncBuffer{}}
	p.cmd = exec.Command(bin, "run", "-config", cfg)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	return p.start(cfg)
}
