// Package templates renders opsbot's chat messages from embedded templates
// into a platform-neutral Message (title, fields, body, buttons, context),
// which each transport then draws in its own way. Messages are bilingual:
// Chinese first, then English.
//
// It imports nothing from the rest of the bot: callers hand it plain views.
package templates

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"strings"
	"text/template"
	"unicode/utf8"
)

// Message is a platform-neutral chat message.
type Message struct {
	// Kind names the template that made the message.
	Kind string `json:"kind"`
	// Level is "info", "success", "warning" or "error".
	Level   string   `json:"level,omitempty"`
	Title   string   `json:"title"`
	Fields  []Field  `json:"fields,omitempty"`
	Body    string   `json:"body,omitempty"`
	Buttons []Button `json:"buttons,omitempty"`
	Context string   `json:"context,omitempty"`
	// Ticket and Version identify the ticket a card shows, so transports
	// can update it in place.
	Ticket  string `json:"ticket,omitempty"`
	Version int64  `json:"version,omitempty"`
	// Stage names the stage instance the buttons act on ("plan_review@3"):
	// a redrawn card keeps live buttons only while this is unchanged.
	Stage string `json:"stage,omitempty"`
	// StageTitle is the ticket's stage as people read it, and Ended says
	// the ticket came to a result: renderers use these, never the labels.
	StageTitle string `json:"stage_title,omitempty"`
	Ended      bool   `json:"ended,omitempty"`
	// MentionAll asks a team channel's platform to notify everyone in it
	// (Slack <!channel>, a WeCom group robot's @all): announcements.
	MentionAll bool `json:"mention_all,omitempty"`
}

// Field is a label and a value shown side by side.
type Field struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

// Button is an action on a card. Value is the command it runs, exactly as
// if typed, so a click and a typed command take the same path.
type Button struct {
	Label    string `json:"label"`
	Value    string `json:"value"`
	Style    string `json:"style,omitempty"` // "primary", "danger" or ""
	Disabled bool   `json:"disabled,omitempty"`
	// Confirm, when set, is asked before the button is sent (a Slack
	// confirm dialog, the browser's confirm in the local chat): the action
	// cannot be taken back, and Value already carries the confirmation.
	// A platform that cannot ask first sends Unconfirmed instead, and the
	// answer asks for the confirmation (a second card or a typed one).
	Confirm     string `json:"confirm,omitempty"`
	Unconfirmed string `json:"unconfirmed,omitempty"`
	// Reason says the button asks for a reason first (reject): the
	// platform appends it, quoted, as the command's comment.
	Reason bool `json:"reason,omitempty"`
}

// MaxOutput is how much action output a card shows.
const MaxOutput = 1500

//go:embed msg/*.tmpl
var files embed.FS

var tmpl *template.Template

func init() {
	tmpl = template.Must(template.New("").Funcs(template.FuncMap{
		"q":     quote,
		"time":  Stamp,
		"join":  strings.Join,
		"trunc": Truncate,
		"add":   func(a, b int) int { return a + b },
		"include": func(name string, data any) (string, error) {
			var b bytes.Buffer
			err := tmpl.ExecuteTemplate(&b, name, data)
			return b.String(), err
		},
	}).ParseFS(files, "msg/*.tmpl"))
}

// quote renders a value as a JSON string.
func quote(v any) string {
	b, _ := json.Marshal(fmt.Sprint(v))
	return string(b)
}

// Truncate shortens s to at most n bytes on a rune boundary, saying so.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("\n… (%d bytes cut 已截断)", len(s)-cut)
}

// Clip shortens s to at most n characters (not bytes), ending with "…"
// when it cut: chat platforms count characters in their limits.
func Clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// Names lists the templates.
func Names() []string {
	var out []string
	for _, t := range tmpl.Templates() {
		if n, ok := strings.CutSuffix(t.Name(), ".tmpl"); ok {
			out = append(out, n)
		}
	}
	return out
}

// Render fills template name with data. Templates write JSON, with every
// value passed through q, so no value can break the message's structure.
func Render(name string, data any) (Message, error) {
	switch d := data.(type) {
	case TicketView:
		if name == "ticket" {
			m := ticketCard(d)
			m.StageTitle, m.Ended = d.StageTitle, d.Ended
			return m, nil
		}
	case InfoView:
		if name == "info" {
			level := d.Level
			if level == "" {
				level = "info"
			}
			return Message{Kind: "info", Level: level, Title: d.Title, Body: strings.Trim(d.Body, "\n")}, nil
		}
	case ErrorView:
		if name == "error" {
			return Message{Kind: "error", Level: "error", Title: "⚠️ " + d.Message, Body: strings.Trim(d.Hint, "\n"), Buttons: buttons(d.Buttons)}, nil
		}
	case NoticeView:
		if name == "notice" {
			m := noticeMessage(d)
			m.StageTitle, m.Ended = d.Ticket.StageTitle, d.Ticket.Ended
			return m, nil
		}
	}
	var buf bytes.Buffer
	if err := tmpl.ExecuteTemplate(&buf, name+".tmpl", data); err != nil {
		return Message{}, fmt.Errorf("render %s: %w", name, err)
	}
	var m Message
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		return Message{}, fmt.Errorf("render %s: decode %q: %w", name, buf.String(), err)
	}
	m.Kind = name
	m.Body = strings.Trim(m.Body, "\n")
	var v *TicketView
	switch d := data.(type) {
	case TicketView:
		v = &d
	case NoticeView:
		v = &d.Ticket
	}
	if v != nil && v.ID != "" {
		m.StageTitle, m.Ended = v.StageTitle, v.Ended
	}
	return m, nil
}

// MustRender is Render for templates whose data cannot make them fail;
// a failure is a bug in the template and panics in tests.
func MustRender(name string, data any) Message {
	m, err := Render(name, data)
	if err != nil {
		panic(err)
	}
	return m
}

// Text draws a message as plain text, for consoles, logs and text-only chats.
func Text(m Message) string {
	var b strings.Builder
	b.WriteString(m.Title)
	for _, f := range m.Fields {
		fmt.Fprintf(&b, "\n%s: %s", f.Label, f.Value)
	}
	if m.Body != "" {
		b.WriteString("\n" + m.Body)
	}
	var btn []string
	for _, x := range m.Buttons {
		if x.Disabled {
			btn = append(btn, "("+x.Label+")")
		} else {
			btn = append(btn, "["+x.Label+" → "+x.Value+"]")
		}
	}
	if len(btn) > 0 {
		b.WriteString("\n" + strings.Join(btn, " "))
	}
	if m.Context != "" {
		b.WriteString("\n— " + m.Context)
	}
	return b.String()
}
