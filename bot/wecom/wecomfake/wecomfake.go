// Package wecomfake is a faithful fake of the WeCom (企业微信) APIs opsbot
// uses, on httptest (real HTTP on loopback): gettoken (tokens that expire
// and rotate), message/send (template cards get a response code),
// message/update_template_card (codes work once, for 72 hours), and group
// robot webhooks, answering with WeCom's JSON error shape. It also makes
// callbacks encrypted and signed exactly as WeCom does (with the
// library's crypto helpers) and posts them to the bot.
//
// The library hard-codes WeCom's host, so tests point it here with
// Client, an HTTP client whose transport rewrites the host.
package wecomfake

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot/wecom"
)

// Token errors WeCom returns.
const (
	ErrInvalidToken = 40014
	ErrExpiredToken = 42001
	ErrInvalidCorp  = 40013
	ErrBadSecret    = 40001
	// ErrBadResponseCode answers an unknown, used or expired response
	// code. WeCom documents that a code works once within 72 hours but no
	// distinct errcode for breaking that rule; the transport treats any
	// non-token error here as "the code is unusable".
	ErrBadResponseCode = 40099
	ErrBadWebhook      = 93000
	// Group robot message errors (webhook/send).
	ErrBadJSON        = 40035
	ErrBadMsgType     = 40008
	ErrEmptyContent   = 44004
	ErrContentTooLong = 45002
	ErrBadParam       = 40058
)

// Sent is one app message the fake accepted.
type Sent struct {
	ToUser       string
	MsgType      string
	Text         string
	Card         *wecom.Card
	ResponseCode string
	Raw          map[string]any
}

// Update is one accepted update_template_card call.
type Update struct {
	UserIDs      []string
	ResponseCode string
	ReplaceName  string
}

// Fake is the fake WeCom.
type Fake struct {
	srv     *httptest.Server
	CorpID  string
	Secret  string
	AgentID string
	Token   string
	AESKey  string

	mu        sync.Mutex
	tokens    map[string]time.Time // token -> expiry
	issued    int
	codes     map[string]time.Time // response code -> expiry
	used      map[string]bool
	sent      []Sent
	updates   []Update
	robotPost map[string][]string
	robotMsgs map[string][]RobotMessage
	seq       int
	tasks     map[string]bool
	closed    bool
}

// New starts a fake WeCom.
func New(t testing.TB) *Fake {
	f := &Fake{CorpID: "ww0a1b2c3d4e5f6789", Secret: "app-secret-value", AgentID: "1000002", Token: "callbacktoken123",
		AESKey: "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C", tokens: map[string]time.Time{}, codes: map[string]time.Time{},
		used: map[string]bool{}, robotPost: map[string][]string{}, robotMsgs: map[string][]RobotMessage{}, tasks: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /cgi-bin/gettoken", f.gettoken)
	mux.HandleFunc("POST /cgi-bin/message/send", f.token(f.send))
	mux.HandleFunc("POST /cgi-bin/message/update_template_card", f.token(f.update))
	mux.HandleFunc("POST /cgi-bin/webhook/send", f.webhook)
	mux.HandleFunc("GET /cgi-bin/agent/get", f.token(f.agent))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

// Client is an HTTP client that sends WeCom's host to the fake.
func (f *Fake) Client() *http.Client {
	u, _ := url.Parse(f.srv.URL)
	return &http.Client{Timeout: 10 * time.Second, Transport: rewrite{host: u.Host}}
}

type rewrite struct{ host string }

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host == "qyapi.weixin.qq.com" {
		req = req.Clone(req.Context())
		req.URL.Scheme, req.URL.Host, req.Host = "http", r.host, r.host
	}
	return http.DefaultTransport.RoundTrip(req)
}

func reply(w http.ResponseWriter, v map[string]any) {
	if _, ok := v["errcode"]; !ok {
		v["errcode"], v["errmsg"] = 0, "ok"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func errReply(w http.ResponseWriter, code int, msg string) {
	reply(w, map[string]any{"errcode": code, "errmsg": msg})
}

func (f *Fake) gettoken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("corpid") != f.CorpID {
		errReply(w, ErrInvalidCorp, "invalid corpid")
		return
	}
	f.mu.Lock()
	secret := f.Secret
	f.mu.Unlock()
	if q.Get("corpsecret") != secret {
		errReply(w, ErrBadSecret, "invalid credential")
		return
	}
	f.mu.Lock()
	f.issued++
	tok := fmt.Sprintf("token-%d-%d", f.issued, time.Now().UnixNano())
	f.tokens[tok] = time.Now().Add(7200 * time.Second)
	f.mu.Unlock()
	reply(w, map[string]any{"access_token": tok, "expires_in": 7200})
}

// TokensIssued counts gettoken calls that succeeded.
func (f *Fake) TokensIssued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.issued
}

// ExpireTokens makes every issued token expired, as after two hours.
func (f *Fake) ExpireTokens() {
	f.mu.Lock()
	for k := range f.tokens {
		f.tokens[k] = time.Now().Add(-time.Second)
	}
	f.mu.Unlock()
}

// SetSecret changes the app's secret, as resetting it in the admin
// console does: gettoken with the old one fails with 40001. Tokens
// already issued stay valid until they expire (see ExpireTokens).
func (f *Fake) SetSecret(secret string) {
	f.mu.Lock()
	f.Secret = secret
	f.mu.Unlock()
}

// CloseApp disables (停用) or enables the app.
func (f *Fake) CloseApp(closed bool) {
	f.mu.Lock()
	f.closed = closed
	f.mu.Unlock()
}

// agent answers agent/get for the one app the fake knows.
func (f *Fake) agent(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("agentid") != f.AgentID {
		errReply(w, 40056, "invalid agentid")
		return
	}
	f.mu.Lock()
	closed := 0
	if f.closed {
		closed = 1
	}
	f.mu.Unlock()
	id, _ := strconv.Atoi(f.AgentID)
	reply(w, map[string]any{"agentid": id, "name": "opsbot", "close": closed})
}

// ExpireCodes makes every response code older than 72 hours.
func (f *Fake) ExpireCodes() {
	f.mu.Lock()
	for k := range f.codes {
		f.codes[k] = time.Now().Add(-time.Second)
	}
	f.mu.Unlock()
}

func (f *Fake) token(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.URL.Query().Get("access_token")
		f.mu.Lock()
		exp, ok := f.tokens[tok]
		f.mu.Unlock()
		switch {
		case !ok:
			errReply(w, ErrInvalidToken, "invalid access_token")
		case time.Now().After(exp):
			errReply(w, ErrExpiredToken, "access_token expired")
		default:
			next(w, r)
		}
	}
}

func (f *Fake) send(w http.ResponseWriter, r *http.Request) {
	var raw map[string]any
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		errReply(w, 47001, "data format error")
		return
	}
	s := Sent{ToUser: fmt.Sprint(raw["touser"]), MsgType: fmt.Sprint(raw["msgtype"]), Raw: raw}
	if fmt.Sprint(raw["agentid"]) != f.AgentID {
		errReply(w, 40056, "invalid agentid")
		return
	}
	switch s.MsgType {
	case "text":
		t, _ := raw["text"].(map[string]any)
		s.Text = fmt.Sprint(t["content"])
		if len(s.Text) > 2048 {
			errReply(w, ErrBadParam, "text content exceeds 2048 bytes")
			return
		}
	case "template_card":
		b, _ := json.Marshal(raw["template_card"])
		var c wecom.Card
		_ = json.Unmarshal(b, &c)
		if msg := checkCard(c); msg != "" {
			errReply(w, ErrBadParam, msg)
			return
		}
		f.mu.Lock()
		dup := f.tasks[c.TaskID]
		f.tasks[c.TaskID] = true
		f.mu.Unlock()
		if dup {
			errReply(w, ErrBadParam, "task_id already exists")
			return
		}
		s.Card = &c
	default:
		errReply(w, 40008, "invalid message type")
		return
	}
	f.mu.Lock()
	f.seq++
	msgID := fmt.Sprintf("msg%d", f.seq)
	if s.Card != nil {
		s.ResponseCode = fmt.Sprintf("code-%d-%d", f.seq, time.Now().UnixNano())
		f.codes[s.ResponseCode] = time.Now().Add(72 * time.Hour)
	}
	f.sent = append(f.sent, s)
	f.mu.Unlock()
	out := map[string]any{"invaliduser": "", "msgid": msgID}
	if s.ResponseCode != "" {
		out["response_code"] = s.ResponseCode
	}
	reply(w, out)
}

// checkCard applies WeCom's button_interaction card limits.
func checkCard(c wecom.Card) string {
	switch {
	case c.CardType != "button_interaction":
		return "invalid card_type"
	case c.TaskID == "" || len(c.TaskID) > 128:
		return "task_id must be 1 to 128 bytes"
	case c.MainTitle.Title == "":
		return "main_title.title is required"
	case len(c.ButtonList) == 0 || len(c.ButtonList) > 6:
		return "button_list must have 1 to 6 buttons"
	case len(c.HorizontalContentList) > 6:
		return "horizontal_content_list has at most 6 items"
	}
	for _, b := range c.ButtonList {
		if b.Key == "" || len(b.Key) > 1024 {
			return "button key must be 1 to 1024 bytes"
		}
	}
	return ""
}

func (f *Fake) update(w http.ResponseWriter, r *http.Request) {
	var req struct {
		UserIDs      []string `json:"userids"`
		AgentID      any      `json:"agentid"`
		ResponseCode string   `json:"response_code"`
		Button       struct {
			ReplaceName string `json:"replace_name"`
		} `json:"button"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		errReply(w, 47001, "data format error")
		return
	}
	f.mu.Lock()
	exp, ok := f.codes[req.ResponseCode]
	valid := ok && !f.used[req.ResponseCode] && time.Now().Before(exp)
	if valid {
		f.used[req.ResponseCode] = true
		f.updates = append(f.updates, Update{UserIDs: req.UserIDs, ResponseCode: req.ResponseCode, ReplaceName: req.Button.ReplaceName})
	}
	f.mu.Unlock()
	if !valid {
		errReply(w, ErrBadResponseCode, "invalid response_code")
		return
	}
	reply(w, map[string]any{"invaliduser": []string{}})
}

// AddRobot registers a group robot webhook key.
func (f *Fake) AddRobot(key string) {
	f.mu.Lock()
	f.robotPost[key] = []string{}
	f.mu.Unlock()
}

// RobotMessage is one message a group robot accepted.
type RobotMessage struct {
	MsgType string
	Content string
	// MentionedList are the user ids a text message mentions ("@all":
	// everyone in the group).
	MentionedList []string
}

// webhook is a group robot's webhook/send: text (content up to 2048
// bytes, mentioned_list) or markdown (content up to 4096 bytes, no
// mentions), as WeCom documents them; anything else is refused with
// WeCom's codes.
func (f *Fake) webhook(w http.ResponseWriter, r *http.Request) {
	key := r.URL.Query().Get("key")
	var body struct {
		MsgType string `json:"msgtype"`
		Text    *struct {
			Content             string   `json:"content"`
			MentionedList       []string `json:"mentioned_list"`
			MentionedMobileList []string `json:"mentioned_mobile_list"`
		} `json:"text"`
		Markdown *struct {
			Content string `json:"content"`
		} `json:"markdown"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		errReply(w, ErrBadJSON, "Warning: wrong json format.")
		return
	}
	var m RobotMessage
	switch {
	case body.MsgType == "text" && body.Text != nil:
		m = RobotMessage{MsgType: "text", Content: body.Text.Content, MentionedList: body.Text.MentionedList}
		if len(m.Content) > 2048 {
			errReply(w, ErrContentTooLong, "content exceed max length 2048")
			return
		}
	case body.MsgType == "markdown" && body.Markdown != nil:
		m = RobotMessage{MsgType: "markdown", Content: body.Markdown.Content}
		if len(m.Content) > 4096 {
			errReply(w, ErrContentTooLong, "markdown.content exceed max length 4096")
			return
		}
	default:
		errReply(w, ErrBadMsgType, "invalid message type")
		return
	}
	if m.Content == "" {
		errReply(w, ErrEmptyContent, "empty content")
		return
	}
	f.mu.Lock()
	posts, ok := f.robotPost[key]
	if ok {
		f.robotPost[key] = append(posts, m.Content)
		f.robotMsgs[key] = append(f.robotMsgs[key], m)
	}
	f.mu.Unlock()
	if !ok {
		errReply(w, ErrBadWebhook, "invalid webhook url")
		return
	}
	reply(w, map[string]any{})
}

// RobotMessages returns the messages a group robot accepted.
func (f *Fake) RobotMessages(key string) []RobotMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]RobotMessage(nil), f.robotMsgs[key]...)
}

// Sent returns the app messages sent to user ("" for all).
func (f *Fake) Sent(user string) []Sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Sent
	for _, s := range f.sent {
		if user == "" || s.ToUser == user {
			out = append(out, s)
		}
	}
	return out
}

// Updates returns the accepted card updates.
func (f *Fake) Updates() []Update {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Update(nil), f.updates...)
}

// RobotPosts returns what a group robot received.
func (f *Fake) RobotPosts(key string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.robotPost[key]...)
}

// Callback encrypts and signs cb as WeCom does and posts it to the bot's
// callback URL; it returns the HTTP status.
func (f *Fake) Callback(endpoint string, cb wecom.Callback) (int, error) {
	cb.ToUserName, cb.AgentID = f.CorpID, f.AgentID
	if cb.CreateTime == 0 {
		cb.CreateTime = time.Now().Unix()
	}
	plain, err := xml.Marshal(cb)
	if err != nil {
		return 0, err
	}
	return f.Post(endpoint, f.CorpID, f.Token, plain)
}

// Post seals plain for corpID with token and posts it (tests use other
// corp ids and tokens to check verification).
func (f *Fake) Post(endpoint, corpID, token string, plain []byte) (int, error) {
	ts, nonce := fmt.Sprint(time.Now().Unix()), fmt.Sprintf("n%d", time.Now().UnixNano())
	body, sig, err := wecom.Seal(corpID, token, f.AESKey, ts, nonce, plain)
	if err != nil {
		return 0, err
	}
	u := fmt.Sprintf("%s?msg_signature=%s&timestamp=%s&nonce=%s", endpoint, sig, ts, nonce)
	resp, err := http.Post(u, "text/xml", strings.NewReader(string(body)))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Capture seals cb as WeCom would have at the given time and returns the
// callback URL and body, so a test can send (and send again) exactly what
// an eavesdropper captured.
func (f *Fake) Capture(endpoint string, cb wecom.Callback, at time.Time) (string, []byte, error) {
	cb.ToUserName, cb.AgentID, cb.CreateTime = f.CorpID, f.AgentID, at.Unix()
	plain, err := xml.Marshal(cb)
	if err != nil {
		return "", nil, err
	}
	ts, nonce := fmt.Sprint(at.Unix()), fmt.Sprintf("n%d", time.Now().UnixNano())
	body, sig, err := wecom.Seal(f.CorpID, f.Token, f.AESKey, ts, nonce, plain)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("%s?msg_signature=%s&timestamp=%s&nonce=%s", endpoint, sig, ts, nonce), body, nil
}

// VerifyURL performs WeCom's GET URL verification with corpID and token
// and returns the status and echoed text.
func (f *Fake) VerifyURL(endpoint, corpID, token, echo string) (int, string, error) {
	ts, nonce := fmt.Sprint(time.Now().Unix()), "nonce1"
	sealed, _, err := wecom.Seal(corpID, token, f.AESKey, ts, nonce, []byte(echo))
	if err != nil {
		return 0, "", err
	}
	var env struct {
		Encrypt string `xml:"Encrypt"`
	}
	_ = xml.Unmarshal(sealed, &env)
	sig := wecom.SignatureOf(token, ts, nonce, env.Encrypt)
	q := url.Values{"msg_signature": {sig}, "timestamp": {ts}, "nonce": {nonce}, "echostr": {env.Encrypt}}
	resp, err := http.Get(endpoint + "?" + q.Encode())
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// EventCode issues the response code a template_card_event carries.
func (f *Fake) EventCode() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	code := fmt.Sprintf("event-code-%d-%d", f.seq, time.Now().UnixNano())
	f.codes[code] = time.Now().Add(72 * time.Hour)
	return code
}
