package wecom_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/silenceper/wechat/v2/util"

	"opsbot/bot/wecom"
	"opsbot/templates"
	"opsbot/templates/templatestest"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func marshal(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	return b.String()
}

// TestGoldenCards renders every template's golden message (from the
// templates package's golden files) as a WeCom template card, text
// message and robot markdown, and compares them with golden files.
func TestGoldenCards(t *testing.T) {
	for _, c := range templatestest.Golden(t) {
		f, m := c.Name, c.Msg
		card := wecom.Render(m, "T-42-v3-1")
		if len(card.ButtonList) > 6 || len(card.HorizontalContentList) > 6 || utf8.RuneCountInString(card.MainTitle.Title) > 36 {
			t.Errorf("%s breaks card limits", f)
		}
		got := "== template_card ==\n" + marshal(card) + "== text ==\n" + wecom.Text(m) + "\n== robot markdown ==\n" + wecom.Markdown(m) + "\n"
		path := filepath.Join("testdata", f+".wecom.golden")
		if *update {
			os.WriteFile(path, []byte(got), 0o644)
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test ./bot/wecom -update)", err)
		}
		if string(want) != got {
			t.Errorf("%s differs (run go test ./bot/wecom -update and review):\n%s", path, got)
		}
	}
}

func TestLongTextStaysWithinLimits(t *testing.T) {
	m := templates.Message{Title: strings.Repeat("标题", 100), Body: strings.Repeat("输出", 3000)}
	if n := len(wecom.Text(m)); n > 2048 {
		t.Fatalf("text message of %d bytes", n)
	}
	if n := len(wecom.Markdown(m)); n > 4096 {
		t.Fatalf("markdown of %d bytes", n)
	}
	if !utf8.ValidString(wecom.Text(m)) {
		t.Fatal("cut inside a character")
	}
}

type refuse struct{}

func (refuse) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no network in this test")
}

// pacer records what was paced.
type pacer struct{ keys []string }

func (p *pacer) Allow(ctx context.Context, key string) (bool, time.Duration) {
	p.keys = append(p.keys, key)
	if len(p.keys)%2 == 1 {
		return false, time.Millisecond // make every send wait once
	}
	return true, 0
}

func TestEverySendIsPacedPerUser(t *testing.T) {
	p := &pacer{}
	tr := wecom.New(wecom.Config{CorpID: "ww1", AgentID: "1"}, wecom.Deps{Pace: p})
	// No API behind it (and nothing leaves the machine): the send fails
	// after pacing, which is what this checks.
	old := util.DefaultHTTPClient
	util.DefaultHTTPClient = &http.Client{Transport: refuse{}}
	defer func() { util.DefaultHTTPClient = old }()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = tr.Send(ctx, "zhangsan", templates.Message{Title: "hi"})
	if len(p.keys) != 2 || p.keys[0] != "wecom:user:zhangsan" {
		t.Fatalf("paced %v", p.keys)
	}
}

// TestDestructiveButtonAsksOnASecondCard: a card cannot ask before it
// sends, so a destructive button's key is the unconfirmed command: the
// answer asks for the confirmation.
func TestDestructiveButtonAsksOnASecondCard(t *testing.T) {
	m := templates.Message{Kind: "ticket", Title: "T-1", Ticket: "T-1", Buttons: []templates.Button{
		{Label: "回滚 Rollback", Value: "/ops rollback T-1#5 confirm", Unconfirmed: "/ops rollback T-1#5", Style: "danger",
			Confirm: "确定回滚 T-1？"}}}
	c := wecom.Render(m, "t1")
	if len(c.ButtonList) != 1 || c.ButtonList[0].Key != "/ops rollback T-1#5" {
		t.Fatalf("buttons %+v", c.ButtonList)
	}
}

// Golden files show times in UTC, whatever the host's zone.
func init() { templates.SetZone(time.UTC) }
