package slack_test

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"opsbot/bot/slack"
	"opsbot/bot/slack/slackfake"
	"opsbot/templates"
	"opsbot/templates/templatestest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// marshal encodes like Slack shows it: no HTML escaping of & < >.
func marshal(v any, indent string) []byte {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", indent)
	_ = enc.Encode(v)
	return []byte(strings.TrimSuffix(b.String(), "\n"))
}

func toMaps(t *testing.T, v any) []map[string]any {
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGoldenBlocks renders every template's golden message (from the
// templates package's golden files) as Block Kit and compares the JSON.
func TestGoldenBlocks(t *testing.T) {
	mention := func(name string) string {
		if name == "alice" {
			return "<@U0ALICE>"
		}
		return ""
	}
	for _, c := range templatestest.Golden(t) {
		f, m := c.Name, c.Msg
		blocks := slack.Blocks(m, mention, true)
		if p := slackfake.CheckBlocks(toMaps(t, blocks)); len(p) > 0 {
			t.Errorf("%s breaks Block Kit limits: %v", f, p)
		}
		got := marshal(blocks, "  ")
		path := filepath.Join("testdata", f+".blocks.golden")
		if *update {
			os.WriteFile(path, append(got, '\n'), 0o644)
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./bot/slack -update)", err)
		}
		if string(want) != string(got)+"\n" {
			t.Errorf("%s differs (run go test ./bot/slack -update and review):\n%s", path, got)
		}
	}
}

func TestBlocksStayWithinLimits(t *testing.T) {
	m := templates.Message{Title: strings.Repeat("标题", 200), Body: strings.Repeat("line of output\n", 500), Context: strings.Repeat("c", 5000)}
	for i := 0; i < 45; i++ {
		m.Fields = append(m.Fields, templates.Field{Label: "field", Value: strings.Repeat("v", 2500)})
	}
	for i := 0; i < 30; i++ {
		m.Buttons = append(m.Buttons, templates.Button{Label: strings.Repeat("按钮", 60), Value: "/ops approve T-1#1"})
	}
	m.Buttons = append(m.Buttons, templates.Button{Label: "too long", Value: strings.Repeat("x", 2100)})
	blocks := toMaps(t, slack.Blocks(m, nil, true))
	if p := slackfake.CheckBlocks(blocks); len(p) > 0 {
		t.Fatalf("limits broken: %v", p)
	}
	raw, _ := json.Marshal(blocks)
	if strings.Contains(string(raw), strings.Repeat("x", 2100)) {
		t.Fatal("a button value over 2000 characters was sent")
	}
	if !strings.Contains(string(raw), "opsbot_actions") {
		t.Fatal("the actions block was dropped")
	}
}

func TestUserTextCannotInjectMentions(t *testing.T) {
	m := templates.Message{Title: "t", Fields: []templates.Field{{Label: "impact", Value: "<!channel> & <@U123>"}, {Label: "申请人 Requester", Value: "alice"}}}
	s := string(marshal(slack.Blocks(m, func(n string) string {
		if n == "alice" {
			return "<@U0ALICE>"
		}
		return ""
	}, true), ""))
	if strings.Contains(s, "<!channel>") || !strings.Contains(s, `&lt;!channel&gt; &amp; &lt;@U123&gt;`) {
		t.Fatalf("user text not escaped: %s", s)
	}
	if !strings.Contains(s, "<@U0ALICE>") {
		t.Fatalf("mapped user not mentioned: %s", s)
	}
}

// TestDestructiveButtonAsksFirst: a button that cannot be taken back
// carries Slack's confirm dialog, so the press is sent only once confirmed.
func TestDestructiveButtonAsksFirst(t *testing.T) {
	m := templates.Message{Kind: "ticket", Title: "T-1", Ticket: "T-1", Buttons: []templates.Button{
		{Label: "回滚 Rollback", Value: "/ops rollback T-1#5 confirm", Unconfirmed: "/ops rollback T-1#5", Style: "danger",
			Confirm: "确定回滚 T-1？ · Roll back T-1?"},
		{Label: "重试 Retry", Value: "/ops retry T-1#5"}}}
	raw := string(marshal(slack.Blocks(m, nil, true), ""))
	if strings.Count(raw, `"deny":{`) != 1 || !strings.Contains(raw, "Roll back T-1?") || !strings.Contains(raw, `"value":"/ops rollback T-1#5 confirm"`) {
		t.Fatalf("blocks %s", raw)
	}
}

// Golden files show times in UTC, whatever the host's zone.
func init() { templates.SetZone(time.UTC) }
