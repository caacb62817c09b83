package bot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/commands"
	"opsbot/flows"
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
	ctx = flows.WithRequest(ctx, in.Platform, ref)
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
	command := ""
	finish := func(result string, msgs ...templates.Message) ([]templates.Message, error) {
		audit.Result = result
		class, code := "ok", ""
		var ue *flows.UserError
		switch {
		case result == "ok":
		case result == "duplicate delivery ignored":
			class = "duplicate"
		case errors.As(refusal, &ue):
			class, code = "refused", ue.Code
		default:
			class = "error"
		}
		if b.metrics != nil {
			b.metrics.command(in.Click, command, class, code)
		}
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
		command = req.Command()
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
	v := templates.ErrorView{Message: b.redact.Redact(ue.Message), Hint: b.redact.Redact(ue.Hint)}
	if ue.Code == "confirm" {
		// The way out is one press: the command that confirms.
		v.Buttons = []templates.Button{{Label: "确认 Confirm", Value: ue.Hint, Style: "danger"}}
	}
	return templates.MustRender("error", v)
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
		return []templates.Message{b.help(r.Topic, r.Short)}, nil
	case commands.New:
		t, err := e.Create(ctx, u.Name, r.Flow, r.Fields, ok)
		if err != nil {
			return nil, err
		}
		*stored, audit.Ticket = true, t.ID
		return []templates.Message{info("success", fmt.Sprintf("✅ 已提交 %s · ticket %s submitted: %s", t.ID, t.ID, t.Title), ""), b.present.TicketCard(t)}, nil
	case commands.Show:
		t, err := b.ticket(ctx, r.Ticket)
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
		// What the approver must see as it is now (e.g. which live versions
		// reach a new one) is looked up again.
		if nt, changed, err := e.Refresh(ctx, t.ID); err != nil {
			b.log.Warn("refresh looked-up fields", "ticket", t.ID, "err", err)
		} else if changed {
			t = nt
			if evs, err = b.store.Events(ctx, t.ID); err != nil {
				return nil, err
			}
		}
		return []templates.Message{b.present.TicketCard(t), info("info", "历史 History "+t.ID, b.present.History(t, evs))}, nil
	case commands.List:
		return b.list(ctx, u, r)
	case commands.Act:
		if r.Event == flows.EvApprove {
			// An approval covers what the approver saw: if a looked-up
			// field changed since the card was drawn, the card is redrawn
			// and the approval asked again.
			if nt, changed, err := e.Refresh(ctx, r.Ticket); err != nil {
				return nil, err
			} else if changed {
				return nil, flows.Userf("stale", "/ops show "+nt.ID,
					"%s 的查询结果已变化，请看新的卡片再审批 · what %s looked up has changed since the card was drawn: %s. Look at the redrawn card and approve again if it is still right",
					nt.ID, nt.ID, b.refreshedSummary(nt))
			}
		}
		t, err := e.Act(ctx, flows.Action{Actor: u.Name, Ticket: r.Ticket, Event: r.Event, Version: r.Version, Batch: r.Batch, Confirmed: r.Confirm, Comment: r.Comment,
			Audit: []state.AuditEntry{ok}})
		if err != nil {
			return nil, err
		}
		*stored = true
		card := b.present.TicketCard(t)
		return []templates.Message{info("success", fmt.Sprintf("✅ %s %s → %s · %s", t.ID, r.Event, card.StageTitle, t.Title), ""), card}, nil
	case commands.Role:
		return b.role(ctx, u, r)
	case commands.Audit:
		return b.auditLog(ctx, u, r)
	case commands.Version:
		return b.version(r)
	case commands.Platform:
		return b.platform(u, r)
	case commands.Edit:
		t, err := e.Edit(ctx, flows.Action{Actor: u.Name, Ticket: r.Ticket, Version: r.Version, Audit: []state.AuditEntry{ok}}, r.Fields)
		if err != nil {
			return nil, err
		}
		*stored = true
		return []templates.Message{info("success", fmt.Sprintf("✏️ %s 已修改，审批重新开始 · %s edited; approvals start over", t.ID, t.ID), ""), b.present.TicketCard(t)}, nil
	case commands.Mute:
		t, err := b.ticket(ctx, r.Ticket)
		if err != nil {
			return nil, err
		}
		if !b.canRead(u, t, nil) {
			return nil, notReadable(t.ID)
		}
		if _, err := e.Mute(ctx, u.Name, r.Ticket, r.On); err != nil {
			return nil, err
		}
		if r.On {
			return []templates.Message{info("success", fmt.Sprintf("🔕 不再通知 %s 的进度，结果仍会通知 · you will not hear %s's progress, only its result (/ops unmute %s)", t.ID, t.ID, t.ID), "")}, nil
		}
		return []templates.Message{info("success", fmt.Sprintf("🔔 恢复通知 %s 的进度 · you will hear %s's progress again", t.ID, t.ID), "")}, nil
	case commands.Cluster:
		return b.cluster(ctx, r)
	case commands.Store:
		return b.storeInfo(r)
	case commands.Freeze:
		return b.freeze(ctx, u, r)
	case commands.Milestone:
		return b.milestone(ctx, u, r)
	case commands.Calendar:
		return b.calendarView(ctx, r)
	case commands.Away:
		return b.away(ctx, u, r)
	case commands.Duty:
		return b.duty(ctx, u, r)
	case commands.Webhook:
		return b.webhook(ctx, u, r)
	case commands.Server:
		return b.serverShow(ctx, r)
	}
	return nil, fmt.Errorf("no handler for %T", req)
}

// ticket reads a ticket a person named; one that does not exist is their
// mistake, said as such.
func (b *Bot) ticket(ctx context.Context, id string) (state.Ticket, error) {
	t, err := b.store.Get(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return t, flows.Userf("no_ticket", "/ops list open", "没有工单 %s · there is no ticket %s", id, id)
	}
	return t, err
}
