// Package wecom is opsbot's WeCom (企业微信) transport for a self-built
// app: an encrypted callback endpoint for commands typed to the app and
// template-card button presses, approval cards sent as template_card
// (button_interaction) messages and updated in place through
// message/update_template_card, and group robot notifications.
package wecom

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"opsbot/templates"
)

// Template card limits (developer.work.weixin.qq.com/document/path/90236).
const (
	maxTitle      = 36
	maxDesc       = 44
	maxSubTitle   = 160
	maxHorizontal = 6
	maxKeyName    = 5
	maxValue      = 30
	maxButtons    = 6
	maxButtonText = 10
	maxButtonKey  = 1024
	maxTextBytes  = 2048
	// maxRobotTextBytes is a group robot text message's limit.
	maxRobotTextBytes = 2048
	maxMarkdown       = 4096
)

// clipBytes shortens s to n bytes on a rune boundary.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// chinese keeps the Chinese half of a bilingual label ("同意 Approve" ->
// "同意"): WeCom cards are narrow and WeCom users read Chinese.
func chinese(label string) string {
	if i := strings.IndexByte(label, ' '); i > 0 && !isASCII(label[:i]) {
		return label[:i]
	}
	return label
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Card is a WeCom template card of type button_interaction.
type Card struct {
	CardType              string       `json:"card_type"`
	Source                Source       `json:"source"`
	MainTitle             Title        `json:"main_title"`
	SubTitleText          string       `json:"sub_title_text,omitempty"`
	HorizontalContentList []KeyValue   `json:"horizontal_content_list,omitempty"`
	TaskID                string       `json:"task_id"`
	ButtonList            []CardButton `json:"button_list"`
}

// Source is the card's source line.
type Source struct {
	Desc string `json:"desc"`
}

// Title is the card's main title.
type Title struct {
	Title string `json:"title"`
	Desc  string `json:"desc,omitempty"`
}

// KeyValue is one line of horizontal content.
type KeyValue struct {
	KeyName string `json:"keyname"`
	Value   string `json:"value"`
}

// CardButton is a card button; Key comes back in the callback's EventKey.
type CardButton struct {
	Text  string `json:"text"`
	Style int    `json:"style"`
	Key   string `json:"key"`
}

// Render draws a neutral ticket card as a template card. taskID must be
// unique within the app.
func Render(m templates.Message, taskID string) Card {
	c := Card{CardType: "button_interaction", Source: Source{Desc: "opsbot 审批"}, TaskID: templates.Clip(taskID, 128),
		MainTitle: Title{Title: templates.Clip(m.Title, maxTitle), Desc: templates.Clip(m.Context, maxDesc)}}
	if m.Body != "" {
		c.SubTitleText = templates.Clip(m.Body, maxSubTitle)
	}
	for _, f := range m.Fields {
		if len(c.HorizontalContentList) == maxHorizontal {
			break
		}
		c.HorizontalContentList = append(c.HorizontalContentList, KeyValue{KeyName: templates.Clip(chinese(f.Label), maxKeyName), Value: templates.Clip(f.Value, maxValue)})
	}
	for _, b := range m.Buttons {
		if b.Disabled || len(b.Value) > maxButtonKey || len(c.ButtonList) == maxButtons {
			continue
		}
		style := 1
		switch b.Style {
		case "primary":
			style = 1
		case "danger":
			style = 2
		default:
			style = 4
		}
		key := b.Value
		if b.Confirm != "" {
			// A card cannot ask first: the press asks for the confirmation.
			key = b.Unconfirmed
		}
		c.ButtonList = append(c.ButtonList, CardButton{Text: templates.Clip(chinese(b.Label), maxButtonText), Style: style, Key: key})
	}
	return c
}

// Text draws any message as a plain-text app message within 2048 bytes.
func Text(m templates.Message) string { return clipBytes(templates.Text(m), maxTextBytes) }

// Markdown draws a message for a group robot.
func Markdown(m templates.Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "**%s**\n", m.Title)
	for _, f := range m.Fields {
		fmt.Fprintf(&b, "> %s: <font color=\"comment\">%s</font>\n", chinese(f.Label), f.Value)
	}
	if m.Body != "" {
		b.WriteString(m.Body + "\n")
	}
	if m.Context != "" {
		fmt.Fprintf(&b, "<font color=\"comment\">%s</font>", m.Context)
	}
	return clipBytes(b.String(), maxMarkdown)
}
