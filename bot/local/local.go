// Package local is the embedded local chat: a single page served on
// loopback where a person picks who they are, types /ops commands, sees
// replies and cards, and presses working buttons; plus the JSON API under
// it that the page, the tests and the load tool use. It needs no chat
// credentials, so "make run" works on a fresh machine.
package local

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"opsbot/templates"
)

// Handler runs a command typed (or a button pressed) by user.
type Handler func(ctx context.Context, user, text string, click bool) []templates.Message

// User is a person the page offers to act as.
type User struct {
	Name    string   `json:"name"`
	Display string   `json:"display,omitempty"`
	Roles   []string `json:"roles,omitempty"`
}

// Config wires the transport.
type Config struct {
	Handle Handler
	Users  func() []User
	// Name normalizes a user name and refuses one that cannot be stored.
	Name func(string) (string, error)
	// MaxInbox bounds each user's kept messages.
	MaxInbox int
	// MaxUsers bounds how many people may speak through the page (each
	// new name is a new user and inbox); 0 means 1000.
	MaxUsers int
	// Redact masks secrets in the echo of what the user typed.
	Redact func(string) string
}

// Entry is one message in a user's inbox. Rev changes when a card is
// redrawn, so pollers see updates in place.
type Entry struct {
	ID   int64              `json:"id"`
	Rev  int64              `json:"rev"`
	Kind string             `json:"kind"` // "you", "reply" or "notice"
	Text string             `json:"text,omitempty"`
	Msg  *templates.Message `json:"msg,omitempty"`
	At   time.Time          `json:"at"`
}

// Transport is the local chat.
type Transport struct {
	cfg   Config
	mu    sync.Mutex
	rev   int64
	inbox map[string][]*Entry
	// cards indexes the entries that show a ticket, for in-place updates.
	cards  map[string][]*Entry
	failN  int
	notify chan struct{}
}

// New returns a local chat transport.
func New(cfg Config) *Transport {
	if cfg.MaxInbox <= 0 {
		cfg.MaxInbox = 500
	}
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = 1000
	}
	if cfg.Redact == nil {
		cfg.Redact = func(s string) string { return s }
	}
	return &Transport{cfg: cfg, inbox: map[string][]*Entry{}, cards: map[string][]*Entry{}, notify: make(chan struct{})}
}

// Platform implements the bot's Transport.
func (t *Transport) Platform() string { return "local" }

// FailNext makes the next n sends fail, to exercise the outbox.
func (t *Transport) FailNext(n int) {
	t.mu.Lock()
	t.failN = n
	t.mu.Unlock()
}

// injectedFailure consumes one failure set by FailNext. Callers hold mu.
func (t *Transport) injectedFailure() error {
	if t.failN == 0 {
		return nil
	}
	t.failN--
	return errors.New("local chat unavailable (injected failure)")
}

// Send implements the bot's Transport: the message lands in user's inbox.
func (t *Transport) Send(ctx context.Context, user string, msg templates.Message) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.injectedFailure(); err != nil {
		return err
	}
	t.add(user, &Entry{Kind: "notice", Msg: &msg})
	return nil
}

// PostChannel implements the bot's ChannelPoster: a team channel is the
// inbox "#name" (e.g. "#infra").
func (t *Transport) PostChannel(ctx context.Context, channel string, msg templates.Message) error {
	return t.Send(ctx, "#"+channel, msg)
}

// UpdateCards implements the bot's CardUpdater: every card of the ticket
// in every inbox is redrawn. A card drawn in the stage the ticket is still
// in gets the current buttons; any other card's buttons are disabled, so
// nothing on it can be pressed any more.
func (t *Transport) UpdateCards(ctx context.Context, ticket string, msg templates.Message) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.injectedFailure(); err != nil {
		return err
	}
	changed := false
	for _, e := range t.cards[ticket] {
		if e.Msg.Version >= msg.Version {
			continue
		}
		m := *e.Msg
		if m.Stage == msg.Stage {
			m.Buttons = msg.Buttons
		} else {
			m.Buttons = disabled(m.Buttons)
		}
		m.Version = msg.Version
		m.Context = "现状 now: " + msg.Title + " · " + msg.Context
		e.Msg = &m
		t.rev++
		e.Rev = t.rev
		changed = true
	}
	if changed {
		t.wake()
	}
	return nil
}

func disabled(in []templates.Button) []templates.Button {
	out := make([]templates.Button, len(in))
	for i, b := range in {
		b.Disabled = true
		out[i] = b
	}
	return out
}

func (t *Transport) add(user string, e *Entry) {
	t.rev++
	e.ID, e.Rev, e.At = t.rev, t.rev, time.Now()
	box := append(t.inbox[user], e)
	if len(box) > t.cfg.MaxInbox {
		for _, old := range box[:len(box)-t.cfg.MaxInbox] {
			t.forget(old)
		}
		box = box[len(box)-t.cfg.MaxInbox:]
	}
	t.inbox[user] = box
	if e.Msg != nil && e.Msg.Ticket != "" {
		t.cards[e.Msg.Ticket] = append(t.cards[e.Msg.Ticket], e)
	}
	t.wake()
}

// forget drops an entry that fell out of an inbox from the card index.
func (t *Transport) forget(e *Entry) {
	if e.Msg == nil || e.Msg.Ticket == "" {
		return
	}
	list := t.cards[e.Msg.Ticket]
	for i, x := range list {
		if x == e {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(t.cards, e.Msg.Ticket)
	} else {
		t.cards[e.Msg.Ticket] = list
	}
}

func (t *Transport) wake() {
	close(t.notify)
	t.notify = make(chan struct{})
}

// Inbox returns user's entries changed after rev, and the latest rev.
func (t *Transport) Inbox(user string, after int64) ([]Entry, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Entry
	for _, e := range t.inbox[user] {
		if e.Rev > after {
			out = append(out, *e)
		}
	}
	return out, t.rev
}

//go:embed page.html
var page []byte

// Handler serves the page and the JSON API. The bot mounts it behind its
// loopback guard (Host, Origin, JSON bodies only).
func (t *Transport) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Write(page)
	})
	mux.HandleFunc("GET /api/users", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, t.cfg.Users()) })
	mux.HandleFunc("POST /api/command", func(w http.ResponseWriter, r *http.Request) { t.serveCommand(w, r, false) })
	mux.HandleFunc("POST /api/click", func(w http.ResponseWriter, r *http.Request) { t.serveCommand(w, r, true) })
	mux.HandleFunc("GET /api/inbox", t.serveInbox)
	return mux
}

// userName checks and normalizes a user name given to the local API: the
// bot's rules for every stored name (Config.Name), plus no spaces or
// separators.
func (t *Transport) userName(s string) (string, error) {
	n, err := t.cfg.Name(s)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(n, " \t\n:/#") || len(n) > 64 {
		return "", errors.New("user: pick a user name without spaces, e.g. alice")
	}
	return n, nil
}

// CommandRequest is the body of /api/command and /api/click.
type CommandRequest struct {
	User string `json:"user"`
	Text string `json:"text"`
}

// CommandResponse carries the replies.
type CommandResponse struct {
	Replies []templates.Message `json:"replies"`
}

func (t *Transport) serveCommand(w http.ResponseWriter, r *http.Request, click bool) {
	var req CommandRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeJSON(w, 400, map[string]string{"error": "want JSON {\"user\": \"alice\", \"text\": \"/ops help\"}"})
		return
	}
	user, err := t.userName(req.User)
	if err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error() + `; want JSON {"user": "alice", "text": "/ops help"}`})
		return
	}
	req.User = user
	t.mu.Lock()
	_, known := t.inbox[user]
	full := !known && len(t.inbox) >= t.cfg.MaxUsers
	t.mu.Unlock()
	if full {
		writeJSON(w, 429, map[string]string{"error": fmt.Sprintf("the local chat already has %d people; speak as one of them, e.g. alice", t.cfg.MaxUsers)})
		return
	}
	replies := t.cfg.Handle(r.Context(), req.User, req.Text, click)
	t.mu.Lock()
	if !click {
		t.add(req.User, &Entry{Kind: "you", Text: t.cfg.Redact(req.Text)})
	}
	for i := range replies {
		m := replies[i]
		t.add(req.User, &Entry{Kind: "reply", Msg: &m})
	}
	t.mu.Unlock()
	writeJSON(w, 200, CommandResponse{Replies: replies})
}

func (t *Transport) serveInbox(w http.ResponseWriter, r *http.Request) {
	// A team channel's inbox is "#name".
	q := r.URL.Query().Get("user")
	channel, isChannel := strings.CutPrefix(q, "#")
	user, err := t.userName(channel)
	if err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error()})
		return
	}
	if isChannel {
		user = "#" + user
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	wait = min(wait, 25*time.Second)
	deadline := time.After(wait)
	for {
		t.mu.Lock()
		ch := t.notify
		t.mu.Unlock()
		entries, rev := t.Inbox(user, after)
		if len(entries) > 0 || wait <= 0 {
			writeJSON(w, 200, map[string]any{"entries": entries, "rev": rev})
			return
		}
		select {
		case <-ch:
		case <-deadline:
			wait = 0
		case <-r.Context().Done():
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client went away; nothing to tell it
}
