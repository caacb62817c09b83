package bot_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/flows"
)

// readmeLine is one line of a README example: a shell command ("$ ..."),
// a person typing ("dave:  /ops ... -> what they see") or pressing a
// button ("bob:   (presses 同意 Approve on the card he was sent)").
var (
	readmeSays    = regexp.MustCompile(`^(\w+):\s+(/ops .+?)(?:\s{2,}->\s*(.*))?$`)
	readmePresses = regexp.MustCompile(`^(\w+):\s+\(presses (.+?) on `)
	ticketRef     = regexp.MustCompile(`T-\d+`)
	quoted        = regexp.MustCompile("`([^`]+)`")
)

// TestReadmeExamplesRunAsWritten runs every example block of the README
// that people type into the chat (and the shell lines among them) against
// the example configuration `make run` uses, in the README's order: each
// command is answered without an error, except where the README says it
// is refused, which must then be a refusal.
func TestReadmeExamplesRunAsWritten(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("..")
	dir := t.TempDir()
	logs := filepath.Join(dir, "tdev-logs")
	os.MkdirAll(logs, 0o755)
	os.WriteFile(filepath.Join(logs, "game.log"), []byte("a demo log line\n"), 0o644)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	example, err := os.ReadFile("../opsbot.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example as it is, with its files moved into the test's folder.
	y := string(example)
	for old, repl := range map[string]string{
		"listen: 127.0.0.1:8080":           "listen: " + addr,
		"path: data/opsbot.db":             "path: " + filepath.Join(dir, "opsbot.db"),
		"dir: examples/scripts":            "dir: " + filepath.Join(root, "examples/scripts"),
		"backup_dir: data/cleanup-backups": "backup_dir: " + filepath.Join(dir, "cleanup-backups"),
		"root: data/tdev-logs":             "root: " + logs,
	} {
		if !strings.Contains(y, old) {
			t.Fatalf("the example config no longer has %q", old)
		}
		y = strings.Replace(y, old, repl, 1)
	}
	cfgPath := filepath.Join(dir, "opsbot.yaml")
	os.WriteFile(cfgPath, []byte(y), 0o600)
	t.Setenv("OPSBOT_ADMIN_TOKEN", "readme-admin-token-0123456789abcdef")
	cfg, err := bot.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if errs := cfg.Check(cfg.Executors()); len(errs) > 0 {
		t.Fatal(errs)
	}
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	b, err := bot.New(context.Background(), bot.Options{Config: cfg, Now: func() time.Time { return now },
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	ran := runDocExamples(t, b, readme, func(line, cmd string) {
		args := strings.Fields(cmd)
		if len(args) >= 2 && args[0] == "inventory" {
			args = append(append(args[:2:2], "-config", cfgPath), args[2:]...)
			for i := 4; i < len(args); i++ {
				args[i] = filepath.Join(root, args[i])
			}
		}
		var out, errb bytes.Buffer
		if code := bot.Main(args, nil, &out, &errb); code != 0 {
			t.Fatalf("README: %s: exit %d\n%s%s", line, code, out.String(), errb.String())
		}
	})
	ctx := context.Background()
	t.Logf("%d README example lines ran", ran)
	if ran < 10 {
		t.Fatalf("only %d README example lines ran: did the examples' form change?", ran)
	}
	if tk, err := b.Store().Get(ctx, "T-1"); err != nil || tk.Stage != flows.StageDone {
		t.Fatalf("the README's go-live ended in %s (%v)", tk.Stage, err)
	}
}

// runDocExamples runs a document's example blocks through the bot as the
// people in them would, in order, and returns how many lines ran: a line
// "name: /ops ..." is typed (its answer must not be a refusal unless the
// text after "->" starts with "refused"); "name: (presses LABEL on ..."
// presses the newest such button in that person's messages; "$ go run .
// ARGS" goes to shell. After each line, an action it set going finishes
// first, as a person reading its result would wait.
func runDocExamples(t *testing.T, b *bot.Bot, doc []byte, shell func(line, cmd string)) int {
	t.Helper()
	ctx := context.Background()
	settle := func(text string) {
		id := ticketRef.FindString(text)
		for deadline := time.Now().Add(20 * time.Second); id != ""; time.Sleep(20 * time.Millisecond) {
			tk, err := b.Store().Get(ctx, id)
			f, ok := b.Engine().Flow(tk.Flow)
			if err != nil || !ok {
				break
			}
			st, _ := f.Stage(tk.Stage)
			if (st == nil || st.Kind != flows.KindAction) && tk.Stage != flows.StageRollingBack {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s stuck in %s after %q", id, tk.Stage, text)
			}
		}
		b.DeliverDue(ctx)
	}
	ran := 0
	inBlock := false
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "```") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			continue
		}
		line = strings.TrimRight(line, " ")
		if cmd, ok := strings.CutPrefix(line, "$ go run . "); ok {
			cmd, _, _ = strings.Cut(cmd, "#")
			shell(line, cmd)
			ran++
			continue
		}
		if m := readmePresses.FindStringSubmatch(line); m != nil {
			user, label := m[1], m[2]
			entries, _ := b.Local().Inbox(user, 0)
			value := ""
			for _, e := range entries {
				if e.Msg == nil {
					continue
				}
				for _, btn := range e.Msg.Buttons {
					if strings.Contains(btn.Label, label) && !btn.Disabled {
						value = btn.Value
					}
				}
			}
			if value == "" {
				t.Fatalf("example: %s: %s has no card with %q", line, user, label)
			}
			r := b.Handle(ctx, bot.Incoming{Platform: "local", UserID: user, Name: user, Text: value, Click: true})
			if len(r) == 0 || r[0].Kind == "error" {
				t.Fatalf("example: %s: %+v", line, r)
			}
			settle(value)
			ran++
			continue
		}
		m := readmeSays.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		user, text, want := m[1], strings.TrimSpace(m[2]), m[3]
		r := b.Handle(ctx, bot.Incoming{Platform: "local", UserID: user, Name: user, Text: text})
		if len(r) == 0 {
			t.Fatalf("example: %s: no answer", line)
		}
		refused := r[0].Kind == "error" || strings.HasPrefix(r[0].Title, "⚠️")
		if strings.HasPrefix(want, "refused") != refused {
			t.Fatalf("example: %s\nanswered %q %q", line, r[0].Title, r[0].Body)
		}
		// What the document quotes (`...`) after "->" is what the person
		// sees: in the answer's titles, fields or text.
		var seen strings.Builder
		for _, m := range r {
			seen.WriteString(m.Title + "\n" + m.Body + "\n")
			for _, f := range m.Fields {
				seen.WriteString(f.Label + ": " + f.Value + "\n")
			}
		}
		for _, q := range quoted.FindAllStringSubmatch(want, -1) {
			if !strings.Contains(seen.String(), q[1]) {
				t.Fatalf("example: %s\nthe answer does not show %q:\n%s", line, q[1], seen.String())
			}
		}
		settle(text + " " + r[0].Title)
		ran++
	}
	return ran
}
