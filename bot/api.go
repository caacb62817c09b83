package bot

// The ticket API for other systems (/api/v1/...): a CI pipeline opens a
// go-live and waits for it, a CMDB opens a change. Every request carries
// an API token (opsbot token create), which acts as a named service user
// whose roles decide; every use is audited; errors have the same code,
// message and hint as chat refusals. docs/api.md and docs/openapi.yaml
// describe it; a test keeps them and the routes below the same.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/flows"
	"opsbot/state"
)

// APIConfig is the API listener. Every request is authenticated by a
// token, so it may listen beyond loopback (behind an HTTPS proxy).
type APIConfig struct {
	Listen string `yaml:"listen"`
	// PublicURL is where other systems reach the API, for the links it
	// answers with (https://opsbot.example.com); empty: none.
	PublicURL string `yaml:"public_url"`
}

// API scopes a token may carry.
const (
	ScopeCreate  = "tickets:create"
	ScopeRead    = "tickets:read"
	ScopeCancel  = "tickets:cancel"
	ScopeApprove = "tickets:approve"
)

// Scopes are every scope, for validation and help.
var Scopes = []string{ScopeCreate, ScopeRead, ScopeCancel, ScopeApprove}

// tokenPrefix starts every API token, so a leaked one is recognisable
// (secret scanners) and a wrong credential is told apart.
const tokenPrefix = "opsbot_"

// apiIdemTTL is how long an Idempotency-Key names its ticket.
const apiIdemTTL = 24 * time.Hour

// maxWait bounds one long poll; a client polls again.
const maxWait = 120 * time.Second

// apiRoute is one route of the API; docs/openapi.yaml lists the same.
type apiRoute struct {
	Method, Path string
	Scope        string
	handle       func(b *Bot, w http.ResponseWriter, r *http.Request, c apiCaller)
}

// apiRoutes are the routes served; the OpenAPI test compares them with
// docs/openapi.yaml.
var apiRoutes = []apiRoute{
	{"POST", "/api/v1/tickets", ScopeCreate, (*Bot).apiCreate},
	{"GET", "/api/v1/tickets", ScopeRead, (*Bot).apiList},
	{"GET", "/api/v1/tickets/{id}", ScopeRead, (*Bot).apiGet},
	{"GET", "/api/v1/tickets/{id}/wait", ScopeRead, (*Bot).apiWait},
	{"POST", "/api/v1/tickets/{id}/cancel", ScopeCancel, (*Bot).apiAct},
	{"POST", "/api/v1/tickets/{id}/approve", ScopeApprove, (*Bot).apiAct},
	{"POST", "/api/v1/tickets/{id}/reject", ScopeApprove, (*Bot).apiAct},
}

// APIRoutes lists "METHOD path" of every route served (for tests).
func APIRoutes() []string {
	var out []string
	for _, r := range apiRoutes {
		out = append(out, r.Method+" "+r.Path)
	}
	return out
}

// apiCaller is the token a request came with and the user it acts as.
type apiCaller struct {
	token state.APIToken
	user  state.User
	ref   string
}

// apiError is the JSON error body: the same code, message and hint as a
// chat refusal.
type apiError struct {
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Hint    string            `json:"hint,omitempty"`
	Fields  map[string]string `json:"fields,omitempty"`
	Ref     string            `json:"ref,omitempty"`
}

func writeAPIError(w http.ResponseWriter, status int, e apiError) {
	writeJSONReply(w, status, map[string]apiError{"error": e})
}

// statusOf maps a refusal's code to an HTTP status.
func statusOf(code string) int {
	switch code {
	case "no_ticket":
		return http.StatusNotFound
	case "not_requester", "not_role_holder", "not_operator", "not_admin", "no_access", "self_approval", "token_cannot_decide":
		return http.StatusForbidden
	case "locked", "stale", "busy", "not_allowed", "already_approved":
		return http.StatusConflict
	case "rate_limited":
		return http.StatusTooManyRequests
	case "unknown_flow", "bad_fields", "usage", "bad_request":
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

// serveAPI starts the API listener when api.listen is set.
func (b *Bot) serveAPI(ctx context.Context) error {
	if b.cfg.API.Listen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", b.cfg.API.Listen)
	if err != nil {
		return err
	}
	b.apiAddr = ln.Addr().String()
	to := b.timeouts()
	to.Write = max(to.Write, maxWait+10*time.Second) // long polls
	b.apiSrv = endpoint.NewHTTPServer(b.apiHandler(), to, ctx)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := b.apiSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("API listener stopped", "err", err)
		}
	}()
	return nil
}

// APIAddr is the API listener's address, once started ("" when off).
func (b *Bot) APIAddr() string { return b.apiAddr }

func (b *Bot) apiHandler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range apiRoutes {
		rt := rt
		mux.HandleFunc(rt.Method+" "+rt.Path, func(w http.ResponseWriter, r *http.Request) {
			c, ok := b.apiAuth(w, r, rt)
			if !ok {
				return
			}
			if ok, wait := b.limiter.Allow(r.Context(), c.user.Name); !ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(roundUp(wait).Seconds())))
				writeAPIError(w, http.StatusTooManyRequests, apiError{Code: "rate_limited",
					Message: fmt.Sprintf("命令太频繁，请 %s 后再试 · too many requests: try again in %s", roundUp(wait), roundUp(wait)),
					Hint:    fmt.Sprintf("上限 limit: %d/min per user", b.cfg.RateLimit.PerMinute)})
				b.apiAudit(r, c, "", "refused: rate_limited")
				return
			}
			rt.handle(b, w, r, c)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeAPIError(w, http.StatusNotFound, apiError{Code: "no_route",
			Message: fmt.Sprintf("没有这个接口 · no such API route: %s %s", r.Method, endpoint.Clip(r.URL.Path, 100)),
			Hint:    "see docs/api.md, e.g. POST /api/v1/tickets"})
	})
	return mux
}

// apiAuth checks the bearer token: known, not revoked, not expired, with
// the route's scope. A refusal is audited (bounded) and counted.
func (b *Bot) apiAuth(w http.ResponseWriter, r *http.Request, rt apiRoute) (apiCaller, bool) {
	refuse := func(status int, class, reason, msg, hint string) (apiCaller, bool) {
		b.refusals.Refuse(r.Context(), endpoint.Refusal{Platform: "api", Remote: r.RemoteAddr, Action: rt.Method + " " + rt.Path,
			Class: class, Reason: reason})
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="opsbot"`)
		}
		writeAPIError(w, status, apiError{Code: class, Message: msg, Hint: hint})
		return apiCaller{}, false
	}
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !strings.HasPrefix(secret, tokenPrefix) {
		return refuse(http.StatusUnauthorized, "token", "no bearer token",
			"缺少 API 令牌 · no API token: send Authorization: Bearer opsbot_...", "opsbot token create --name ci --scopes tickets:create,tickets:read --as svc-ci")
	}
	tok, found, err := b.store.TokenByHash(r.Context(), state.HashToken(secret))
	if err != nil {
		b.log.Error("look up API token", "err", err)
		writeAPIError(w, http.StatusServiceUnavailable, apiError{Code: "internal", Message: "状态不可用 · the state cannot be read now; try again"})
		return apiCaller{}, false
	}
	if !found {
		return refuse(http.StatusUnauthorized, "token", "unknown token", "API 令牌无效 · this API token is not known", "ask an operator for a token: opsbot token create")
	}
	if why := tok.Usable(b.now()); why != "" {
		return refuse(http.StatusUnauthorized, "token", why+" token "+tok.Name,
			fmt.Sprintf("API 令牌 %s 已%s · API token %s is %s", tok.Name, map[string]string{"revoked": "吊销", "expired": "过期"}[why], tok.Name, why),
			"ask an operator for a new one: opsbot token create --name "+tok.Name)
	}
	if !tok.HasScope(rt.Scope) {
		return refuse(http.StatusForbidden, "scope", "token "+tok.Name+" lacks "+rt.Scope,
			fmt.Sprintf("API 令牌 %s 没有权限 %s · API token %s lacks the scope %s", tok.Name, rt.Scope, tok.Name, rt.Scope),
			"its scopes: "+strings.Join(tok.Scopes, ",")+"; a token with "+rt.Scope+" is made with opsbot token create --scopes "+rt.Scope)
	}
	u, ok := b.dir.User(tok.User)
	if !ok {
		var err error
		if u, err = b.dir.Ensure(r.Context(), "api", tok.User, tok.User); err != nil {
			b.log.Error("service user", "err", err)
			writeAPIError(w, http.StatusServiceUnavailable, apiError{Code: "internal", Message: "状态不可用 · the state cannot be written now; try again"})
			return apiCaller{}, false
		}
	}
	return apiCaller{token: tok, user: u, ref: newRef()}, true
}

// apiAudit writes one audit entry for a request (every use of a token is
// audited).
func (b *Bot) apiAudit(r *http.Request, c apiCaller, ticket, result string) {
	b.audit.Add(r.Context(), b.apiEntry(r, c, ticket, result))
}

func (b *Bot) apiEntry(r *http.Request, c apiCaller, ticket, result string) state.AuditEntry {
	args := "via " + c.token.Name + ": " + r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		args += "?" + r.URL.RawQuery
	}
	return state.AuditEntry{At: b.now(), User: c.user.Name, Platform: "api", Action: "api " + r.Pattern,
		Args: Truncate(b.redact.Redact(args), b.cfg.Audit.MaxArgs), Ticket: ticket, Result: Truncate(result, 300)}
}

// apiRefused answers a refusal or an internal error and audits it.
func (b *Bot) apiRefused(w http.ResponseWriter, r *http.Request, c apiCaller, ticket string, err error) {
	var ue *flows.UserError
	if errors.As(err, &ue) {
		status := statusOf(ue.Code)
		writeAPIError(w, status, apiError{Code: ue.Code, Message: b.redact.Redact(ue.Message), Hint: b.redact.Redact(ue.Hint), Fields: ue.Fields})
		b.apiAudit(r, c, ticket, "refused: "+ue.Code)
		if b.metrics != nil {
			b.metrics.command(false, "api", "refused", ue.Code)
		}
		return
	}
	b.log.Error("API request failed", "req", c.ref, "err", err)
	writeAPIError(w, http.StatusInternalServerError, apiError{Code: "internal",
		Message: "内部错误 · internal error; the operators can find it in the log by its reference", Ref: c.ref})
	b.apiAudit(r, c, ticket, "internal "+c.ref)
	if b.metrics != nil {
		b.metrics.command(false, "api", "error", "")
	}
}

// TicketJSON is a ticket as the API shows it.
type TicketJSON struct {
	ID         string            `json:"id"`
	Flow       string            `json:"flow"`
	Title      string            `json:"title"`
	Stage      string            `json:"stage"`
	StageTitle string            `json:"stage_title"`
	Open       bool              `json:"open"`
	Requester  string            `json:"requester"`
	Fields     map[string]string `json:"fields"`
	Waiting    []string          `json:"waiting_roles,omitempty"`
	Approvals  []ApprovalJSON    `json:"approvals"`
	DecidedBy  *ApprovalJSON     `json:"decided_by,omitempty"`
	Version    int64             `json:"version"`
	Created    time.Time         `json:"created"`
	Updated    time.Time         `json:"updated"`
	Link       string            `json:"link,omitempty"`
	// Reached answers a wait: whether the ticket reached what was waited
	// for (false when the wait timed out first, or it closed elsewhere).
	Reached *bool `json:"reached,omitempty"`
}

// ApprovalJSON is one decision: who, when, in which stage, with what.
type ApprovalJSON struct {
	User    string    `json:"user"`
	Display string    `json:"display"`
	Event   string    `json:"event"`
	Stage   string    `json:"stage"`
	At      time.Time `json:"at"`
	Comment string    `json:"comment,omitempty"`
}

// ticketJSON builds the API's view: every approval given (from the
// history), and for a closed ticket the decision that closed it.
func (b *Bot) ticketJSON(t state.Ticket, evs []state.Event) TicketJSON {
	out := TicketJSON{ID: t.ID, Flow: t.Flow, Title: t.Title, Stage: t.Stage, Open: t.Open, Requester: t.Requester,
		Fields: t.Fields, Waiting: t.WaitingRoles, Version: t.Version, Created: t.Created, Updated: t.Updated, Approvals: []ApprovalJSON{}}
	if f, ok := b.engine.Flow(t.Flow); ok {
		out.StageTitle = f.StageTitle(t.Stage)
	}
	if b.cfg.API.PublicURL != "" {
		out.Link = strings.TrimRight(b.cfg.API.PublicURL, "/") + "/api/v1/tickets/" + t.ID
	}
	for _, ev := range evs {
		switch flows.Event(ev.Type) {
		case flows.EvApprove, flows.EvReject, flows.EvCancel:
		default:
			continue
		}
		a := ApprovalJSON{User: ev.Actor, Display: b.displayName(ev.Actor), Event: ev.Type, Stage: ev.From, At: ev.At, Comment: ev.Comment}
		if ev.Type == string(flows.EvApprove) {
			out.Approvals = append(out.Approvals, a)
		}
		if !t.Open {
			out.DecidedBy = &a
		}
	}
	return out
}

// apiTicket reads a ticket the caller may read, with its history.
func (b *Bot) apiTicket(ctx context.Context, c apiCaller, id string) (state.Ticket, []state.Event, error) {
	t, err := b.ticket(ctx, id)
	if err != nil {
		return t, nil, err
	}
	evs, err := b.store.Events(ctx, t.ID)
	if err != nil {
		return t, nil, err
	}
	if !b.canRead(c.user, t, evs) {
		return t, nil, notReadable(t.ID)
	}
	return t, evs, nil
}

// createRequest is the body of POST /api/v1/tickets.
type createRequest struct {
	Flow   string            `json:"flow"`
	Fields map[string]string `json:"fields"`
}

// maxAPIBody bounds a request body.
const maxAPIBody = 64 << 10

func (b *Bot) apiCreate(w http.ResponseWriter, r *http.Request, c apiCaller) {
	var req createRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Flow == "" {
		msg := "want a JSON object with flow and fields"
		if err != nil {
			msg += ": " + endpoint.Clip(err.Error(), 200)
		}
		b.apiRefused(w, r, c, "", flows.Userf("bad_request", `{"flow": "golive", "fields": {"service": "payments", "version": "v1.4.2"}}`,
			"请求无效 · %s", msg))
		return
	}
	ctx := flows.WithRequest(r.Context(), "api", c.ref)
	key := r.Header.Get("Idempotency-Key")
	ikey, digest := "api:"+c.token.Name+":"+key, requestDigest(req)
	if key != "" {
		if len(key) > 200 || state.CheckName("Idempotency-Key", key) != nil {
			b.apiRefused(w, r, c, "", flows.Userf("bad_request", "Idempotency-Key: a UUID or a pipeline id, e.g. 8e2f6c1a-ci-1234",
				"Idempotency-Key 无效 · the Idempotency-Key must be at most 200 printable characters"))
			return
		}
		if prev, ok, err := b.store.RequestTicket(ctx, ikey); err != nil {
			b.apiRefused(w, r, c, "", err)
			return
		} else if ok {
			b.apiReplay(w, r, c, prev, digest)
			return
		}
		ctx = state.WithDelivery(ctx, ikey, b.now(), apiIdemTTL)
		ctx = state.WithRequestTicket(ctx, ikey, digest)
	}
	entry := b.apiEntry(r, c, "", "ok")
	t, err := b.engine.Create(ctx, c.user.Name, req.Flow, req.Fields, entry)
	if key != "" && errors.Is(err, state.ErrDuplicate) {
		// The same key, concurrently: answer with the ticket the other
		// request created.
		if prev, ok, err2 := b.store.RequestTicket(ctx, ikey); err2 == nil && ok {
			b.apiReplay(w, r, c, prev, digest)
			return
		}
	}
	if err != nil {
		b.apiRefused(w, r, c, "", err)
		return
	}
	if b.metrics != nil {
		b.metrics.command(false, "api", "ok", "")
	}
	evs, _ := b.store.Events(ctx, t.ID)
	w.Header().Set("Location", "/api/v1/tickets/"+t.ID)
	writeJSONReply(w, http.StatusCreated, b.ticketJSON(t, evs))
}

// apiReplay answers a request whose Idempotency-Key was seen: the same
// ticket (200), or a refusal when the key was used for another request.
func (b *Bot) apiReplay(w http.ResponseWriter, r *http.Request, c apiCaller, prev state.APIIdem, digest string) {
	if prev.Digest != digest {
		b.apiRefused(w, r, c, prev.Ticket, flows.Userf("idempotency_key_reused", "use a new Idempotency-Key for a different request",
			"Idempotency-Key 已用于另一个请求 · this Idempotency-Key was used for a different request (ticket %s)", prev.Ticket))
		return
	}
	t, evs, err := b.apiTicket(r.Context(), c, prev.Ticket)
	if err != nil {
		b.apiRefused(w, r, c, prev.Ticket, err)
		return
	}
	b.apiAudit(r, c, t.ID, "ok: the ticket this Idempotency-Key created")
	w.Header().Set("Idempotent-Replayed", "true")
	w.Header().Set("Location", "/api/v1/tickets/"+t.ID)
	writeJSONReply(w, http.StatusOK, b.ticketJSON(t, evs))
}

// requestDigest identifies a create request's content.
func requestDigest(req createRequest) string {
	keys := make([]string, 0, len(req.Fields))
	for k := range req.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha256.New()
	fmt.Fprintf(h, "%q", req.Flow)
	for _, k := range keys {
		fmt.Fprintf(h, "\x00%q=%q", k, req.Fields[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

func (b *Bot) apiGet(w http.ResponseWriter, r *http.Request, c apiCaller) {
	t, evs, err := b.apiTicket(r.Context(), c, r.PathValue("id"))
	if err != nil {
		b.apiRefused(w, r, c, r.PathValue("id"), err)
		return
	}
	b.apiAudit(r, c, t.ID, "ok")
	writeJSONReply(w, http.StatusOK, b.ticketJSON(t, evs))
}

// apiList lists tickets newest first: filters flow, stage, requester,
// open; paging by cursor (the last id of the page before) and limit.
func (b *Bot) apiList(w http.ResponseWriter, r *http.Request, c apiCaller) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			b.apiRefused(w, r, c, "", flows.Userf("bad_request", "limit=50", "limit 无效 · limit must be a number from 1 to 100, not %q", endpoint.Clip(v, 20)))
			return
		}
		limit = n
	}
	var before uint64
	if v := q.Get("cursor"); v != "" {
		n, ok := state.ParseID(v)
		if !ok {
			b.apiRefused(w, r, c, "", flows.Userf("bad_request", "cursor=T-42 (next_cursor of the page before)", "cursor 无效 · cursor must be a ticket id, not %q", endpoint.Clip(v, 20)))
			return
		}
		before = n
	}
	var open *bool
	if v := q.Get("open"); v != "" {
		o, err := strconv.ParseBool(v)
		if err != nil {
			b.apiRefused(w, r, c, "", flows.Userf("bad_request", "open=true", "open 无效 · open must be true or false, not %q", endpoint.Clip(v, 20)))
			return
		}
		open = &o
	}
	ix := state.Index{Kind: "all"}
	switch {
	case q.Get("requester") != "":
		ix = state.Index{Kind: "requester", Keys: []string{state.NormName(q.Get("requester"))}}
	case q.Get("flow") != "":
		ix = state.Index{Kind: "flow", Keys: []string{q.Get("flow")}}
	case open != nil && *open:
		ix = state.Index{Kind: "open"}
	}
	ix.Before = before
	flow, stage := q.Get("flow"), q.Get("stage")
	keep := func(t state.Ticket) bool {
		return (flow == "" || t.Flow == flow) && (stage == "" || t.Stage == stage) && (open == nil || t.Open == *open) &&
			b.canRead(c.user, t, nil)
	}
	page, err := b.store.List(r.Context(), ix, keep, 0, limit)
	if err != nil {
		b.apiRefused(w, r, c, "", err)
		return
	}
	out := struct {
		Tickets    []TicketJSON `json:"tickets"`
		NextCursor string       `json:"next_cursor,omitempty"`
	}{Tickets: []TicketJSON{}}
	for _, t := range page.Tickets {
		evs, err := b.store.Events(r.Context(), t.ID)
		if err != nil {
			b.apiRefused(w, r, c, "", err)
			return
		}
		out.Tickets = append(out.Tickets, b.ticketJSON(t, evs))
	}
	if page.More && len(page.Tickets) > 0 {
		out.NextCursor = page.Tickets[len(page.Tickets)-1].ID
	}
	b.apiAudit(r, c, "", fmt.Sprintf("ok, %d tickets", len(out.Tickets)))
	writeJSONReply(w, http.StatusOK, out)
}

// apiWait long-polls until the ticket closes (until=closed, the default)
// or reaches a named stage, or moves past after_version when given (so a
// client can follow each step), or timeout passes (at most 120 s; the
// client asks again). The answer is the ticket with reached true or false.
func (b *Bot) apiWait(w http.ResponseWriter, r *http.Request, c apiCaller) {
	until := r.URL.Query().Get("until")
	if until == "" {
		until = "closed"
	}
	timeout := 60 * time.Second
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.apiRefused(w, r, c, "", flows.Userf("bad_request", "timeout=60s", "timeout 无效 · timeout must be a duration like 60s, not %q", endpoint.Clip(v, 20)))
			return
		}
		timeout = min(d, maxWait)
	}
	var after int64 = -1
	if v := r.URL.Query().Get("after_version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			b.apiRefused(w, r, c, "", flows.Userf("bad_request", "after_version=7 (the version of the ticket you have)", "after_version 无效 · after_version must be a ticket version, not %q", endpoint.Clip(v, 20)))
			return
		}
		after = n
	}
	id := r.PathValue("id")
	t, _, err := b.apiTicket(r.Context(), c, id)
	if err != nil {
		b.apiRefused(w, r, c, id, err)
		return
	}
	if f, ok := b.engine.Flow(t.Flow); ok && until != "closed" {
		if st, _ := f.Stage(until); st == nil && !slices.Contains(terminalStages, until) {
			b.apiRefused(w, r, c, t.ID, flows.Userf("bad_request", "until=closed, or a stage of "+t.Flow+": "+strings.Join(stageNames(f), ", "),
				"until 无效 · %s has no stage %q", t.Flow, endpoint.Clip(until, 40)))
			return
		}
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		reached := (until == "closed" && !t.Open) || t.Stage == until
		if reached || !t.Open || (after >= 0 && t.Version > after) {
			b.writeWaited(w, r, c, t, reached)
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-deadline.C:
			b.writeWaited(w, r, c, t, false)
			return
		case <-tick.C:
		}
		if t, err = b.store.Get(r.Context(), t.ID); err != nil {
			b.apiRefused(w, r, c, id, err)
			return
		}
	}
}

var terminalStages = []string{flows.StageDone, flows.StageRejected, flows.StageCancelled, flows.StageExpired, flows.StageFailed, flows.StageRolledBack}

func stageNames(f *flows.Flow) []string {
	var out []string
	for _, s := range f.Stages {
		out = append(out, s.Name)
	}
	return out
}

func (b *Bot) writeWaited(w http.ResponseWriter, r *http.Request, c apiCaller, t state.Ticket, reached bool) {
	evs, err := b.store.Events(r.Context(), t.ID)
	if err != nil {
		b.apiRefused(w, r, c, t.ID, err)
		return
	}
	out := b.ticketJSON(t, evs)
	out.Reached = &reached
	b.apiAudit(r, c, t.ID, fmt.Sprintf("ok, waited: %s, reached %v", t.Stage, reached))
	writeJSONReply(w, http.StatusOK, out)
}

// apiAct cancels, approves or rejects (the last part of the path).
func (b *Bot) apiAct(w http.ResponseWriter, r *http.Request, c apiCaller) {
	id := r.PathValue("id")
	ev := flows.Event(r.Pattern[strings.LastIndex(r.Pattern, "/")+1:])
	var body struct {
		Comment string `json:"comment"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		b.apiRefused(w, r, c, id, flows.Userf("bad_request", `{"comment": "superseded by v1.4.3"} or no body`, "请求无效 · want a JSON object with an optional comment: %s", endpoint.Clip(err.Error(), 200)))
		return
	}
	if _, _, err := b.apiTicket(r.Context(), c, id); err != nil {
		b.apiRefused(w, r, c, id, err)
		return
	}
	ctx := flows.WithRequest(r.Context(), "api", c.ref)
	t, err := b.engine.Act(ctx, flows.Action{Actor: c.user.Name, Ticket: id, Event: ev, Comment: body.Comment, Token: c.token.Name,
		Audit: []state.AuditEntry{b.apiEntry(r, c, id, "ok")}})
	if err != nil {
		b.apiRefused(w, r, c, id, err)
		return
	}
	if b.metrics != nil {
		b.metrics.command(false, "api", "ok", "")
	}
	evs, _ := b.store.Events(ctx, t.ID)
	writeJSONReply(w, http.StatusOK, b.ticketJSON(t, evs))
}

// newTokenSecret is a fresh token: the prefix and 32 random bytes.
func newTokenSecret() string {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
}

// displayName is how people know a user (the configured display name,
// else the user name).
func (b *Bot) displayName(name string) string {
	if u, ok := b.dir.User(name); ok && u.Display != "" {
		return u.Display
	}
	return name
}
