// Package present turns tickets into what people see: the views the
// templates draw, the buttons a card offers (their values written in the
// command grammar by commands.Encode), batch rows, input forms, and the
// cards and notices the engine stores in the outbox. It implements
// flows.Presenter; the engine decides, this package words and draws.
package present

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"opsbot/commands"
	"opsbot/flows"
	"opsbot/state"
	"opsbot/templates"
)

// Presenter renders tickets of the flows it was given.
type Presenter struct {
	flows map[string]*flows.Flow
	// members names the holders of roles, for "waiting for" lines;
	// delegate, who holds someone's approvals while they are away.
	members  func(roles ...string) []string
	delegate func(user string) (string, bool)
}

// SetDelegates tells the presenter who holds the approvals of people
// away, so a card says "bob for libo".
func (p *Presenter) SetDelegates(fn func(user string) (string, bool)) { p.delegate = fn }

// New returns a presenter for flows (already validated); members names
// the holders of roles (nil: roles are shown without people).
func New(fl []*flows.Flow, members func(roles ...string) []string) *Presenter {
	p := &Presenter{flows: map[string]*flows.Flow{}, members: members}
	for _, f := range fl {
		p.flows[f.Name] = f
	}
	return p
}

// Notice implements flows.Presenter: a notice about the ticket as stored
// JSON.
func (p *Presenter) Notice(f *flows.Flow, t state.Ticket, n flows.Notice) (json.RawMessage, error) {
	v := p.view(f, t)
	if n.Personal {
		v.Buttons = buttons(t, n.Offers)
	}
	m, err := templates.Render("notice", templates.NoticeView{Ticket: v, Event: string(n.Event), Actor: n.Actor,
		Comment: n.Comment, Roles: n.Roles, Passed: n.Stage})
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// TicketCard draws a ticket's card, its flow looked up.
func (p *Presenter) TicketCard(t state.Ticket) templates.Message {
	f, ok := p.flows[t.Flow]
	if !ok {
		return templates.MustRender("info", templates.InfoView{Level: "warning", Title: t.ID + " (unknown flow " + t.Flow + ")"})
	}
	return templates.MustRender("ticket", p.view(f, t))
}

// CardFor draws a ticket's card for one person: only the actions offered
// to them (Engine.OffersFor).
func (p *Presenter) CardFor(t state.Ticket, offers []flows.Offer) templates.Message {
	f, ok := p.flows[t.Flow]
	if !ok {
		return p.TicketCard(t)
	}
	v := p.view(f, t)
	v.Buttons = buttons(t, offers)
	return templates.MustRender("ticket", v)
}

// ButtonsFor are the buttons of the given offers (Engine.OffersFor).
func ButtonsFor(t state.Ticket, offers []flows.Offer) []templates.Button { return buttons(t, offers) }

// TicketView is a ticket's view, its flow looked up (lists).
func (p *Presenter) TicketView(t state.Ticket) templates.TicketView {
	f, ok := p.flows[t.Flow]
	if !ok {
		return templates.TicketView{ID: t.ID, Flow: t.Flow, FlowTitle: t.Flow, Title: t.Title, Stage: t.Stage,
			StageTitle: flows.StageLabel(t.Stage), Ended: flows.Ended(t.Stage)}
	}
	return p.view(f, t)
}

// view is View with the people each waiting role names: a card shared in
// a channel says who may act ("ops: dave, erin").
func (p *Presenter) view(f *flows.Flow, t state.Ticket) templates.TicketView {
	v := View(f, t)
	if p.members == nil || !t.Open {
		return v
	}
	v.Waiting = nil
	for _, role := range t.WaitingRoles {
		var who []string
		for _, u := range p.members(role) {
			if u == t.Requester || slices.ContainsFunc(t.Approvals, func(a state.Approval) bool { return a.User == u || a.For == u }) {
				continue
			}
			if d, ok := p.delegateOf(u); ok && d != t.Requester {
				u = d + " for " + u
			}
			who = append(who, u)
		}
		if len(who) == 0 {
			who = []string{"无人 nobody: /ops role grant " + role + " <user>"}
		}
		v.Waiting = append(v.Waiting, role+": "+strings.Join(who, ", "))
	}
	return v
}

func (p *Presenter) delegateOf(u string) (string, bool) {
	if p.delegate == nil {
		return "", false
	}
	return p.delegate(u)
}

// View builds what a ticket's card shows, with the buttons its stage
// offers now.
func View(f *flows.Flow, t state.Ticket) templates.TicketView {
	v := templates.TicketView{ID: t.ID, Flow: f.Name, FlowTitle: f.Title, Title: t.Title, Stage: t.Stage,
		StageTitle: f.StageTitle(t.Stage), Open: t.Open, Ended: flows.Ended(t.Stage), Version: t.Version,
		StageKey: fmt.Sprintf("%s@%d", t.Stage, t.StageVersion), Requester: t.Requester, Operator: t.Operator,
		Waiting: t.WaitingRoles, Note: t.Note, Created: t.Created, Updated: t.Updated}
	st, _ := f.Stage(t.Stage)
	if st != nil {
		if st.Kind == flows.KindApproval {
			v.Need, v.Have = st.Need(t.Fields), len(t.Approvals)
		} else if st.Kind != flows.KindRelease {
			v.Note = strings.TrimSpace("⏳ 执行中 running " + st.Title + "\n" + t.Note)
		}
	}
	for _, fd := range f.Fields {
		val := t.Fields[fd.Name]
		if val == "" && fd.Computed {
			val = t.Outputs[fd.Name] // computed by an executor (a dry run's plan)
		}
		if val != "" {
			v.Fields = append(v.Fields, templates.Field{Label: fd.Label, Value: val})
		}
	}
	for _, a := range t.Approvals {
		who := a.User
		if a.For != "" {
			who += " for " + a.For
		}
		v.Approvals = append(v.Approvals, templates.ApprovalView{User: who, At: a.At, Comment: a.Comment})
	}
	if ex := t.Exception; ex != nil {
		if ex.ApprovedBy == "" {
			v.Exception = fmt.Sprintf("❄️ 等待 %s 审批例外 waiting for %s to let it through freeze %s: %s", strings.Join(ex.Roles, "/"),
				strings.Join(ex.Roles, " or "), ex.Freeze, ex.Reason)
		} else {
			v.Exception = fmt.Sprintf("❄️ 冻结例外已由 %s 批准 let through freeze %s by %s: %s", ex.ApprovedBy, ex.Freeze, ex.ApprovedBy, ex.Reason)
		}
	}
	last := t.FailedStage
	running := st != nil && st.Kind != flows.KindApproval && st.Kind != flows.KindRelease
	if last == "" && !running {
		// The most recent result explains a closed ticket, and shows the
		// approver of a later stage what she is approving (the deploy's
		// result at verification).
		last = t.LastResult
		if last == "" {
			// Tickets from before LastResult: the latest by time.
			var at time.Time
			for name, r := range t.Results {
				if r.Ended.After(at) {
					last, at = name, r.Ended
				}
			}
		}
	}
	if r, ok := t.Results[last]; ok {
		v.Result = &templates.ResultView{Stage: f.StageTitle(last), OK: r.OK, ExitCode: r.ExitCode, Output: r.Output, Error: r.Error,
			Hint: r.Hint, Files: r.Files, Attempt: r.Attempt}
	}
	if st != nil && st.Kind == flows.KindRelease {
		v.Fields = append(v.Fields, batchRows(st, t)...)
		v.Note = strings.TrimSpace(t.Note)
	}
	v.Buttons = Buttons(f, t)
	return v
}

// buttonText words each action a card offers, with its style.
var buttonText = map[flows.Event]struct{ label, style string }{
	flows.EvApprove:  {"同意 Approve", "primary"},
	flows.EvReject:   {"驳回 Reject", "danger"},
	flows.EvCancel:   {"取消 Cancel", ""},
	flows.EvRetry:    {"重试 Retry", "primary"},
	flows.EvRollback: {"回滚 Rollback", "danger"},
	flows.EvRelease:  {"发布 Release", "primary"},
}

// Buttons are the actions the ticket's stage offers now, each carrying
// the command it runs (with the card's version, and its batch for a batch
// release), so a stale button cannot act on a later state.
func Buttons(f *flows.Flow, t state.Ticket) []templates.Button { return buttons(t, f.Offers(t)) }

func buttons(t state.Ticket, offers []flows.Offer) []templates.Button {
	var out []templates.Button
	for _, o := range offers {
		text := buttonText[o.Event]
		label := text.label
		if o.Batch > 0 {
			n := fmt.Sprint(o.Batch)
			switch o.Event {
			case flows.EvRelease:
				label = "发布批次" + n + " Release batch " + n
			case flows.EvRollback:
				label = "回滚批次" + n + " Roll back batch " + n
			}
		}
		b := templates.Button{Label: label, Style: text.style,
			Value: commands.Encode(commands.Act{Event: o.Event, Ticket: t.ID, Version: t.Version, Batch: o.Batch, Confirm: o.Confirm})}
		b.Reason = o.Event == flows.EvReject
		if o.Confirm {
			b.Confirm = confirmText(o.Event, t)
			b.Unconfirmed = commands.Encode(commands.Act{Event: o.Event, Ticket: t.ID, Version: t.Version, Batch: o.Batch})
		}
		out = append(out, b)
	}
	return out
}

var batchLabels = map[string]string{
	state.BatchPending:        "待发布 pending",
	state.BatchReleasing:      "发布中 releasing",
	state.BatchFailed:         "失败 failed",
	state.BatchSucceeded:      "已发布 succeeded",
	state.BatchRollingBack:    "回滚中 rolling back",
	state.BatchRolledBack:     "已回滚 rolled back",
	state.BatchRollbackFailed: "回滚失败 rollback failed",
}

// batchRows show each batch: its state, its targets with their stores
// (a zone without stores says so), the merge requests and what went wrong.
func batchRows(st *flows.Stage, t state.Ticket) []templates.Field {
	var out []templates.Field
	path := st.ReleasePath()
	for _, b := range t.Batches {
		var targets, stores []string
		for _, z := range b.Targets {
			zs := st.Params["stores."+z]
			if zs != "" {
				stores = append(stores, zs)
			}
			switch {
			case slices.Contains(path, z):
				targets = append(targets, z)
			case zs == "":
				targets = append(targets, z+" (无门店 no stores)")
			default:
				targets = append(targets, fmt.Sprintf("%s (%s)", z, zs))
			}
		}
		value := batchLabels[b.State] + " · " + strings.Join(targets, ", ")
		var mrs []string
		for _, s := range b.Steps {
			item := s.Target + ":" + s.Result
			if s.MR != 0 {
				item = fmt.Sprintf("%s !%d %s", s.Target, s.MR, s.Result)
			}
			if len(s.Files) > 0 {
				item += " [" + strings.Join(s.Files, ", ") + "]"
			}
			mrs = append(mrs, item)
		}
		if len(mrs) > 0 {
			value += " · " + strings.Join(mrs, "; ")
		}
		if b.Note != "" {
			value += " · " + b.Note
		}
		out = append(out, templates.Field{Label: "批次 Batch " + b.Name, Value: value})
		storeRow := strings.Join(stores, ",")
		if storeRow == "" {
			storeRow = "无门店 no stores"
		}
		out = append(out, templates.Field{Label: "批次" + b.Name + "门店 Batch " + b.Name + " stores", Value: storeRow})
	}
	return out
}

// Form describes a flow's fields as a neutral form, which a platform
// draws as a modal or dialog.
func Form(f *flows.Flow) templates.Form {
	form := templates.Form{Flow: f.Name, Title: f.Title}
	for _, fd := range f.Fields {
		if fd.Computed {
			continue
		}
		ff := templates.FormField{Name: fd.Name, Label: fd.Label, Help: fd.Help, Placeholder: fd.Example,
			Required: fd.Required, Multiline: fd.Type == flows.TypeText}
		switch fd.Type {
		case flows.TypeEnum:
			ff.Options = fd.Enum
		case flows.TypeBool:
			ff.Options = []string{"false", "true"}
		case flows.TypeIPList:
			ff.Help = strings.TrimSpace(ff.Help + " 逗号分隔 comma-separated, e.g. 10.0.0.1,10.0.0.2")
		}
		form.Fields = append(form.Fields, ff)
	}
	return form
}

// ClusterWarning words a cluster utilization warning.
func ClusterWarning(w state.ClusterWarning) templates.Message {
	pct := func(n int) int {
		if w.Capacity <= 0 {
			return 0
		}
		return int(math.Round(float64(n) * 100 / float64(w.Capacity)))
	}
	at := int(w.At*100 + 0.5)
	return templates.MustRender("info", templates.InfoView{Level: "warning",
		Title: fmt.Sprintf("⚠️ 集群 %s 使用率 %d%% 超过 %d%% · cluster %s utilization crossed %d%%: %d/%d stores",
			w.Cluster, pct(w.After), at, w.Cluster, at, w.After, w.Capacity),
		Body: fmt.Sprintf("%s 迁入 moved in %d→%d (%s)", w.Ticket, w.Before, w.After, w.Title)})
}

// confirmText is the question a destructive button asks before it is sent.
func confirmText(ev flows.Event, t state.Ticket) string {
	switch ev {
	case flows.EvRollback:
		return fmt.Sprintf("确定回滚 %s？已做的变更会被撤销 · Roll back %s? What it changed is undone.", t.ID, t.ID)
	case flows.EvRelease:
		return fmt.Sprintf("确定发布 %s 的下一批次？会合并到生产分支 · Release the next batch of %s? It merges into production branches.", t.ID, t.ID)
	case flows.EvApprove:
		return fmt.Sprintf("确定同意 %s？这会开始不能撤回的操作 · Approve %s? This starts what cannot be taken back.", t.ID, t.ID)
	case flows.EvCancel:
		return fmt.Sprintf("确定取消 %s？ · Cancel %s?", t.ID, t.ID)
	}
	return fmt.Sprintf("确定？ · Sure? (%s %s)", ev, t.ID)
}

// systemEventWords are the history's words for what the bot did.
var systemEventWords = map[flows.Event]string{
	flows.EvSubmit:    "提交 submitted",
	flows.EvSucceed:   "步骤成功 step succeeded",
	flows.EvFail:      "步骤失败 step failed",
	flows.EvInterrupt: "中断 interrupted",
	flows.EvRemind:    "提醒 reminded",
	flows.EvEscalate:  "升级 escalated",
	flows.EvExpire:    "过期 expired",
	flows.EvSkip:      "跳过 skipped",
	flows.EvRedo:      "重做 redone",
	flows.EvEdit:      "修改 edited",
	flows.EvRefresh:   "重新查询 looked up again",
	flows.EvException: "申请冻结例外 asked for a freeze exception",
	flows.EvDelegate:  "审批转交 approvals handed over",
}

// History is a ticket's last 15 events, one line each: version, time (in
// the configured zone, named once at the top), who, what, and the stages
// by their titles.
func (p *Presenter) History(t state.Ticket, evs []state.Event) string {
	title := flows.StageLabel
	if f, ok := p.flows[t.Flow]; ok {
		title = f.StageTitle
	}
	start := max(0, len(evs)-15)
	var lines []string
	if len(evs) > 0 {
		lines = append(lines, "时区 zone: "+templates.InZone(evs[len(evs)-1].At).Format("MST"))
	}
	if start > 0 {
		lines = append(lines, fmt.Sprintf("… 更早 %d 条 %d earlier", start, start))
	}
	for _, ev := range evs[start:] {
		what := ev.Type
		if w, ok := buttonText[flows.Event(ev.Type)]; ok {
			what = w.label
		} else if w, ok := systemEventWords[flows.Event(ev.Type)]; ok {
			what = w
		}
		who := ev.Actor
		if f := ev.Data["for"]; f != "" {
			who += " for " + f
		}
		l := fmt.Sprintf("v%d %s %s %s", ev.Seq, templates.InZone(ev.At).Format("01-02 15:04"), who, what)
		if ev.From != ev.To {
			l += fmt.Sprintf(" · %s → %s", title(ev.From), title(ev.To))
		}
		if ev.Comment != "" {
			l += ": " + ev.Comment
		}
		lines = append(lines, l)
	}
	return strings.Join(lines, "\n")
}
