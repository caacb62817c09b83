package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/commands"
	"opsbot/flows"
	"opsbot/integrations/zookeeper"
	"opsbot/state"
	"opsbot/templates"
)

// Incoming is one piece of chat input: a typed command or a button press.
type Incoming struct {
	Platform string
	// UserID is the person's id on the platform; Name is the opsbot user
	// name to create them under when they are new.
	UserID string
	Name   string
	// Email, when the platform knows it, links a new platform id to the
	// configured person with that address.
	Email string
	Text  string
	Click bool
	// Key identifies the delivery for de-duplication (a platform's event
	// or message id); empty means no de-duplication.
	Key string
}

// pageSize is how many tickets or audit entries a page shows.
const pageSize = 20

// idempotencyTTL covers every chat platform's retry window with room.
const idempotencyTTL = 24 * time.Hour

// Handle runs one piece of chat input and returns the replies. It never
// returns an error: every failure becomes a reply, and everything is
// audited with secrets redacted.
func (b *Bot) Handle(ctx context.Context, in Incoming) []templates.Message {
	msgs, _ := b.run(ctx, in, nil)
	return msgs
}

// Submit opens a ticket from a form. A refusal comes back as errors per
// form field (a problem that belongs to no field is shown on the first).
func (b *Bot) Submit(ctx context.Context, in Incoming, flow string, fields map[string]string) ([]templates.Message, map[string]string) {
	parts := []string{"/ops new " + flow}
	for k, v := range fields {
		parts = append(parts, k+"="+strconv.Quote(v))
	}
	in.Text = strings.Join(parts, " ")
	msgs, err := b.run(ctx, in, commands.New{Flow: flow, Fields: fields})
	var ue *flows.UserError
	if !errors.As(err, &ue) {
		return msgs, nil
	}
	if len(ue.Fields) > 0 {
		return nil, ue.Fields
	}
	first := ""
	if f, ok := b.engine.Flow(flow); ok && len(f.Fields) > 0 {
		first = f.Fields[0].Name
	}
	return nil, map[string]string{first: ue.Message}
}

// run identifies the person, de-duplicates, rate-limits, parses (unless
// req is given), executes and audits; the error is the user error the
// replies show, if any.
func (b *Bot) run(ctx context.Context, in Incoming, req commands.Request) ([]templates.Message, error) {
	ref := newRef()
	log := b.log.With("platform", in.Platform, "req", ref)
	if err := state.CheckName(in.Platform+" user id", in.UserID); err != nil {
		// Never stored, never an index key: a name with a NUL or a
		// newline would break index scans and could pass for another.
		ue := flows.Userf("bad_user", "例 e.g. alice", "用户名无效 · this user id cannot be used: %s", err)
		b.refusals.Refuse(ctx, endpoint.Refusal{Platform: in.Platform, Remote: "chat", Action: "identify", Class: "bad_user", Reason: err.Error()})
		return []templates.Message{b.userError(ue)}, ue
	}
	user, err := b.identify(ctx, in)
	if err != nil {
		log.Error("identify user", "err", err)
		return []templates.Message{b.internal(ref)}, err
	}
	log = log.With("user", user.Name)
	action := "command"
	if in.Click {
		action = "click"
	}
	args := Truncate(b.redact.Redact(in.Text), b.cfg.Audit.MaxArgs)
	audit := state.AuditEntry{At: b.now(), User: user.Name, Platform: in.Platform, Action: action, Args: args}
	var refusal error
	stored := false // a transition wrote the entry in its own transaction
	finish := func(result string, msgs ...templates.Message) ([]templates.Message, error) {
		audit.Result = result
		if result == "ok" && stored {
			return msgs, nil // the transition wrote it in its own transaction
		}
		b.audit.Add(ctx, audit)
		return msgs, refusal
	}
	if in.Key != "" {
		key := in.Platform + ":" + in.Key
		seen, err := b.store.Seen(ctx, key, b.now())
		if err != nil {
			log.Error("idempotency key", "err", err)
			return finish("internal "+ref, b.internal(ref))
		}
		if seen {
			return finish("duplicate delivery ignored")
		}
		// The first ticket write records the key in its own transaction;
		// a command that writes no ticket records it when it is done.
		ctx = state.WithDelivery(ctx, key, b.now(), idempotencyTTL)
		defer func() {
			if !state.DeliveryRecorded(ctx) {
				if _, err := b.store.Remember(ctx, key, b.now(), idempotencyTTL); err != nil {
					log.Error("idempotency key", "err", err)
				}
			}
		}()
	}
	if ok, wait := b.limiter.Allow(ctx, user.Name); !ok {
		ue := &flows.UserError{Code: "rate_limited",
			Message: fmt.Sprintf("命令太频繁，请 %s 后再试 · too many commands: try again in %s", roundUp(wait), roundUp(wait)),
			Hint:    fmt.Sprintf("上限 limit: %d/min", b.cfg.RateLimit.PerMinute)}
		refusal = ue
		return finish("rate_limited", b.userError(ue))
	}
	if req == nil {
		req, err = b.reg.Parse(in.Text)
	}
	if err == nil {
		audit.Action += " " + req.Command()
		if t := ticketOf(req); t != "" {
			audit.Ticket = t
		}
		var msgs []templates.Message
		msgs, err = b.execute(ctx, user, req, &audit, &stored)
		if err == nil {
			return finish("ok", msgs...)
		}
	}
	if errors.Is(err, state.ErrDuplicate) {
		return finish("duplicate delivery ignored")
	}
	var ue *flows.UserError
	if errors.As(err, &ue) {
		log.Info("refused", "code", ue.Code, "reason", ue.Message)
		refusal = ue
		return finish("refused: "+ue.Code, b.userError(ue))
	}
	log.Error("command failed", "err", err)
	return finish("internal "+ref, b.internal(ref))
}

func roundUp(d time.Duration) time.Duration {
	return d.Truncate(time.Second) + time.Second
}

func ticketOf(r commands.Request) string {
	switch x := r.(type) {
	case commands.Show:
		return x.Ticket
	case commands.Act:
		return x.Ticket
	case commands.Edit:
		return x.Ticket
	}
	return ""
}

func newRef() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// userError is the single place user errors become chat replies.
func (b *Bot) userError(ue *flows.UserError) templates.Message {
	return templates.MustRender("error", templates.ErrorView{Message: b.redact.Redact(ue.Message), Hint: b.redact.Redact(ue.Hint)})
}

func (b *Bot) internal(ref string) templates.Message {
	return templates.MustRender("internal", templates.InternalView{Ref: ref})
}

func (b *Bot) identify(ctx context.Context, in Incoming) (state.User, error) {
	if u, ok := b.dir.Resolve(in.Platform, in.UserID); ok {
		return u, nil
	}
	if u, ok := b.dir.ByEmail(in.Email); ok && u.IDs[in.Platform] == "" {
		u.IDs = map[string]string{in.Platform: in.UserID}
		if err := b.dir.Put(ctx, u); err != nil {
			return state.User{}, err
		}
		b.log.Info("linked a chat account to its person by e-mail", "platform", in.Platform, "user", u.Name)
		u, _ = b.dir.User(u.Name)
		return u, nil
	}
	// Unknown people get a user of their own, without roles: they can
	// request, and are told why they cannot approve.
	name := in.Platform + "-" + in.UserID
	if in.Platform == "local" {
		name = in.UserID
	}
	if u, ok := b.dir.User(name); ok && u.IDs[in.Platform] == "" {
		// A configured person seen on this platform for the first time.
		u.IDs = map[string]string{in.Platform: in.UserID}
		if err := b.dir.Put(ctx, u); err != nil {
			return state.User{}, err
		}
		u, _ = b.dir.User(name)
		return u, nil
	} else if ok {
		name = in.Platform + "-" + in.UserID
	}
	return b.dir.Ensure(ctx, in.Platform, in.UserID, name)
}

func info(level, title, body string) templates.Message {
	return templates.MustRender("info", templates.InfoView{Level: level, Title: title, Body: body})
}

// execute runs a request. A ticket command that succeeds stores audit
// (with result "ok") in its transition and sets *stored.
func (b *Bot) execute(ctx context.Context, u state.User, req commands.Request, audit *state.AuditEntry, stored *bool) ([]templates.Message, error) {
	e := b.engine
	ok := *audit
	ok.Result = "ok"
	switch r := req.(type) {
	case commands.Help:
		return []templates.Message{b.help(r.Topic)}, nil
	case commands.New:
		t, err := e.Create(ctx, u.Name, r.Flow, r.Fields, ok)
		if err != nil {
			return nil, err
		}
		*stored, audit.Ticket = true, t.ID
		return []templates.Message{info("success", fmt.Sprintf("✅ 已提交 %s · ticket %s submitted", t.ID, t.ID), ""), b.present.TicketCard(t)}, nil
	case commands.Show:
		t, err := b.store.Get(ctx, r.Ticket)
		if errors.Is(err, state.ErrNotFound) {
			return nil, flows.Userf("no_ticket", "/ops list open", "没有工单 %s · there is no ticket %s", r.Ticket, r.Ticket)
		}
		if err != nil {
			return nil, err
		}
		evs, err := b.store.Events(ctx, t.ID)
		if err != nil {
			return nil, err
		}
		if !b.canRead(u, t, evs) {
			return nil, notReadable(t.ID)
		}
		return []templates.Message{b.present.TicketCard(t), info("info", "历史 History "+t.ID, history(evs))}, nil
	case commands.List:
		return b.list(ctx, u, r)
	case commands.Act:
		t, err := e.Act(ctx, flows.Action{Actor: u.Name, Ticket: r.Ticket, Event: r.Event, Version: r.Version, Batch: r.Batch, Comment: r.Comment,
			Audit: []state.AuditEntry{ok}})
		if err != nil {
			return nil, err
		}
		*stored = true
		return []templates.Message{info("success", fmt.Sprintf("✅ %s %s → %s", t.ID, r.Event, b.present.TicketView(t).StageTitle), ""), b.present.TicketCard(t)}, nil
	case commands.Role:
		return b.role(ctx, u, r)
	case commands.Audit:
		return b.auditLog(ctx, u, r)
	case commands.Version:
		return b.version(r)
	case commands.Edit:
		t, err := e.Edit(ctx, flows.Action{Actor: u.Name, Ticket: r.Ticket, Version: r.Version, Audit: []state.AuditEntry{ok}}, r.Fields)
		if err != nil {
			return nil, err
		}
		*stored = true
		return []templates.Message{info("success", fmt.Sprintf("✏️ %s 已修改，审批重新开始 · %s edited; approvals start over", t.ID, t.ID), ""), b.present.TicketCard(t)}, nil
	case commands.Cluster:
		return b.cluster(ctx, r)
	case commands.Store:
		return b.storeInfo(r)
	case commands.Freeze:
		return b.freeze(ctx, u, r)
	}
	return nil, fmt.Errorf("no handler for %T", req)
}

// canRead says whether u may read ticket t (its card, history, comments,
// script output and audit): its requester; the holders of any role its
// flow names (approvers, actors, operators, rollback); anyone who acted on
// it or is named in its operators field; auditors and admins. evs may be
// nil when the history is not at hand (lists).
func (b *Bot) canRead(u state.User, t state.Ticket, evs []state.Event) bool {
	switch {
	case t.Requester == u.Name, t.Operator == u.Name:
		return true
	case b.dir.HasRole(u.Name, flows.AdminRole, "auditor"):
		return true
	}
	if b.dir.HasRole(u.Name, b.flowRoles[t.Flow]...) {
		return true
	}
	for _, a := range t.Approvals {
		if a.User == u.Name {
			return true
		}
	}
	for _, op := range strings.Split(t.Fields["operators"], ",") {
		if state.NormName(op) == u.Name {
			return true
		}
	}
	for _, ev := range evs {
		if ev.Actor == u.Name {
			return true
		}
	}
	return false
}

func notReadable(id string) error {
	return flows.Userf("no_access", "/ops list mine",
		"你无权查看 %s · you may not read %s: its requester, the people in its flow's roles, auditors and admins can", id, id)
}

func history(evs []state.Event) string {
	var lines []string
	start := max(0, len(evs)-15)
	for _, ev := range evs[start:] {
		l := fmt.Sprintf("v%d %s %s %s", ev.Seq, ev.At.UTC().Format("01-02 15:04"), ev.Actor, ev.Type)
		if ev.From != ev.To {
			l += fmt.Sprintf(" (%s → %s)", ev.From, ev.To)
		}
		if ev.Comment != "" {
			l += ": " + ev.Comment
		}
		lines = append(lines, l)
	}
	if start > 0 {
		lines = append([]string{fmt.Sprintf("… %d earlier", start)}, lines...)
	}
	return strings.Join(lines, "\n")
}

func (b *Bot) help(topic string) templates.Message {
	e := b.engine
	if topic != "" {
		if s, ok := b.reg.Lookup(topic); ok {
			return templates.MustRender("help", templates.HelpView{Topic: &templates.HelpCommand{Name: s.Name, Usage: s.Usage, Summary: s.Summary, Example: s.Example}})
		}
		if f, ok := e.Flow(topic); ok {
			var lines []string
			for _, fd := range f.Fields {
				req := "可选 optional"
				if fd.Required {
					req = "必填 required"
				}
				if fd.Computed {
					req = "由 opsbot 计算 computed"
				}
				l := fmt.Sprintf("%s (%s, %s)", fd.Name, fd.Label, req)
				if len(fd.Enum) > 0 {
					l += ": " + strings.Join(fd.Enum, "|")
				}
				lines = append(lines, l)
			}
			var stages []string
			for _, st := range f.Stages {
				stages = append(stages, st.Title)
			}
			return templates.MustRender("help", templates.HelpView{Topic: &templates.HelpCommand{Name: f.Name + " · " + f.Title,
				Usage: "/ops new " + f.Name + " key=value ...", Example: f.Example(),
				Summary: f.Description + "\n阶段 stages: " + strings.Join(stages, " → ") + "\n字段 fields:\n  " + strings.Join(lines, "\n  ")}})
		}
	}
	v := templates.HelpView{}
	for _, s := range b.reg.Specs() {
		v.Commands = append(v.Commands, templates.HelpCommand{Name: s.Name, Usage: s.Usage, Summary: s.Summary, Example: s.Example})
	}
	for _, n := range e.FlowNames() {
		f, _ := e.Flow(n)
		req, opt := f.FieldNames()
		v.Flows = append(v.Flows, templates.FlowHelp{Name: f.Name, Title: f.Title, Required: req, Optional: opt, Example: f.Example()})
	}
	return templates.MustRender("help", v)
}

func (b *Bot) list(ctx context.Context, u state.User, r commands.List) ([]templates.Message, error) {
	if r.Flow != "" {
		if _, ok := b.engine.Flow(r.Flow); !ok {
			return nil, flows.Userf("unknown_flow", "flows: "+strings.Join(b.engine.FlowNames(), ", "), "没有流程 %s · unknown flow %q", r.Flow, r.Flow)
		}
	}
	flowOK := func(t state.Ticket) bool { return (r.Flow == "" || t.Flow == r.Flow) && b.canRead(u, t, nil) }
	var ix state.Index
	keep := flowOK
	switch r.Scope {
	case "mine":
		ix = state.Index{Kind: "requester", Keys: []string{u.Name}}
	case "waiting":
		ix = state.Index{Kind: "waiting", Keys: u.Roles}
		keep = func(t state.Ticket) bool {
			return flowOK(t) && t.Requester != u.Name &&
				!slices.ContainsFunc(t.Approvals, func(a state.Approval) bool { return a.User == u.Name })
		}
	case "open":
		ix = state.Index{Kind: "open"}
	default:
		ix = state.Index{Kind: "all"}
		if r.Flow != "" {
			ix = state.Index{Kind: "flow", Keys: []string{r.Flow}}
		}
	}
	if r.Scope == "waiting" && len(u.Roles) == 0 {
		return []templates.Message{templates.MustRender("list", templates.ListView{Scope: r.Scope, Filter: r.Flow, Page: r.Page})}, nil
	}
	page, err := b.store.List(ctx, ix, keep, (r.Page-1)*pageSize, pageSize)
	if err != nil {
		return nil, err
	}
	v := templates.ListView{Scope: r.Scope, Filter: r.Flow, Page: r.Page, More: page.More}
	for _, t := range page.Tickets {
		v.Tickets = append(v.Tickets, b.present.TicketView(t))
	}
	return []templates.Message{templates.MustRender("list", v)}, nil
}

func (b *Bot) role(ctx context.Context, u state.User, r commands.Role) ([]templates.Message, error) {
	if r.Op == "list" {
		v := templates.RolesView{User: r.User}
		if r.User != "" {
			x, ok := b.dir.User(r.User)
			if !ok {
				return nil, flows.Userf("unknown_user", "/ops role list", "没有用户 %s · no user called %s", r.User, r.User)
			}
			for _, role := range x.Roles {
				v.Rows = append(v.Rows, templates.RoleRow{Role: role, Members: []string{x.Name}})
			}
		} else {
			for _, role := range b.dir.Roles() {
				v.Rows = append(v.Rows, templates.RoleRow{Role: role, Members: b.dir.Members(role)})
			}
		}
		return []templates.Message{templates.MustRender("roles", v)}, nil
	}
	if !b.dir.HasRole(u.Name, flows.AdminRole) {
		return nil, flows.Userf("not_admin", "请管理员操作 ask an admin: "+strings.Join(b.dir.Members(flows.AdminRole), ", "),
			"只有管理员可以授予或收回角色 · only admins can grant or revoke roles")
	}
	grant := r.Op == "grant"
	changed, err := b.dir.SetRole(ctx, r.Role, r.User, grant, state.AuditEntry{At: b.now(), User: u.Name,
		Action: "role " + r.Op, Args: r.Role + " " + r.User, Result: "ok"})
	if err != nil {
		return nil, err
	}
	verb := map[bool]string{true: "已授予 granted", false: "已收回 revoked"}[grant]
	if !changed {
		return []templates.Message{info("info", fmt.Sprintf("无变化 no change: %s %s %s", r.User, map[bool]string{true: "already has", false: "does not have"}[grant], r.Role), "")}, nil
	}
	return []templates.Message{info("success", fmt.Sprintf("%s %s → %s", verb, r.Role, r.User), "")}, nil
}

func (b *Bot) auditLog(ctx context.Context, u state.User, r commands.Audit) ([]templates.Message, error) {
	privileged := b.dir.HasRole(u.Name, flows.AdminRole, "auditor")
	switch {
	case privileged:
	case r.User == u.Name:
	case r.Ticket != "":
		t, err := b.store.Get(ctx, r.Ticket)
		var evs []state.Event
		if err == nil {
			evs, err = b.store.Events(ctx, t.ID)
		}
		if err != nil || !b.canRead(u, t, evs) {
			return nil, flows.Userf("not_auditor", "/ops audit "+u.Name, "只能查看你参与的工单的审计 · you can see the audit log of tickets you may read (yours, your flows' roles) and of yourself; admins and auditors see all")
		}
	default:
		return nil, flows.Userf("not_auditor", "/ops audit "+u.Name, "只有管理员或审计员可以查看全部 · only admins and auditors see the whole audit log")
	}
	b.audit.Flush(ctx)
	entries, more, err := b.store.AuditLog(ctx, state.AuditQuery{Ticket: r.Ticket, User: r.User}, (r.Page-1)*pageSize, pageSize)
	if err != nil {
		return nil, err
	}
	v := templates.AuditView{Target: r.Ticket + r.User, Page: r.Page, More: more}
	for _, a := range entries {
		v.Entries = append(v.Entries, templates.AuditRow{At: a.At, User: a.User, Platform: a.Platform, Action: a.Action, Ticket: a.Ticket, Args: a.Args, Result: a.Result})
	}
	return []templates.Message{templates.MustRender("audit", v)}, nil
}

// version answers from the production ensemble what a client would be
// offered, or lists a platform's history.
func (b *Bot) version(r commands.Version) ([]templates.Message, error) {
	st := b.zk["production"]
	if st == nil {
		return nil, flows.Userf("not_configured", "", "未配置 ZooKeeper · game publishing is not configured (zookeeper: in the config)")
	}
	platform := r.Args["platform"]
	p, _, err := st.Pointers(platform)
	if err != nil {
		return nil, err
	}
	recs, err := st.Records(platform)
	if err != nil {
		return nil, err
	}
	if r.Op == "list" {
		if r.Args["online"] == "true" {
			recs = zookeeper.Online(recs)
		}
		var lines []string
		for _, rec := range recs {
			lines = append(lines, fmt.Sprintf("%d %s %s min %d compatible %v %s", rec.Version, rec.Kind, rec.ReleaseType, rec.MinUpdatable, rec.Compatible, rec.URL))
		}
		return []templates.Message{info("info", fmt.Sprintf("%s: prod %d gray %d review %d", platform, p.Prod, p.Gray, p.Review), strings.Join(lines, "\n"))}, nil
	}
	var c zookeeper.Client
	var perr error
	for k, dst := range map[string]*int{"section": &c.Section, "gray_version": &c.GrayVersion, "prod_version": &c.ProdVersion} {
		v, err := zookeeper.ParseVersion(r.Args[k])
		if err != nil {
			perr = flows.Userf("usage", "例 e.g. /ops version resolve platform=android section=2 gray_version= prod_version=1146", "%s=%q 不是数字 is not a number", k, r.Args[k])
		}
		*dst = v
	}
	if perr != nil {
		return nil, perr
	}
	target, why := zookeeper.Resolve(p, recs, c)
	title := fmt.Sprintf("%s section=%d gray=%d prod=%d → %d", platform, c.Section, c.GrayVersion, c.ProdVersion, target)
	return []templates.Message{info("info", title, why)}, nil
}
