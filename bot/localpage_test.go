package bot_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/bot/local"
)

// postLocal sends a command to the local chat's API as the page does.
func postLocal(t *testing.T, k *bottest.Kit, req local.CommandRequest) (int, local.CommandResponse, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := http.Post(k.URL+"/api/command", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw bytes.Buffer
	raw.ReadFrom(resp.Body)
	var out local.CommandResponse
	json.Unmarshal(raw.Bytes(), &out)
	return resp.StatusCode, out, raw.String()
}

// A command sent again with its id (its answer was lost) runs once, also
// after a restart; the page's history comes back after a restart.
func TestLocalCommandRunsOnceAndHistoryIsKept(t *testing.T) {
	dir, clock := t.TempDir(), bottest.NewClock()
	k := bottest.Start(t, dir, clock)
	req := local.CommandRequest{User: "alice", ID: "c1", Text: `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1"`}
	if code, out, raw := postLocal(t, k, req); code != 200 || out.Duplicate || !strings.Contains(bottest.Title(out.Replies), "T-1") {
		t.Fatalf("first send: %d %s", code, raw)
	}
	if code, out, raw := postLocal(t, k, req); code != 200 || !out.Duplicate || len(out.Replies) != 0 {
		t.Fatalf("the same command sent again: %d %s", code, raw)
	}
	k.Bot.Stop()
	k = bottest.Start(t, dir, clock)
	if code, out, raw := postLocal(t, k, req); code != 200 || !out.Duplicate {
		t.Fatalf("the same command sent again after a restart: %d %s", code, raw)
	}
	// The bot's own key catches it too, should the page's record be gone.
	if msgs := k.Bot.Handle(t.Context(), bottestIncoming("alice", req.Text, "alice:c1")); len(msgs) != 0 {
		t.Fatalf("a delivery with a used key ran again: %s", bottest.Title(msgs))
	}
	if _, err := k.Bot.Store().Get(t.Context(), "T-2"); err == nil {
		t.Fatal("the command ran twice: T-2 exists")
	}
	entries, _ := k.Bot.Local().Inbox("alice", 0)
	if len(entries) != 3 || entries[0].Kind != "you" || entries[0].Text != req.Text || entries[2].Msg.Ticket != "T-1" {
		t.Fatalf("alice's history after a restart: %+v", entries)
	}
	// The kept history is sealed: the state file does not hold it in clear.
	k.Bot.Stop()
	raw := readFile(t, dir+"/opsbot.db")
	for _, clear := range []string{`"kind":"you"`, `"client":"c1"`} {
		if i := bytes.Index(raw, []byte(clear)); i >= 0 {
			t.Fatalf("the chat history is in the state file in clear: ...%q...", raw[max(0, i-200):i+100])
		}
	}
}

// The page's limits and channels: an oversized body gets the limit, the
// team channels are offered, and what a person types in a channel is
// shown there to them alone.
func TestLocalPageChannelsAndLimits(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML("channels: {ops-room: {slack: C0OPS}}"))
	resp, err := http.Get(k.URL + "/api/info")
	if err != nil {
		t.Fatal(err)
	}
	var info local.Info
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if info.MaxText != 8000 || !strings.Contains(strings.Join(info.Channels, ","), "#ops-room") || !strings.Contains(strings.Join(info.Channels, ","), "#infra") || info.Boot == "" {
		t.Fatalf("info: %+v", info)
	}
	code, _, raw := postLocal(t, k, local.CommandRequest{User: "alice", Text: strings.Repeat("长", 30000)})
	if code != 413 || !strings.Contains(raw, "at most 8000 bytes") {
		t.Fatalf("oversized: %d %s", code, raw)
	}
	// The refusal is in the audit log, bounded like every refusal.
	k.Bot.FlushAudit(t.Context())
	audit := k.Say("root", "/ops audit")[0].Body
	if !strings.Contains(audit, "POST /api/command") || !strings.Contains(audit, "too_large") {
		t.Fatalf("the oversized command's refusal is not audited:\n%s", audit)
	}
	// Only the bot makes channels: typing "in" another one is refused, and
	// no inbox is made for it.
	if code, _, raw := postLocal(t, k, local.CommandRequest{User: "alice", In: "#made-up", Text: "/ops help"}); code != 400 || !strings.Contains(raw, "#infra") {
		t.Fatalf("in a channel that does not exist: %d %s", code, raw)
	}
	if e, _ := k.Bot.Local().Inbox("#made-up", 0); len(e) != 0 {
		t.Fatal("a made-up channel got an inbox")
	}
	if code, _, raw := postLocal(t, k, local.CommandRequest{User: "alice", In: "#infra", Text: "/ops help"}); code != 200 {
		t.Fatalf("in #infra: %d %s", code, raw)
	}
	seen := func(viewer string) int {
		resp, err := http.Get(k.URL + "/api/inbox?user=%23infra&viewer=" + viewer)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Entries []local.Entry }
		json.NewDecoder(resp.Body).Decode(&out)
		return len(out.Entries)
	}
	if a, b := seen("alice"), seen("bob"); a < 2 || b != 0 {
		t.Fatalf("alice sees %d of her own entries in #infra, bob %d (want none)", a, b)
	}
}

func bottestIncoming(user, text, key string) bot.Incoming {
	return bot.Incoming{Platform: "local", UserID: user, Name: user, Text: text, Key: key}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A card drawn while its step runs does not stay "running": when the step
// ends, the same card in the page shows the result and the stage the
// ticket moved to, with what that person may press there.
func TestLocalRunningCardFinishes(t *testing.T) {
	k := bottest.New(t)
	k.Touch("hold")
	k.Say("alice", `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1" hotfix=true`)
	k.Say("bob", "/ops approve T-1")
	k.Say("dave", "/ops approve T-1")
	k.WaitStage("T-1", "deploy")
	card := bottest.Card(k.Say("dave", "/ops show T-1"))
	mustContain(t, card.Title, "部署 Deploy")
	var id int64
	entries, _ := k.Bot.Local().Inbox("dave", 0)
	for _, e := range entries {
		if e.Msg != nil && e.Msg.Kind == "ticket" && e.Msg.Ticket == "T-1" {
			id = e.ID
			mustContain(t, e.Msg.Body, "running")
		}
	}
	if id == 0 {
		t.Fatalf("dave's page has no card of T-1: %+v", entries)
	}
	k.Remove("hold")
	k.WaitStage("T-1", "verify")
	k.Deliver()
	entries, _ = k.Bot.Local().Inbox("dave", 0)
	for _, e := range entries {
		if e.ID != id {
			continue
		}
		if strings.Contains(e.Msg.Body, "running") || !strings.Contains(e.Msg.Body, "deployed payments v1.4.2") ||
			!strings.Contains(e.Msg.Title, "生产验证 Production verification") {
			t.Fatalf("the card after the deploy: %q\n%s", e.Msg.Title, e.Msg.Body)
		}
		for _, b := range e.Msg.Buttons {
			if strings.Contains(b.Label, "Approve") {
				t.Fatalf("dave (ops) is offered %q at the testers' stage", b.Label)
			}
		}
		return
	}
	t.Fatal("the card is gone from dave's page")
}
