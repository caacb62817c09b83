// Package local is the embedded local chat: a single page served on
// loopback where a person picks who they are, types /ops commands, sees
// replies and cards, and presses working buttons; plus the JSON API under
// it that the page, the tests and the load tool use. It needs no chat
// credentials, so "make run" works on a fresh machine.
package local

import (
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"opsbot/templates"
)

// Handler runs a command typed (or a button pressed).
type Handler func(ctx context.Context, in Input) []templates.Message

// Input is one command typed or button pressed on the page.
type Input struct {
	User  string
	Text  string
	Click bool
	// Key identifies the command for de-duplication (empty: none).
	Key string
}

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
	// History keeps the inboxes across restarts (nil: memory only).
	History History
	// Waiting draws the cards waiting for user to act on, each with the
	// buttons that person may press, or something useful to start with
	// when nothing waits (the page shows them on load and on reconnect).
	Waiting func(ctx context.Context, user string) []templates.Message
	// Buttons are the actions user may take on the ticket now (ok false:
	// no such ticket). A person's own messages show only those; a team
	// channel shows every action and says who may act.
	Buttons func(ctx context.Context, user, ticket string) (buttons []templates.Button, ok bool)
	// Channels names the team channels the page offers besides people.
	Channels func() []string
	// Refuse records a refused request (bounded by the bot's refusal
	// sampler): who asked, the kind of refusal and what was wrong.
	Refuse func(ctx context.Context, remote, action, class, reason string)
	// Warn reports a failure nobody waits for (history not written).
	Warn func(msg string, err error)
	// MaxText is the longest command the bot reads, in bytes (the page
	// states it before sending); 0 means no stated limit.
	MaxText int
}

// History keeps inboxes in durable storage: Load returns what was kept,
// Save writes entries (a newer revision wins) and drops entries that fell
// out of their inbox, in one write.
type History interface {
	Load(ctx context.Context) ([]Stored, error)
	Save(ctx context.Context, put, drop []Stored) error
}

// Stored is an entry with its inbox, as History keeps it.
type Stored struct {
	Box   string
	Entry Entry
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
	// For marks a reply in a team channel that only one person sees
	// (what they typed there and the bot's answer), as Slack's
	// ephemeral messages.
	For string `json:"for,omitempty"`
	// Client is the page's id of the command typed, so a command sent
	// again after a lost answer is recognized and not run twice.
	Client string `json:"client,omitempty"`
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
	// boot changes at every start: a page that sees another boot reloads
	// its inbox from the start.
	boot string
	// dirty and dropped are the entries changed or trimmed under mu, for
	// the flusher to hand to History.
	dirty, dropped []Stored
	kick           chan struct{}
	stop, flushed  chan struct{}
	closeOnce      sync.Once
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
	return &Transport{cfg: cfg, inbox: map[string][]*Entry{}, cards: map[string][]*Entry{}, notify: make(chan struct{}),
		boot: strconv.FormatInt(time.Now().UnixNano(), 36), kick: make(chan struct{}, 1)}
}

// Restore loads the kept history (every inbox as it was, cards indexed
// for updates in place, revisions continuing after the highest kept) and
// starts writing changes in the background until Close.
func (t *Transport) Restore(ctx context.Context) error {
	if t.cfg.History == nil {
		return nil
	}
	kept, err := t.cfg.History.Load(ctx)
	if err != nil {
		return err
	}
	t.stop, t.flushed = make(chan struct{}), make(chan struct{})
	go t.flusher()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range kept {
		e := s.Entry
		t.inbox[s.Box] = append(t.inbox[s.Box], &e)
		if e.Msg != nil && e.Msg.Ticket != "" {
			t.cards[e.Msg.Ticket] = append(t.cards[e.Msg.Ticket], &e)
		}
		t.rev = max(t.rev, e.Rev, e.ID)
	}
	return nil
}

// flushEvery is how long a change to the history waits, so that the
// changes of many commands share one write.
const flushEvery = 100 * time.Millisecond

// persist asks for the entries changed under mu to be written. Callers
// call it after releasing mu. The history is written in the background,
// within flushEvery, in one transaction for all that changed meanwhile: a
// command does not wait for it. What a crash can lose is the page's copy
// of the last moments; the tickets, the audit and the de-duplication of
// commands are written by the bot in their own transactions, and the
// page shows what waits for the person again when it reconnects.
func (t *Transport) persist() {
	if t.cfg.History == nil {
		return
	}
	select {
	case t.kick <- struct{}{}:
	default: // a write is already due
	}
}

// Flush writes the changed entries now.
func (t *Transport) Flush(ctx context.Context) error {
	t.mu.Lock()
	put, drop := t.dirty, t.dropped
	t.dirty, t.dropped = nil, nil
	t.mu.Unlock()
	if t.cfg.History == nil || len(put)+len(drop) == 0 {
		return nil
	}
	return t.cfg.History.Save(ctx, put, drop)
}

// flusher writes the history in the background until Close.
func (t *Transport) flusher() {
	defer close(t.flushed)
	ctx := context.Background()
	for {
		select {
		case <-t.kick:
			timer := time.NewTimer(flushEvery)
			select {
			case <-timer.C:
			case <-t.stop:
				timer.Stop()
			}
			t.report(t.Flush(ctx))
		case <-t.stop:
			t.report(t.Flush(ctx))
			return
		}
	}
}

func (t *Transport) report(err error) {
	if err != nil && t.cfg.Warn != nil {
		t.cfg.Warn("local chat history not kept", err)
	}
}

// Close writes what is left of the history and stops writing it.
func (t *Transport) Close() {
	t.closeOnce.Do(func() {
		if t.stop == nil {
			return
		}
		close(t.stop)
		<-t.flushed
	})
}

// touched records that e in box changed. Callers hold mu.
func (t *Transport) touched(box string, e *Entry) {
	if t.cfg.History != nil {
		t.dirty = append(t.dirty, Stored{Box: box, Entry: *e})
	}
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
	if err := t.injectedFailure(); err != nil {
		t.mu.Unlock()
		return err
	}
	t.add(user, &Entry{Kind: "notice", Msg: &msg})
	t.mu.Unlock()
	t.persist()
	return nil
}

// PostChannel implements the bot's ChannelPoster: a team channel is the
// inbox "#name" (e.g. "#infra").
func (t *Transport) PostChannel(ctx context.Context, channel string, msg templates.Message) error {
	return t.Send(ctx, "#"+channel, msg)
}

// UpdateCards implements the bot's CardUpdater: every card of the ticket
// in every inbox is redrawn as the ticket is now, with the buttons the
// person may press (a team channel: every action, and who may act). A
// notice keeps its words and gets a line saying where the ticket is now;
// its buttons stay only while the ticket is in the stage it was sent in.
func (t *Transport) UpdateCards(ctx context.Context, ticket string, msg templates.Message) error {
	t.mu.Lock()
	if err := t.injectedFailure(); err != nil {
		t.mu.Unlock()
		return err
	}
	var people []string
	for _, e := range t.cards[ticket] {
		if box := t.boxOf(e); !strings.HasPrefix(box, "#") && !slices.Contains(people, box) {
			people = append(people, box)
		}
	}
	t.mu.Unlock()
	// What each person may press is asked outside the lock (it reads the
	// ticket).
	own := map[string][]templates.Button{}
	for _, p := range people {
		if b, ok := t.buttonsFor(ctx, p, ticket); ok {
			own[p] = b
		}
	}
	t.mu.Lock()
	changed := false
	for _, e := range t.cards[ticket] {
		if e.Msg.Version >= msg.Version {
			continue
		}
		box := t.boxOf(e)
		b, personal := own[box]
		var m templates.Message
		if e.Msg.Kind == "ticket" {
			// A ticket's card always shows the ticket as it is now: a
			// step that was running shows its result, the stage it moved
			// to, and what may be pressed there.
			m = msg
			if personal {
				m.Buttons = b
			}
		} else {
			// A notice tells what happened then; it keeps its words, says
			// where the ticket is now, and offers only what still applies.
			m = *e.Msg
			switch {
			case m.Stage != msg.Stage:
				m.Buttons = disabled(m.Buttons)
			case personal:
				m.Buttons = b
			default:
				m.Buttons = msg.Buttons
			}
			m.Version = msg.Version
			m.Context = "现状 now: " + msg.Title + " · " + msg.Context
		}
		e.Msg = &m
		t.rev++
		e.Rev = t.rev
		t.touched(box, e)
		changed = true
	}
	if changed {
		t.wake()
	}
	t.mu.Unlock()
	t.persist()
	return nil
}

// buttonsFor asks the bot what user may press on ticket.
func (t *Transport) buttonsFor(ctx context.Context, user, ticket string) ([]templates.Button, bool) {
	if t.cfg.Buttons == nil || ticket == "" {
		return nil, false
	}
	return t.cfg.Buttons(ctx, user, ticket)
}

// boxOf finds the inbox holding e. Callers hold mu.
func (t *Transport) boxOf(e *Entry) string {
	for box, list := range t.inbox {
		// Entries are in id order: search by id.
		i, ok := slices.BinarySearchFunc(list, e.ID, func(x *Entry, id int64) int { return cmp.Compare(x.ID, id) })
		if ok && list[i] == e {
			return box
		}
	}
	return ""
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
			if t.cfg.History != nil {
				t.dropped = append(t.dropped, Stored{Box: user, Entry: Entry{ID: old.ID}})
			}
		}
		box = slices.Clone(box[len(box)-t.cfg.MaxInbox:])
	}
	t.inbox[user] = box
	if e.Msg != nil && e.Msg.Ticket != "" {
		t.cards[e.Msg.Ticket] = append(t.cards[e.Msg.Ticket], e)
	}
	t.touched(user, e)
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

// Inbox returns box's entries changed after rev, and the latest rev.
func (t *Transport) Inbox(box string, after int64) ([]Entry, int64) { return t.view(box, "", after) }

// view is what viewer sees of box: in a team channel, replies meant for
// someone else are left out.
func (t *Transport) view(box, viewer string, after int64) ([]Entry, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Entry
	for _, e := range t.inbox[box] {
		if e.Rev > after && (e.For == "" || viewer == "" || e.For == viewer) {
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
		w.Header().Set("Cache-Control", "no-store")
		w.Write(page)
	})
	mux.HandleFunc("GET /api/users", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, t.cfg.Users()) })
	mux.HandleFunc("GET /api/info", t.serveInfo)
	mux.HandleFunc("GET /api/waiting", t.serveWaiting)
	mux.HandleFunc("POST /api/command", func(w http.ResponseWriter, r *http.Request) { t.serveCommand(w, r, false) })
	mux.HandleFunc("POST /api/click", func(w http.ResponseWriter, r *http.Request) { t.serveCommand(w, r, true) })
	mux.HandleFunc("GET /api/inbox", t.serveInbox)
	return mux
}

// Info is what the page needs to know once: the limit it states before
// sending, the team channels it offers, and the start it talks to.
type Info struct {
	MaxText  int      `json:"max_text"`
	Channels []string `json:"channels"`
	Boot     string   `json:"boot"`
}

func (t *Transport) serveInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, Info{MaxText: t.cfg.MaxText, Channels: t.channels(), Boot: t.boot})
}

// channels are the team channels the page offers: those configured, and
// those the bot posted to ("#infra"). Only the bot makes a channel's
// inbox, so their number is bounded by the configuration.
func (t *Transport) channels() []string {
	seen := map[string]bool{}
	var chans []string
	addChan := func(c string) {
		c = strings.TrimPrefix(c, "#")
		if c != "" && !seen[c] {
			seen[c] = true
			chans = append(chans, "#"+c)
		}
	}
	if t.cfg.Channels != nil {
		for _, c := range t.cfg.Channels() {
			addChan(c)
		}
	}
	t.mu.Lock()
	for box := range t.inbox {
		if strings.HasPrefix(box, "#") {
			addChan(box)
		}
	}
	t.mu.Unlock()
	slices.Sort(chans)
	return chans
}

func (t *Transport) serveWaiting(w http.ResponseWriter, r *http.Request) {
	user, err := t.userName(r.URL.Query().Get("user"))
	if err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error()})
		return
	}
	var msgs []templates.Message
	if t.cfg.Waiting != nil {
		msgs = t.cfg.Waiting(r.Context(), user)
	}
	writeJSON(w, 200, map[string]any{"cards": msgs})
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
		return "", errors.New("用户名无效 · user: pick a user name without spaces, e.g. alice")
	}
	return n, nil
}

// boxName checks a box given to the local API: a user name, or a team
// channel "#name".
func (t *Transport) boxName(s string) (string, error) {
	name, channel := strings.CutPrefix(s, "#")
	n, err := t.userName(name)
	if err != nil || !channel {
		return n, err
	}
	return "#" + n, nil
}

// CommandRequest is the body of /api/command and /api/click.
type CommandRequest struct {
	User string `json:"user"`
	Text string `json:"text"`
	// In is the team channel the command was typed in ("#infra"); its
	// replies are shown there to the user alone. Empty: the user's own
	// messages.
	In string `json:"in,omitempty"`
	// ID is the page's id for this command: a command sent again with the
	// same id (its answer was lost) is not run again.
	ID string `json:"id,omitempty"`
}

// CommandResponse carries the replies.
type CommandResponse struct {
	// Replies are the bot's answer as a shared channel would show it
	// (every action of the stage, each checked when pressed: tools and
	// tests act with them as other people); the person's own messages on
	// the page show only the actions they may take.
	Replies []templates.Message `json:"replies"`
	// Duplicate says the command with this id was run before; its
	// replies are in the inbox already.
	Duplicate bool `json:"duplicate,omitempty"`
}

// refuse answers a refused request and records it.
func (t *Transport) refuse(w http.ResponseWriter, r *http.Request, code int, class, msg string) {
	if t.cfg.Refuse != nil {
		t.cfg.Refuse(r.Context(), r.RemoteAddr, r.Method+" "+r.URL.Path, class, msg)
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

// badRequest says what was wrong and what to send instead.
func (t *Transport) badRequest(w http.ResponseWriter, r *http.Request, what string) {
	t.refuse(w, r, 400, "malformed", what+`; want JSON {"user": "alice", "text": "/ops help"}`)
}

func (t *Transport) serveCommand(w http.ResponseWriter, r *http.Request, click bool) {
	var req CommandRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			t.refuse(w, r, 413, "too_large", fmt.Sprintf("消息太长 · too long: a command is at most %d bytes", max(t.cfg.MaxText, 0)))
			return
		}
		t.badRequest(w, r, "不是 JSON · not JSON")
		return
	}
	user, err := t.userName(req.User)
	if err != nil {
		t.badRequest(w, r, err.Error())
		return
	}
	box := user
	if req.In != "" {
		if box, err = t.boxName(req.In); err != nil || !strings.HasPrefix(box, "#") || !slices.Contains(t.channels(), box) {
			t.badRequest(w, r, fmt.Sprintf("没有这个频道 · in: name a team channel (%s), e.g. #infra", strings.Join(t.channels(), ", ")))
			return
		}
	}
	if len(req.ID) > 64 {
		t.badRequest(w, r, "id 太长 · id: at most 64 characters")
		return
	}
	req.User = user
	t.mu.Lock()
	_, known := t.inbox[user]
	full := !known && len(t.inbox) >= t.cfg.MaxUsers
	dup := req.ID != "" && slices.ContainsFunc(t.inbox[box], func(e *Entry) bool { return e.Client == req.ID && e.For == forWhom(box, user) })
	t.mu.Unlock()
	if full {
		t.refuse(w, r, 429, "too_many_users", fmt.Sprintf("本地聊天已有 %d 人 · the local chat already has %d people; speak as one of them, e.g. alice", t.cfg.MaxUsers, t.cfg.MaxUsers))
		return
	}
	if dup {
		writeJSON(w, 200, CommandResponse{Duplicate: true})
		return
	}
	key := ""
	if req.ID != "" {
		key = user + ":" + req.ID
	}
	replies := t.cfg.Handle(r.Context(), Input{User: user, Text: req.Text, Click: click, Key: key})
	shown := slices.Clone(replies)
	if box == user {
		// A ticket's card in a person's own messages offers what they may
		// press, not every action of the stage.
		for i, m := range shown {
			if m.Kind == "ticket" {
				if b, ok := t.buttonsFor(r.Context(), user, m.Ticket); ok {
					shown[i].Buttons = b
				}
			}
		}
	}
	t.mu.Lock()
	if !click {
		t.add(box, &Entry{Kind: "you", Text: t.cfg.Redact(req.Text), For: forWhom(box, user), Client: req.ID})
	}
	for i := range shown {
		m := shown[i]
		t.add(box, &Entry{Kind: "reply", Msg: &m, For: forWhom(box, user)})
	}
	t.mu.Unlock()
	t.persist()
	writeJSON(w, 200, CommandResponse{Replies: replies})
}

// forWhom is who sees a reply in box: in a team channel only the person
// who typed; in their own messages, no restriction is needed.
func forWhom(box, user string) string {
	if strings.HasPrefix(box, "#") {
		return user
	}
	return ""
}

func (t *Transport) serveInbox(w http.ResponseWriter, r *http.Request) {
	// A team channel's inbox is "#name"; viewer is who looks at it.
	box, err := t.boxName(r.URL.Query().Get("user"))
	if err != nil {
		writeJSON(w, 400, map[string]string{"error": err.Error()})
		return
	}
	viewer := ""
	if v := r.URL.Query().Get("viewer"); v != "" {
		if viewer, err = t.userName(v); err != nil {
			writeJSON(w, 400, map[string]string{"error": "viewer: " + err.Error()})
			return
		}
	}
	after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	wait, _ := time.ParseDuration(r.URL.Query().Get("wait"))
	wait = min(wait, 25*time.Second)
	deadline := time.After(wait)
	for {
		t.mu.Lock()
		ch := t.notify
		t.mu.Unlock()
		entries, rev := t.view(box, viewer, after)
		if len(entries) > 0 || wait <= 0 {
			writeJSON(w, 200, map[string]any{"entries": entries, "rev": rev, "boot": t.boot})
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
