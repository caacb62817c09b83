package wecom

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"opsbot/commands"
	"opsbot/flows"
	"strings"
	"sync"
	"time"

	"github.com/silenceper/wechat/v2/cache"
	"github.com/silenceper/wechat/v2/credential"
	"github.com/silenceper/wechat/v2/util"
	"github.com/silenceper/wechat/v2/work"
	workcfg "github.com/silenceper/wechat/v2/work/config"
	"github.com/silenceper/wechat/v2/work/message"
	"github.com/silenceper/wechat/v2/work/robot"

	"opsbot/bot/endpoint"
	"opsbot/templates"
)

// APIBase is WeCom's API host; the library hard-codes it too.
const APIBase = "https://qyapi.weixin.qq.com"

// Token errors: the cached access token is invalid or expired.
const (
	errInvalidToken = 40014
	errExpiredToken = 42001
)

// Input is one piece of WeCom input handed to the bot.
type Input struct {
	UserID string
	Text   string
	Click  bool
	Key    string
}

// Pacer spaces messages per member (WeCom drops messages beyond its
// per-member frequency limit instead of refusing them).
type Pacer = endpoint.Pacer

// Robot is a group robot webhook that gets a flow's (or an
// environment's) results; empty Flow and Env match every ticket.
type Robot struct {
	Flow string
	Env  string
	Key  string
}

// Config configures the transport; secrets come from the environment.
type Config struct {
	Listen         string
	CorpID         string
	AgentID        string
	Secret         string
	Token          string
	EncodingAESKey string
	Robots         []Robot
	// ChannelRobots maps opsbot's channel names (e.g. "infra") to group
	// robot keys, for warnings posted to a team.
	ChannelRobots map[string]string
	// Cache keeps the access token: Redis when configured, memory otherwise.
	Cache cache.Cache
	Now   func() time.Time
	// Timeouts bound the callback server's connections.
	Timeouts endpoint.Timeouts
}

// Deps is what the transport needs from the bot.
type Deps struct {
	Handle func(ctx context.Context, in Input) []templates.Message
	// Act reads a button's key as an action on a ticket.
	Act func(text string) (commands.Act, bool)
	// Cards keeps where this platform's cards are; Inbox keeps input
	// recorded before its ack.
	Cards endpoint.Cards
	Inbox endpoint.Inbox
	// Scope returns a ticket's flow and env field, which pick the group
	// robots that hear about it.
	Scope func(ctx context.Context, ticket string) (flow, env string, err error)
	Pace  Pacer
	// Refuse records callbacks refused at the edge (bounded, sampled).
	Refuse endpoint.Refuser
	Log    *slog.Logger
}

// Transport is the WeCom transport.
type Transport struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	work  *work.Work
	msg   *message.Client
	robot *robot.Client

	ep  *endpoint.Server
	seq sync.Mutex
	n   int64
	// settling holds the task ids of pressed cards being answered: their
	// own update (with the press's code) wins over a redraw.
	settling map[string]bool

	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
}

// New builds the transport; Start serves the callback endpoint.
func New(cfg Config, deps Deps) *Transport {
	if deps.Act == nil {
		deps.Act = commands.Default().DecodeAct
	}
	if cfg.Cache == nil {
		cfg.Cache = cache.NewMemory()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if util.DefaultHTTPClient == http.DefaultClient {
		// The library's client has no timeout; a hung WeCom call must not
		// hold a delivery forever.
		util.DefaultHTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	wk := work.NewWork(&workcfg.Config{CorpID: cfg.CorpID, CorpSecret: cfg.Secret, AgentID: cfg.AgentID, Cache: cfg.Cache,
		Token: cfg.Token, EncodingAESKey: cfg.EncodingAESKey})
	log := deps.Log.With("platform", "wecom")
	if deps.Refuse == nil {
		deps.Refuse = func(context.Context, endpoint.Refusal) {}
	}
	return &Transport{cfg: cfg, deps: deps, log: log, work: wk, ep: endpoint.New(log, deps.Inbox, "wecom", cfg.Timeouts, nil),
		msg: message.NewClient(wk.GetContext()), robot: robot.NewClient(wk.GetContext()), settling: map[string]bool{}}
}

// Platform implements the bot's Transport.
func (t *Transport) Platform() string { return "wecom" }

// Addr is the callback endpoint's address, once started.
func (t *Transport) Addr() string { return t.ep.Addr() }

// Start serves the callback endpoint.
// Replay handles recorded input whose process stopped before handling
// it (see endpoint.Server.Replay).
func (t *Transport) Replay(ctx context.Context) error { return t.ep.Replay(ctx) }

func (t *Transport) Start(ctx context.Context) error {
	t.ep.Register("callback", func(ctx context.Context, plain []byte) {
		var cb Callback
		if err := xml.Unmarshal(plain, &cb); err == nil {
			t.handle(ctx, cb)
		}
	})
	if err := t.ep.Replay(ctx); err != nil {
		return fmt.Errorf("wecom: replay input received before a restart: %w", err)
	}
	if err := t.ep.Listen(t.cfg.Listen, t.Handler()); err != nil {
		return fmt.Errorf("wecom: %w", err)
	}
	return nil
}

// Stop stops the endpoint and waits for work in progress.
func (t *Transport) Stop() { t.ep.Stop() }

// tokenCacheKey is the library's cache key for this app's access token.
func (t *Transport) tokenCacheKey() string {
	return fmt.Sprintf("%s_access_token_%s_%s", credential.CacheKeyWorkPrefix, t.cfg.CorpID, t.cfg.AgentID)
}

// apiError is a WeCom errcode, shown to people in plain Chinese.
type apiError struct {
	Code int64
	Msg  string
	API  string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("企业微信接口 %s 返回错误 %d：%s", e.API, e.Code, e.Msg)
}

// withToken runs a call, and when WeCom says the access token is invalid
// or expired (40014, 42001) drops the cached token and tries once more.
func (t *Transport) withToken(api string, call func() (int64, string, error)) error {
	for attempt := 0; ; attempt++ {
		code, msg, err := call()
		if err != nil {
			return fmt.Errorf("wecom %s: %w", api, err)
		}
		if (code == errInvalidToken || code == errExpiredToken) && attempt == 0 {
			t.log.Warn("wecom access token rejected; fetching a new one", "errcode", code)
			if err := t.cfg.Cache.Delete(t.tokenCacheKey()); err != nil {
				return fmt.Errorf("drop cached token: %w", err)
			}
			continue
		}
		if code != 0 {
			return &apiError{Code: code, Msg: msg, API: api}
		}
		return nil
	}
}

type cardRequest struct {
	message.SendRequestCommon
	TemplateCard Card `json:"template_card"`
}

type textRequest struct {
	message.SendRequestCommon
	Text message.TextField `json:"text"`
}

// send sends an app message; for a ticket card with buttons it sends a
// template card and returns its task id and response code.
func (t *Transport) send(ctx context.Context, user string, m templates.Message) (task, code string, err error) {
	if err := endpoint.Wait(ctx, t.deps.Pace, "wecom:user:"+user); err != nil {
		return "", "", err
	}
	common := message.SendRequestCommon{ToUser: user, AgentID: t.cfg.AgentID}
	var req any
	if m.Ticket != "" && len(m.Buttons) > 0 {
		task = t.taskID(m)
		common.MsgType = "template_card"
		req = cardRequest{SendRequestCommon: common, TemplateCard: Render(m, task)}
	} else {
		common.MsgType = "text"
		req = textRequest{SendRequestCommon: common, Text: message.TextField{Content: Text(m)}}
	}
	err = t.withToken("message/send", func() (int64, string, error) {
		resp, err := t.msg.Send("message/send", req)
		if resp == nil {
			return 0, "", err
		}
		code = resp.ResponseCode
		return resp.ErrCode, resp.ErrMsg, nil
	})
	return task, code, err
}

func (t *Transport) taskID(m templates.Message) string {
	t.seq.Lock()
	t.n++
	n := t.n
	t.seq.Unlock()
	return fmt.Sprintf("%s-v%d-%d-%d", m.Ticket, m.Version, t.cfg.Now().UnixNano(), n)
}

// Send implements the bot's Transport: an app message to a WeCom user.
// Cards are remembered with their response code so they can be updated.
func (t *Transport) Send(ctx context.Context, user string, m templates.Message) error {
	task, code, err := t.send(ctx, user, m)
	if err != nil {
		return err
	}
	if task != "" {
		return t.deps.Cards.AddCard(ctx, m.Ticket, endpoint.CardRef{Channel: user, TS: code, Task: task,
			Stage: m.Stage, Version: m.Version})
	}
	return nil
}

type updateRequest struct {
	UserIDs      []string `json:"userids"`
	AgentID      string   `json:"agentid"`
	ResponseCode string   `json:"response_code"`
	Button       struct {
		ReplaceName string `json:"replace_name"`
	} `json:"button"`
}

// update replaces a card's buttons with text, consuming a response code
// (valid 72 hours, once).
func (t *Transport) update(ctx context.Context, user, code, text string) error {
	req := updateRequest{UserIDs: []string{user}, AgentID: t.cfg.AgentID, ResponseCode: code}
	req.Button.ReplaceName = templates.Clip(text, 30)
	return t.withToken("message/update_template_card", func() (int64, string, error) {
		token, err := t.work.GetContext().GetAccessToken()
		if err != nil {
			return 0, "", err
		}
		raw, err := util.PostJSONContext(ctx, APIBase+"/cgi-bin/message/update_template_card?access_token="+token, req)
		if err != nil {
			return 0, "", err
		}
		var resp util.CommonError
		if err := json.Unmarshal(raw, &resp); err != nil {
			return 0, "", err
		}
		return resp.ErrCode, resp.ErrMsg, nil
	})
}

// Ready says whether WeCom accepts the app: a token from the corp id and
// secret, and the app itself (agent/get) neither unknown nor disabled.
// The answer is kept 5 seconds so a busy /readyz does not spend quota.
func (t *Transport) Ready(ctx context.Context) error {
	t.readyMu.Lock()
	defer t.readyMu.Unlock()
	if time.Since(t.readyAt) < 5*time.Second {
		return t.readyErr
	}
	var closed int
	err := t.withToken("agent/get", func() (int64, string, error) {
		token, err := t.work.GetContext().GetAccessToken()
		if err != nil {
			return 0, "", err
		}
		raw, err := util.HTTPGetContext(ctx, fmt.Sprintf("%s/cgi-bin/agent/get?access_token=%s&agentid=%s",
			APIBase, url.QueryEscape(token), url.QueryEscape(t.cfg.AgentID)))
		if err != nil {
			return 0, "", err
		}
		var resp struct {
			util.CommonError
			Close int `json:"close"`
		}
		if err := json.Unmarshal(raw, &resp); err != nil {
			return 0, "", err
		}
		closed = resp.Close
		return resp.ErrCode, resp.ErrMsg, nil
	})
	switch {
	case err != nil:
		err = fmt.Errorf("WeCom does not accept the app (%w); check wecom.corp_id, wecom.agent_id and wecom.secret_env", err)
	case closed != 0:
		err = fmt.Errorf("the WeCom app %s is disabled (停用) in the admin console: enable it so cards reach people", t.cfg.AgentID)
	}
	t.readyAt, t.readyErr = time.Now(), err
	return err
}

func isTokenOrTransport(err error) bool {
	var ae *apiError
	return !errors.As(err, &ae)
}

// UpdateCards implements the bot's CardUpdater. A card whose stage the
// ticket has left gets its buttons replaced with "已处理"; when its update
// code has expired or was used, a new card with the current state is sent
// instead, so nothing is lost. Results also go to the group robots.
func (t *Transport) UpdateCards(ctx context.Context, ticket string, m templates.Message) error {
	refs, err := t.deps.Cards.Cards(ctx, ticket)
	if err != nil {
		return err
	}
	var errs []error
	changed := false
	for i, r := range refs {
		if r.Version >= m.Version || r.Stage == m.Stage || r.TS == "" || t.isSettling(r.Task) {
			continue
		}
		err := t.update(ctx, r.Channel, r.TS, "已处理 · "+chinese(m.StageTitle))
		if err != nil && isTokenOrTransport(err) {
			errs = append(errs, err)
			continue
		}
		refs[i].TS, changed = "", true // the code is spent either way
		if err != nil {
			t.log.Warn("card update code unusable; sending a new card", "ticket", ticket, "user", r.Channel, "err", err)
			if err := t.Send(ctx, r.Channel, m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if changed {
		if err := t.deps.Cards.SetCards(ctx, ticket, refs); err != nil {
			errs = append(errs, err)
		}
	}
	if m.Ended {
		errs = append(errs, t.broadcast(ctx, ticket, m))
	}
	return errors.Join(errs...)
}

// PostProgress implements the bot's ProgressPoster: a step's progress
// goes to the group robots of the ticket's flow or environment.
func (t *Transport) PostProgress(ctx context.Context, ticket string, m templates.Message) error {
	return t.broadcast(ctx, ticket, m)
}

// PostChannel implements the bot's ChannelPoster through the channel's
// group robot, when this config has one for it.
func (t *Transport) PostChannel(ctx context.Context, channel string, m templates.Message) error {
	key := t.cfg.ChannelRobots[channel]
	if key == "" {
		return nil
	}
	return t.robotSend(key, m)
}

func (t *Transport) robotSend(key string, m templates.Message) error {
	var opt any
	if m.MentionAll {
		// Only a text message mentions: markdown cannot.
		txt := robot.WebhookSendTextOption{MsgType: "text"}
		txt.Text.Content = clipBytes(templates.Text(m), maxRobotTextBytes)
		txt.Text.MentionedList = []string{"@all"}
		opt = txt
	} else {
		md := robot.WebhookSendMarkdownOption{MsgType: "markdown"}
		md.Markdown.Content = Markdown(m)
		opt = md
	}
	info, err := t.robot.RobotBroadcast(key, opt)
	if err == nil && info.ErrCode != 0 {
		err = &apiError{Code: info.ErrCode, Msg: info.ErrMsg, API: "webhook/send"}
	}
	if err != nil {
		return fmt.Errorf("group robot: %w", err)
	}
	return nil
}

func (t *Transport) broadcast(ctx context.Context, ticket string, m templates.Message) error {
	if len(t.cfg.Robots) == 0 {
		return nil
	}
	flow, env, err := t.deps.Scope(ctx, ticket)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range t.cfg.Robots {
		if (r.Flow != "" && r.Flow != flow) || (r.Env != "" && r.Env != env) {
			continue
		}
		if err := t.robotSend(r.Key, m); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Callbacks.

type envelope struct {
	XMLName    xml.Name `xml:"xml"`
	ToUserName string   `xml:"ToUserName"`
	Encrypt    string   `xml:"Encrypt"`
	AgentID    string   `xml:"AgentID"`
}

// Callback is a decrypted WeCom callback message.
type Callback struct {
	XMLName      xml.Name `xml:"xml"`
	ToUserName   string   `xml:"ToUserName"`
	FromUserName string   `xml:"FromUserName"`
	CreateTime   int64    `xml:"CreateTime"`
	MsgType      string   `xml:"MsgType"`
	Content      string   `xml:"Content"`
	MsgID        string   `xml:"MsgId"`
	AgentID      string   `xml:"AgentID"`
	Event        string   `xml:"Event"`
	EventKey     string   `xml:"EventKey"`
	TaskID       string   `xml:"TaskId"`
	CardType     string   `xml:"CardType"`
	ResponseCode string   `xml:"ResponseCode"`
}

// MaxCallbackBytes bounds a callback body. WeCom's callbacks are a few
// KiB (a text message holds at most 2048 bytes before encryption).
const MaxCallbackBytes = 64 << 10

// refusal is a callback that failed a check, with the check's class.
type refusal struct{ class, reason string }

func (r *refusal) Error() string { return r.class + ": " + r.reason }

func refused(class, format string, a ...any) *refusal {
	return &refusal{class: class, reason: fmt.Sprintf(format, a...)}
}

// Handler serves the callback URL: GET verifies it (signature over token,
// timestamp, nonce and echostr; decrypt and echo), POST receives messages
// and card events. Checks run cheapest first: the query's timestamp must
// be within five minutes of now (before the body is read), the body at
// most MaxCallbackBytes, the signature right, the message made for this
// corp id, and the delivery not seen before (its signature and nonce are
// remembered for endpoint.ReplayTTL). A failed check gets 401 (a replay:
// 200, so a genuine retry stops) and a bounded, sampled audit entry.
// Replies are immediate; the work continues in the background.
func (t *Transport) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /wecom/callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if err := endpoint.Fresh(q.Get("timestamp"), time.Now()); err != nil {
			t.refuse(w, r, refused("freshness", "%v", err))
			return
		}
		plain, err := t.open(q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce"), q.Get("echostr"))
		if err != nil {
			t.refuse(w, r, err)
			return
		}
		_, _ = w.Write(plain)
	})
	mux.HandleFunc("POST /wecom/callback", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		sig, ts, nonce := q.Get("msg_signature"), q.Get("timestamp"), q.Get("nonce")
		if sig == "" || nonce == "" {
			t.refuse(w, r, refused("signature", "no msg_signature or nonce"))
			return
		}
		if err := endpoint.Fresh(ts, time.Now()); err != nil {
			t.refuse(w, r, refused("freshness", "%v", err))
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxCallbackBytes))
		if err != nil {
			t.refuse(w, r, refused("too_large", "body over %d bytes", MaxCallbackBytes))
			return
		}
		var env envelope
		if err := xml.Unmarshal(body, &env); err != nil {
			t.refuse(w, r, refused("malformed", "not a callback envelope: %v", err))
			return
		}
		plain, err := t.open(sig, ts, nonce, env.Encrypt)
		if err != nil {
			t.refuse(w, r, err)
			return
		}
		var cb Callback
		if err := xml.Unmarshal(plain, &cb); err != nil {
			t.refuse(w, r, refused("malformed", "bad callback: %v", err))
			return
		}
		if cb.FromUserName == "" || cb.MsgType == "" {
			// WeCom always says who sent what; nothing is anonymous.
			t.refuse(w, r, refused("malformed", "callback without FromUserName or MsgType"))
			return
		}
		// Recorded before the ack, unless this exact delivery was seen. The
		// key starts with the timestamp, so a busy minute's keys sit side
		// by side in the store.
		if !t.ep.Durable("callback", plain, ts+":"+sig+":"+nonce) {
			t.deps.Refuse(r.Context(), endpoint.Refusal{Platform: "wecom", Remote: endpoint.RemoteHost(r), Action: r.Method + " " + r.URL.Path,
				Class: "replay", Reason: "this signed delivery was received before"})
		}
		w.WriteHeader(http.StatusOK) // an empty 200 tells WeCom it arrived
	})
	return mux
}

// open checks the signature and decrypts; DecryptMsg also checks that the
// message was made for this corp id.
func (t *Transport) open(signature, timestamp, nonce, encrypted string) ([]byte, error) {
	if signature == "" || encrypted == "" || SignatureOf(t.cfg.Token, timestamp, nonce, encrypted) != signature {
		return nil, refused("signature", "bad msg_signature")
	}
	_, plain, err := util.DecryptMsg(t.cfg.CorpID, encrypted, t.cfg.EncodingAESKey)
	if err != nil {
		return nil, refused("signature", "decrypt: %v", err)
	}
	return plain, nil
}

func (t *Transport) refuse(w http.ResponseWriter, r *http.Request, err error) {
	class, reason := "malformed", err.Error()
	var re *refusal
	if errors.As(err, &re) {
		class, reason = re.class, re.reason
	}
	t.deps.Refuse(r.Context(), endpoint.Refusal{Platform: "wecom", Remote: endpoint.RemoteHost(r), Action: r.Method + " " + r.URL.Path,
		Class: class, Reason: reason})
	http.Error(w, "verification failed", http.StatusUnauthorized)
}

var verbs = map[flows.Event]string{flows.EvApprove: "已同意", flows.EvReject: "已驳回", flows.EvCancel: "已取消", flows.EvRetry: "已重试",
	flows.EvRollback: "已回滚", flows.EvRelease: "已发布"}

func (t *Transport) handle(ctx context.Context, cb Callback) {
	switch {
	case cb.MsgType == "text":
		replies := t.deps.Handle(ctx, Input{UserID: cb.FromUserName, Text: cb.Content, Key: "msg:" + cb.MsgID})
		t.reply(ctx, cb.FromUserName, replies)
	case cb.MsgType == "event" && cb.Event == "template_card_event" && t.needsReason(cb.EventKey):
		// A card cannot ask for text: tell the person what to send.
		act, _ := t.deps.Act(cb.EventKey)
		id := act.Ticket
		t.reply(ctx, cb.FromUserName, []templates.Message{templates.MustRender("info", templates.InfoView{Level: "info",
			Title: fmt.Sprintf("请回复「驳回 %s 原因」完成驳回 · reply \"reject %s <reason>\" to reject", id, id)})})
	case cb.MsgType == "event" && cb.Event == "template_card_event":
		key := fmt.Sprintf("card:%s:%s:%d:%s", cb.FromUserName, cb.TaskID, cb.CreateTime, cb.EventKey)
		t.seq.Lock()
		t.settling[cb.TaskID] = true
		t.seq.Unlock()
		defer func() {
			t.seq.Lock()
			delete(t.settling, cb.TaskID)
			t.seq.Unlock()
		}()
		replies := t.deps.Handle(ctx, Input{UserID: cb.FromUserName, Text: cb.EventKey, Click: true, Key: key})
		if len(replies) == 0 {
			return // a retried delivery: already handled
		}
		t.settleClick(ctx, cb, replies)
	}
}

func (t *Transport) isSettling(task string) bool {
	t.seq.Lock()
	defer t.seq.Unlock()
	return t.settling[task]
}

// settleClick replaces the pressed card's buttons with what happened
// ("已同意 by bob 15:04") using the event's response code; if that code
// cannot be used, the current card is sent anew. A refused press leaves
// the card as it is and tells the person why.
func (t *Transport) settleClick(ctx context.Context, cb Callback, replies []templates.Message) {
	first := replies[0]
	if first.Level == "error" {
		// Refused: the card keeps its buttons; the person reads why.
		t.reply(ctx, cb.FromUserName, replies[:1])
		return
	}
	text := "已处理"
	if act, ok := t.deps.Act(cb.EventKey); ok && verbs[act.Event] != "" {
		text = fmt.Sprintf("%s by %s at %s", verbs[act.Event], cb.FromUserName, t.cfg.Now().Format("15:04"))
	}
	if err := t.update(ctx, cb.FromUserName, cb.ResponseCode, text); err != nil {
		t.log.Warn("could not update the pressed card; sending a new one", "user", cb.FromUserName, "err", err)
		for _, m := range replies {
			if m.Kind == "ticket" {
				if err := t.Send(ctx, cb.FromUserName, m); err != nil {
					t.log.Error("send card", "err", err)
				}
			}
		}
	} else if err := t.deps.Cards.SpendCode(ctx, cardTicket(cb.TaskID), cb.TaskID); err != nil {
		t.log.Error("remember the spent card code", "err", err)
	}
}

// needsReason: a reject button asks for its reason before it runs.
func (t *Transport) needsReason(key string) bool {
	act, ok := t.deps.Act(key)
	return ok && act.NeedsReason()
}

func cardTicket(task string) string {
	id, _, _ := strings.Cut(task, "-v")
	return id
}

// reply answers a person: ticket cards as template cards, the rest as text.
func (t *Transport) reply(ctx context.Context, user string, msgs []templates.Message) {
	for _, m := range msgs {
		if err := t.Send(ctx, user, m); err != nil {
			t.log.Error("reply", "user", user, "err", err)
		}
	}
}

// Seal encrypts and signs a callback exactly as WeCom does; the fake and
// the tests use it.
func Seal(corpID, token, aesKey, timestamp, nonce string, plain []byte) (body []byte, signature string, err error) {
	enc, err := util.EncryptMsg([]byte(util.RandomStr(16)), plain, corpID, aesKey)
	if err != nil {
		return nil, "", err
	}
	signature = SignatureOf(token, timestamp, nonce, string(enc))
	var b bytes.Buffer
	_ = xml.NewEncoder(&b).Encode(envelope{ToUserName: corpID, Encrypt: string(enc)})
	return b.Bytes(), signature, nil
}

// SignatureOf is WeCom's msg_signature: SHA-1 of the sorted token,
// timestamp, nonce and encrypted text.
func SignatureOf(token, timestamp, nonce, encrypted string) string {
	return util.Signature(token, timestamp, nonce, encrypted)
}
