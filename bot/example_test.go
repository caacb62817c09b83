package bot_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"opsbot/bot"
)

// TestExampleConfigRunsTheDemo starts the bot on the shipped example
// config (what `make run` embeds) with its demo scripts, and walks a
// go-live from request to done through the local chat.
func TestExampleConfigRunsTheDemo(t *testing.T) {
	data, err := os.ReadFile("../opsbot.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("..")
	cfg, err := bot.ParseConfig(data, root)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.State.Path = filepath.Join(t.TempDir(), "demo.db")
	if errs := cfg.Check([]string{"script"}); len(errs) > 0 {
		t.Fatal(errs)
	}
	b, err := bot.New(context.Background(), bot.Options{Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	say := func(user, text string) string {
		r := b.Handle(context.Background(), bot.Incoming{Platform: "local", UserID: user, Name: user, Text: text})
		return r[0].Title
	}
	mustContain(t, say("alice", `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" hotfix=true`), "T-1 submitted")
	mustContain(t, say("bob", "/ops approve T-1"), "T-1 approve")
	mustContain(t, say("dave", "/ops approve T-1"), "T-1 approve")
	deadline := time.Now().Add(15 * time.Second)
	for {
		tk, _ := b.Store().Get(context.Background(), "T-1")
		if tk.Stage == "verify" {
			if !strings.Contains(tk.Results["deploy"].Output, "deploying payments v1.4.2") || tk.Outputs["deployed_version"] != "v1.4.2" {
				t.Fatalf("demo deploy: %+v %v", tk.Results["deploy"], tk.Outputs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stuck in %s: %+v", tk.Stage, tk.Results)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustContain(t, say("carol", "/ops approve T-1"), "T-1 approve")
	tk, _ := b.Store().Get(context.Background(), "T-1")
	if tk.Stage != "done" {
		t.Fatalf("stage %s", tk.Stage)
	}
	mustContain(t, say("dave", "/ops rollback T-1 confirm"), "T-1 rollback")
	for deadline = time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if tk, _ = b.Store().Get(context.Background(), "T-1"); tk.Stage == "rolled_back" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollback stuck in %s", tk.Stage)
		}
	}
	mustContain(t, tk.Results["rolling_back"].Output, "rolling back payments from v1.4.2")
}
