// Package slackfake is a faithful fake of the parts of Slack opsbot uses,
// on slack-go's slacktest server (real HTTP on a loopback port). It adds
// what slacktest lacks: chat.update, views.open, users.info with e-mails,
// response_url endpoints, Socket Mode (apps.connections.open and a real
// WebSocket that sends envelopes and collects acks), token checks, Block
// Kit limit checks answering `invalid_blocks`, and per-channel rate limits
// answering 429 with Retry-After. It records every call, and it signs
// requests to the bot exactly as Slack does.
package slackfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slacktest"

	opsslack "opsbot/bot/slack"
)

// Call is one Web API call the fake answered.
type Call struct {
	Method   string
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	Blocks   []map[string]any
	View     map[string]any
	Error    string
}

// Message is a message as it stands in a channel, after updates.
type Message struct {
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	Blocks   []map[string]any
	Updates  int
}

// Response is a post to a response_url.
type Response struct {
	ID   string
	Body map[string]any
}

// User is a workspace member.
type User struct {
	ID, Name, Email string
}

// Server is the fake Slack.
type Server struct {
	t        testing.TB
	ts       *slacktest.Server
	BotToken string
	AppToken string
	// Burst messages may go to one channel at once, then one per second.
	Burst int

	mu        sync.Mutex
	revoked   bool
	calls     []Call
	messages  map[string]*Message
	responses []Response
	users     map[string]User
	triggers  map[string]time.Time
	buckets   map[string]*bucket
	limited   int
	seq       int
	notIn     map[string]bool
	ws        *websocket.Conn
	wsMu      sync.Mutex
	acks      map[string]json.RawMessage
	ackSignal chan struct{}
	// held channels answer chat.postMessage only once released (or when
	// the caller gives up): a slow Slack.
	held    map[string]chan struct{}
	waiting *atomic.Bool
}

// Hold makes chat.postMessage to channel wait until the returned release
// is called or the caller gives up (its request is cancelled); held
// tells whether a post is waiting.
func (s *Server) Hold(channel string) (release func(), held func() bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	s.held[channel] = ch
	var waiting atomic.Bool
	s.waiting = &waiting
	var once sync.Once
	return func() {
			once.Do(func() {
				s.mu.Lock()
				delete(s.held, channel)
				s.mu.Unlock()
				close(ch)
			})
		}, func() bool {
			return waiting.Load()
		}
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New starts a fake Slack and stops it when the test ends.
func New(t testing.TB) *Server {
	s := &Server{t: t, BotToken: "xoxb-test-bot-token", AppToken: "xapp-test-app-token", Burst: 1,
		messages: map[string]*Message{}, users: map[string]User{}, triggers: map[string]time.Time{},
		buckets: map[string]*bucket{}, notIn: map[string]bool{}, acks: map[string]json.RawMessage{}, ackSignal: make(chan struct{}, 1)}
	s.ts = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", s.auth(s.postMessage))
		c.Handle("/chat.update", s.auth(s.update))
		c.Handle("/chat.postEphemeral", s.auth(s.postEphemeral))
		c.Handle("/views.open", s.auth(s.viewsOpen))
		c.Handle("/users.info", s.auth(s.usersInfo))
		c.Handle("/auth.test", s.auth(s.authTest))
		c.Handle("/apps.connections.open", s.appsConnectionsOpen)
		c.Handle("/socket", s.socket)
		c.Handle("/respond/", s.respond)
	})
	s.ts.Start()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server.
func (s *Server) Close() {
	s.wsMu.Lock()
	if s.ws != nil {
		s.ws.Close()
	}
	s.wsMu.Unlock()
	s.ts.Stop()
}

// APIURL is the Web API base URL, for slack.OptionAPIURL.
func (s *Server) APIURL() string { return s.ts.GetAPIURL() }

// SetBotToken changes the token the fake accepts (a reissued token).
func (s *Server) SetBotToken(tok string) {
	s.mu.Lock()
	s.BotToken = tok
	s.revoked = false
	s.mu.Unlock()
}

// RevokeBotToken makes the bot token answer token_revoked, as Slack does
// once an admin revokes it or the app is uninstalled.
func (s *Server) RevokeBotToken() {
	s.mu.Lock()
	s.revoked = true
	s.mu.Unlock()
}

// authTest answers auth.test: who the token is.
func (s *Server) authTest(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{"ok": true, "url": "https://opsbot-test.slack.com/", "team": "opsbot test", "user": "opsbot",
		"team_id": "T0TEAM", "user_id": "U0OPSBOT", "bot_id": "B0OPSBOT"})
}

// AddUser adds a workspace member.
func (s *Server) AddUser(u User) {
	s.mu.Lock()
	s.users[u.ID] = u
	s.mu.Unlock()
}

// NotInChannel makes posts to channel fail with not_in_channel.
func (s *Server) NotInChannel(channel string) {
	s.mu.Lock()
	s.notIn[channel] = true
	s.mu.Unlock()
}

// Trigger issues a trigger_id, valid for three seconds like Slack's.
func (s *Server) Trigger() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	id := fmt.Sprintf("%d.%d.trigger", s.seq, time.Now().UnixNano())
	s.triggers[id] = time.Now()
	return id
}

// ResponseURL issues a response_url.
func (s *Server) ResponseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return fmt.Sprintf("%srespond/%d", s.APIURL(), s.seq)
}

// Calls returns the calls so far of a method ("" for all).
func (s *Server) Calls(method string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if method == "" || c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Messages returns the messages in a channel, oldest first.
func (s *Server) Messages(channel string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for i := 1; i <= s.seq; i++ {
		for _, m := range s.messages {
			if m.Channel == channel && m.TS == tsOf(i) {
				out = append(out, *m)
			}
		}
	}
	return out
}

// Responses returns what was posted to response URLs.
func (s *Server) Responses() []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Response(nil), s.responses...)
}

// Limited counts the 429 answers given.
func (s *Server) Limited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limited
}

func tsOf(seq int) string { return fmt.Sprintf("1700000000.%06d", seq) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code string, extra ...string) {
	body := map[string]any{"ok": false, "error": code}
	if len(extra) > 0 {
		body["errors"] = extra
		body["response_metadata"] = map[string]any{"messages": extra}
	}
	writeJSON(w, body)
}

// auth enforces the bot token, sent as a bearer header or a form field.
func (s *Server) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			fail(w, "invalid_form_data")
			return
		}
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if tok == "" {
			tok = r.PostFormValue("token")
		}
		if tok == "" {
			fail(w, "not_authed")
			return
		}
		s.mu.Lock()
		want, revoked := s.BotToken, s.revoked
		s.mu.Unlock()
		if tok != want {
			fail(w, "invalid_auth")
			return
		}
		if revoked {
			fail(w, "token_revoked")
			return
		}
		next(w, r)
	}
}

func (s *Server) record(c Call) {
	s.mu.Lock()
	s.calls = append(s.calls, c)
	s.mu.Unlock()
}

func parseBlocks(raw string) ([]map[string]any, error) {
	if raw == "" {
		return nil, nil
	}
	var b []map[string]any
	err := json.Unmarshal([]byte(raw), &b)
	return b, err
}

// allow applies the per-channel rate limit: Burst, then one per second.
func (s *Server) allow(channel string) bool {
	now := time.Now()
	b, ok := s.buckets[channel]
	if !ok {
		b = &bucket{tokens: float64(s.Burst), at: now}
		s.buckets[channel] = b
	}
	b.tokens = min(float64(s.Burst), b.tokens+now.Sub(b.at).Seconds())
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// blocks reads a call's blocks and answers Slack's error when they are
// malformed or break a limit; it reports whether the call may go on.
func (s *Server) blocks(w http.ResponseWriter, r *http.Request, c *Call) ([]map[string]any, bool) {
	blocks, err := parseBlocks(r.PostFormValue("blocks"))
	if err != nil {
		c.Error = "invalid_blocks_format"
		s.record(*c)
		fail(w, c.Error)
		return nil, false
	}
	c.Blocks = blocks
	if problems := CheckBlocks(blocks); len(problems) > 0 {
		c.Error = "invalid_blocks"
		s.record(*c)
		fail(w, "invalid_blocks", problems...)
		return nil, false
	}
	return blocks, true
}

func (s *Server) postMessage(w http.ResponseWriter, r *http.Request) {
	c := Call{Method: "chat.postMessage", Channel: r.PostFormValue("channel"), ThreadTS: r.PostFormValue("thread_ts"), Text: r.PostFormValue("text")}
	s.mu.Lock()
	hold, waiting := s.held[c.Channel], s.waiting
	s.mu.Unlock()
	if hold != nil {
		waiting.Store(true)
		select {
		case <-hold:
		case <-r.Context().Done():
			return // the caller gave up: nothing posted
		}
	}
	blocks, ok := s.blocks(w, r, &c)
	if !ok {
		return
	}
	s.mu.Lock()
	if c.Channel == "" || s.notIn[c.Channel] {
		s.mu.Unlock()
		c.Error = "not_in_channel"
		if c.Channel == "" {
			c.Error = "channel_not_found"
		}
		s.record(c)
		fail(w, c.Error)
		return
	}
	if !s.allow(c.Channel) {
		s.limited++
		s.mu.Unlock()
		c.Error = "ratelimited"
		s.record(c)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		writeJSON(w, map[string]any{"ok": false, "error": "ratelimited"})
		return
	}
	s.seq++
	c.TS = tsOf(s.seq)
	s.messages[c.Channel+"/"+c.TS] = &Message{Channel: c.Channel, TS: c.TS, ThreadTS: c.ThreadTS, Text: c.Text, Blocks: blocks}
	s.mu.Unlock()
	s.record(c)
	writeJSON(w, map[string]any{"ok": true, "channel": c.Channel, "ts": c.TS, "message": map[string]any{"text": c.Text, "ts": c.TS}})
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	c := Call{Method: "chat.update", Channel: r.PostFormValue("channel"), TS: r.PostFormValue("ts"), Text: r.PostFormValue("text")}
	blocks, ok := s.blocks(w, r, &c)
	if !ok {
		return
	}
	s.mu.Lock()
	m, ok := s.messages[c.Channel+"/"+c.TS]
	if ok {
		m.Blocks, m.Text = blocks, c.Text
		m.Updates++
	}
	s.mu.Unlock()
	if !ok {
		c.Error = "message_not_found"
		s.record(c)
		fail(w, c.Error)
		return
	}
	s.record(c)
	writeJSON(w, map[string]any{"ok": true, "channel": c.Channel, "ts": c.TS, "text": c.Text})
}

func (s *Server) postEphemeral(w http.ResponseWriter, r *http.Request) {
	c := Call{Method: "chat.postEphemeral", Channel: r.PostFormValue("channel"), Text: r.PostFormValue("text")}
	blocks, _ := parseBlocks(r.PostFormValue("blocks"))
	c.Blocks = blocks
	s.record(c)
	writeJSON(w, map[string]any{"ok": true, "message_ts": tsOf(0)})
}

func (s *Server) viewsOpen(w http.ResponseWriter, r *http.Request) {
	c := Call{Method: "views.open"}
	var view map[string]any
	if err := json.Unmarshal([]byte(r.PostFormValue("view")), &view); err != nil {
		// slack-go sends views.open as JSON.
		var body struct {
			TriggerID string         `json:"trigger_id"`
			View      map[string]any `json:"view"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err == nil {
			view = body.View
			r.Form.Set("trigger_id", body.TriggerID)
		}
	}
	c.View = view
	trigger := r.Form.Get("trigger_id")
	s.mu.Lock()
	issued, ok := s.triggers[trigger]
	s.mu.Unlock()
	switch {
	case !ok:
		c.Error = "invalid_trigger_id"
	case time.Since(issued) > 3*time.Second:
		c.Error = "expired_trigger_id"
	case view == nil:
		c.Error = "invalid_arguments"
	}
	if c.Error == "" {
		if blocks, _ := view["blocks"].([]any); len(blocks) > 100 {
			c.Error = "invalid_blocks"
		}
	}
	s.record(c)
	if c.Error != "" {
		fail(w, c.Error)
		return
	}
	writeJSON(w, map[string]any{"ok": true, "view": map[string]any{"id": "V" + trigger, "callback_id": view["callback_id"]}})
}

func (s *Server) usersInfo(w http.ResponseWriter, r *http.Request) {
	id := r.PostFormValue("user")
	s.mu.Lock()
	u, ok := s.users[id]
	s.mu.Unlock()
	s.record(Call{Method: "users.info", Channel: id})
	if !ok {
		fail(w, "user_not_found")
		return
	}
	writeJSON(w, map[string]any{"ok": true, "user": map[string]any{"id": u.ID, "name": u.Name,
		"profile": map[string]any{"email": u.Email, "real_name": u.Name}}})
}

func (s *Server) respond(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.responses = append(s.responses, Response{ID: strings.TrimPrefix(r.URL.Path, "/respond/"), Body: body})
	s.mu.Unlock()
	_, _ = w.Write([]byte("ok"))
}

// CheckBlocks returns Block Kit limit violations in Slack's wording.
func CheckBlocks(blocks []map[string]any) []string {
	var out []string
	bad := func(ptr, msg string) { out = append(out, fmt.Sprintf("[ERROR] %s [json-pointer:%s]", msg, ptr)) }
	if len(blocks) > 50 {
		bad("/blocks", "no more than 50 items allowed")
	}
	textLen := func(v any) int {
		m, _ := v.(map[string]any)
		s, _ := m["text"].(string)
		return len([]rune(s))
	}
	actionIDs := map[string]bool{}
	for i, b := range blocks {
		p := fmt.Sprintf("/blocks/%d", i)
		switch b["type"] {
		case "header":
			if t, _ := b["text"].(map[string]any); t["type"] != "plain_text" {
				bad(p+"/text", "must be plain_text")
			}
			if textLen(b["text"]) > 150 {
				bad(p+"/text", "must be less than 151 characters")
			}
		case "section":
			if b["text"] == nil && b["fields"] == nil {
				bad(p, "must provide text or fields")
			}
			if textLen(b["text"]) > 3000 {
				bad(p+"/text", "must be less than 3001 characters")
			}
			fields, _ := b["fields"].([]any)
			if len(fields) > 10 {
				bad(p+"/fields", "no more than 10 items allowed")
			}
			for j, f := range fields {
				if textLen(f) > 2000 {
					bad(fmt.Sprintf("%s/fields/%d", p, j), "must be less than 2001 characters")
				}
			}
		case "actions":
			els, _ := b["elements"].([]any)
			if len(els) > 25 {
				bad(p+"/elements", "no more than 25 items allowed")
			}
			for j, e := range els {
				el, _ := e.(map[string]any)
				ep := fmt.Sprintf("%s/elements/%d", p, j)
				if textLen(el["text"]) > 75 {
					bad(ep+"/text", "must be less than 76 characters")
				}
				if v, _ := el["value"].(string); len(v) > 2000 {
					bad(ep+"/value", "must be less than 2001 characters")
				}
				id, _ := el["action_id"].(string)
				if len(id) > 255 {
					bad(ep+"/action_id", "must be less than 256 characters")
				}
				if actionIDs[id] {
					bad(ep+"/action_id", "duplicate action_id")
				}
				actionIDs[id] = true
			}
		case "context":
			els, _ := b["elements"].([]any)
			if len(els) > 10 || len(els) == 0 {
				bad(p+"/elements", "must have 1 to 10 items")
			}
		case "divider", "input":
		default:
			bad(p+"/type", fmt.Sprintf("unknown block type %v", b["type"]))
		}
	}
	return out
}

// Deliver posts body to the bot's endpoint signed with secret at ts, as
// Slack does, and returns the status and body of the answer.
func Deliver(url, contentType, secret string, ts time.Time, body []byte, header ...string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("X-Slack-Request-Timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("X-Slack-Signature", opsslack.Sign(secret, ts.Unix(), body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String(), nil
}

// SlashForm is the form Slack posts for "/ops <text>".
func (s *Server) SlashForm(userID, channel, text string) url.Values {
	return url.Values{"command": {"/ops"}, "text": {text}, "user_id": {userID}, "user_name": {userID}, "channel_id": {channel},
		"team_id": {"T0TEAM"}, "trigger_id": {s.Trigger()}, "response_url": {s.ResponseURL()}}
}

// ClickPayload is the interaction Slack posts when userID presses a button
// with value on the message at channel/ts.
func (s *Server) ClickPayload(userID, channel, ts, value string) []byte {
	cb := slack.InteractionCallback{Type: slack.InteractionTypeBlockActions, TriggerID: s.Trigger(), ResponseURL: s.ResponseURL(),
		User: slack.User{ID: userID, Name: userID}, Channel: slack.Channel{GroupConversation: slack.GroupConversation{Conversation: slack.Conversation{ID: channel}}},
		Container: slack.Container{Type: "message", MessageTs: ts, ChannelID: channel},
		ActionCallback: slack.ActionCallbacks{BlockActions: []*slack.BlockAction{{ActionID: "opsbot_0", BlockID: "opsbot_actions", Value: value,
			ActionTs: fmt.Sprintf("%d.%06d", time.Now().Unix(), time.Now().Nanosecond()/1000)}}}}
	b, _ := json.Marshal(cb)
	return b
}

// SubmitPayload is the view_submission for a modal the bot opened (its
// views.open call), with values by block id.
func (s *Server) SubmitPayload(userID string, view map[string]any, values map[string]string, selects map[string]string) []byte {
	state := map[string]map[string]slack.BlockAction{}
	for k, v := range values {
		state[k] = map[string]slack.BlockAction{"value": {Type: "plain_text_input", Value: v}}
	}
	for k, v := range selects {
		state[k] = map[string]slack.BlockAction{"value": {Type: "static_select", SelectedOption: slack.OptionBlockObject{Value: v}}}
	}
	cb := slack.InteractionCallback{Type: slack.InteractionTypeViewSubmission, User: slack.User{ID: userID, Name: userID},
		View: slack.View{ID: fmt.Sprintf("V%d", time.Now().UnixNano()), CallbackID: fmt.Sprint(view["callback_id"]),
			PrivateMetadata: fmt.Sprint(view["private_metadata"]), State: &slack.ViewState{Values: state}}}
	b, _ := json.Marshal(cb)
	return b
}

// MentionEvent is the Events API envelope of "@opsbot <text>" in channel.
func MentionEvent(eventID, userID, channel, text string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "event_callback", "team_id": "T0TEAM", "api_app_id": "A0APP", "event_id": eventID,
		"event": map[string]any{"type": "app_mention", "user": userID, "channel": channel, "text": "<@U0BOT> " + text, "ts": "1700000001.000100"}})
	return b
}

// Socket Mode.

// Slack does not check the Origin of its Socket Mode clients.
var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

func (s *Server) appsConnectionsOpen(w http.ResponseWriter, r *http.Request) {
	if strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") != s.AppToken {
		fail(w, "invalid_auth")
		return
	}
	writeJSON(w, map[string]any{"ok": true, "url": "ws://" + r.Host + "/socket"})
}

func (s *Server) socket(w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	s.wsMu.Lock()
	s.ws = conn
	_ = conn.WriteJSON(map[string]any{"type": "hello", "num_connections": 1,
		"connection_info": map[string]any{"app_id": "A0APP"}, "debug_info": map[string]any{"host": "fake"}})
	s.wsMu.Unlock()
	for {
		var ack struct {
			EnvelopeID string          `json:"envelope_id"`
			Payload    json.RawMessage `json:"payload"`
		}
		if err := conn.ReadJSON(&ack); err != nil {
			return
		}
		if ack.EnvelopeID != "" {
			s.mu.Lock()
			s.acks[ack.EnvelopeID] = ack.Payload
			s.mu.Unlock()
			select {
			case s.ackSignal <- struct{}{}:
			default:
			}
		}
	}
}

// Connected reports whether a Socket Mode client is connected.
func (s *Server) Connected() bool {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return s.ws != nil
}

// Envelope sends a Socket Mode envelope ("slash_commands", "interactive"
// or "events_api") and waits up to 3 s for the client's ack, returning its
// payload (nil for an empty ack).
func (s *Server) Envelope(typ string, payload []byte) (json.RawMessage, error) {
	s.mu.Lock()
	s.seq++
	id := fmt.Sprintf("env-%d", s.seq)
	s.mu.Unlock()
	s.wsMu.Lock()
	conn := s.ws
	var err error
	if conn == nil {
		err = fmt.Errorf("no socket mode client connected")
	} else {
		err = conn.WriteJSON(map[string]any{"envelope_id": id, "type": typ, "payload": json.RawMessage(payload), "accepts_response_payload": typ != "events_api"})
	}
	s.wsMu.Unlock()
	if err != nil {
		return nil, err
	}
	deadline := time.After(3 * time.Second)
	for {
		s.mu.Lock()
		p, ok := s.acks[id]
		s.mu.Unlock()
		if ok {
			return p, nil
		}
		select {
		case <-s.ackSignal:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			return nil, fmt.Errorf("envelope %s not acked within 3s", id)
		}
	}
}

// SlashPayload is the Socket Mode payload of "/ops <text>".
func (s *Server) SlashPayload(userID, channel, text string) []byte {
	f := s.SlashForm(userID, channel, text)
	m := map[string]string{}
	for k := range f {
		m[k] = f.Get(k)
	}
	b, _ := json.Marshal(m)
	return b
}
