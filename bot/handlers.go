package bot

// Command handlers that read and answer: show access (canRead), history,
// help, list, roles, the audit log and version look-ups. Ticket changes
// (new, act, edit) go through the engine in dispatch.go; clusters and
// stores are in clusters.go.

import (
	"context"
	"fmt"
	"maps"
	"opsbot/commands"
	"opsbot/flows"
	"opsbot/integrations/zookeeper"
	"opsbot/state"
	"opsbot/templates"
	"slices"
	"strconv"
	"strings"
)

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

func (b *Bot) help(topic string, short bool) templates.Message {
	e := b.engine
	if short {
		return info("info", "你好 👋 我是 opsbot，帮你走审批流程 · hi, I am opsbot: I take tickets through their approvals",
			"提交 open: "+strings.Join(flowExamples(e), "\n")+"\n待我审批 waiting for me: /ops list waiting\n全部命令 every command: /ops help")
	}
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
	if topic != "" {
		var names []string
		names = append(names, b.reg.Names()...)
		names = append(names, e.FlowNames()...)
		return templates.MustRender("error", templates.ErrorView{
			Message: fmt.Sprintf("没有命令或流程 %q · no command or flow called %q%s", topic, topic, commands.DidYouMean(topic, names)),
			Hint:    "/ops help"})
	}
	v := templates.HelpView{}
	for _, s := range b.reg.Specs() {
		summary := s.Summary
		if len(s.Aliases) > 0 {
			summary += " · 也可写 also: " + strings.Join(s.Aliases, ", ")
		}
		v.Commands = append(v.Commands, templates.HelpCommand{Name: s.Name, Usage: s.Usage, Summary: summary, Example: s.Example})
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
	body := ""
	if grant && !slices.Contains(b.knownRoles(), r.Role) {
		// Granted as asked, but nothing will ask for it: most likely a typo.
		body = fmt.Sprintf("⚠️ 没有流程使用角色 %s · no flow uses the role %s%s", r.Role, r.Role, commands.DidYouMean(r.Role, b.knownRoles()))
	}
	return []templates.Message{info("success", fmt.Sprintf("%s %s → %s", verb, r.Role, r.User), body)}, nil
}

// knownRoles are the roles something asks for: the flows' roles and
// requester roles, admin and auditor.
func (b *Bot) knownRoles() []string {
	out := []string{flows.AdminRole, "auditor"}
	for _, n := range b.engine.FlowNames() {
		f, _ := b.engine.Flow(n)
		for _, r := range append(f.Roles(), f.RequesterRoles...) {
			if r = state.NormName(r); !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
		for _, st := range f.Stages {
			if r := state.NormName(st.EscalateTo); r != "" && !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}

func (b *Bot) auditLog(ctx context.Context, u state.User, r commands.Audit) ([]templates.Message, error) {
	privileged := b.dir.HasRole(u.Name, flows.AdminRole, "auditor")
	if r.Ticket != "" {
		if _, err := b.ticket(ctx, r.Ticket); flows.CodeOf(err) == "no_ticket" {
			return nil, err
		}
	}
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
		page := 1
		if v := r.Args["page"]; v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 1 {
				return nil, flows.Userf("usage", "例 e.g. /ops version list platform="+platform+" page=2", "page=%q 不是页码 · page=%q is not a page number", v, v)
			} else {
				page = n
			}
		}
		status, err := st.Status(platform)
		if err != nil {
			return nil, err
		}
		pages := max(1, (len(recs)+pageSize-1)/pageSize)
		// Newest first, a page at a time, like /ops list.
		var lines []string
		for i := len(recs) - 1 - (page-1)*pageSize; i >= 0 && i > len(recs)-1-page*pageSize; i-- {
			rec := recs[i]
			lines = append(lines, fmt.Sprintf("%d %s %s min %d compatible %v %s", rec.Version, rec.Kind, rec.ReleaseType, rec.MinUpdatable, rec.Compatible, rec.URL))
		}
		if page > pages {
			lines = []string{fmt.Sprintf("没有第 %d 页 · there is no page %d: %d version(s), %d page(s)", page, page, len(recs), pages)}
		} else if page < pages {
			lines = append(lines, fmt.Sprintf("… 下一页 next page: /ops version list platform=%s page=%d", platform, page+1))
		}
		title := fmt.Sprintf("%s: prod %d gray %d review %d · 状态 status: %s · 第 %d/%d 页 page %d of %d (%d versions)",
			platform, p.Prod, p.Gray, p.Review, statusWords(status), page, pages, page, pages, len(recs))
		return []templates.Message{info("info", title, strings.Join(lines, "\n"))}, nil
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
	section := fmt.Sprint(c.Section)
	if c.Section == zookeeper.SectionUnknown {
		section = "缺失 missing (按正式服 as production)"
	} else if c.Section != zookeeper.SectionProd && c.Section != zookeeper.SectionGray {
		return nil, flows.Userf("usage", "例 e.g. /ops version resolve platform=android section=2 gray_version= prod_version=1146",
			"section=%d 不是区服 · section=%d is not a section: 1 is the production server, 2 the gray server", c.Section, c.Section)
	}
	target, why := zookeeper.Resolve(p, recs, c)
	title := fmt.Sprintf("%s section=%s gray=%d prod=%d → %d", platform, section, c.GrayVersion, c.ProdVersion, target)
	return []templates.Message{info("info", title, why)}, nil
}

// flowExamples gives one "/ops new" line per flow, at most three.
func flowExamples(e *flows.Engine) []string {
	var out []string
	for _, n := range e.FlowNames() {
		if len(out) == 3 {
			out = append(out, "…")
			break
		}
		f, _ := e.Flow(n)
		out = append(out, "/ops new "+f.Name+" · "+f.Title)
	}
	return out
}

// maxWaiting bounds the cards Waiting draws.
const maxWaiting = 20

// Waiting draws the cards of the open tickets that wait for user to act
// (approve, deploy, verify, release, retry, roll back), each with only
// the buttons that person may press; with nothing waiting,
// the short help, so a first look is never empty.
func (b *Bot) Waiting(ctx context.Context, name string) []templates.Message {
	u, ok := b.dir.User(name)
	var out []templates.Message
	if ok && len(u.Roles) > 0 {
		page, err := b.store.List(ctx, state.Index{Kind: "waiting", Keys: u.Roles}, func(t state.Ticket) bool { return t.Open }, 0, maxWaiting*4)
		if err != nil {
			b.log.Error("list waiting tickets", "user", name, "err", err)
			return []templates.Message{b.internal(newRef())}
		}
		for _, t := range page.Tickets {
			f, ok := b.engine.Flow(t.Flow)
			if !ok {
				continue
			}
			offers := slices.DeleteFunc(b.engine.OffersFor(f, t, u.Name), func(o flows.Offer) bool { return o.Event == flows.EvCancel })
			if len(offers) > 0 && len(out) < maxWaiting {
				out = append(out, b.present.CardFor(t, offers))
			}
		}
	}
	if len(out) == 0 {
		return []templates.Message{b.help("", true)}
	}
	return out
}

// refreshedSummary names a ticket's refreshed fields with their values.
func (b *Bot) refreshedSummary(t state.Ticket) string {
	f, ok := b.engine.Flow(t.Flow)
	if !ok {
		return ""
	}
	var parts []string
	for _, name := range f.Refresh {
		label := name
		if fd := f.Field(name); fd != nil && fd.Label != "" {
			label = fd.Label
		}
		parts = append(parts, label+": "+t.Fields[name])
	}
	return strings.Join(parts, "; ")
}

// maxRefresh bounds the tickets one timer pass looks up again.
const maxRefresh = 200

// RefreshLookups looks up again the refreshed fields (Flow.Refresh) of
// the open tickets waiting for approval, so their cards show them as they
// are now even when nobody looks; it returns how many changed.
func (b *Bot) RefreshLookups(ctx context.Context) (int, error) {
	if !slices.ContainsFunc(b.engine.FlowNames(), func(n string) bool { f, _ := b.engine.Flow(n); return len(f.Refresh) > 0 }) {
		return 0, nil // no flow looks anything up again: no scan of the open tickets
	}
	page, err := b.store.List(ctx, state.Index{Kind: "open"}, func(t state.Ticket) bool {
		f, ok := b.engine.Flow(t.Flow)
		if !ok || len(f.Refresh) == 0 {
			return false
		}
		st, _ := f.Stage(t.Stage)
		return st != nil && st.Kind == flows.KindApproval
	}, 0, maxRefresh)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range page.Tickets {
		_, changed, err := b.engine.Refresh(ctx, t.ID)
		if err != nil {
			return n, err
		}
		if changed {
			n++
		}
	}
	return n, nil
}

// statusWords shows a platform's status in both languages.
func statusWords(status string) string {
	switch status {
	case "stopped":
		return "已停服 stopped"
	case "active":
		return "运行中 active"
	}
	return status
}

// platform stops or starts a game platform on every ensemble (a stopped
// platform is skipped by every publish, and the card says so).
func (b *Bot) platform(u state.User, r commands.Platform) ([]templates.Message, error) {
	if len(b.zk) == 0 {
		return nil, flows.Userf("not_configured", "", "未配置 ZooKeeper · game publishing is not configured (zookeeper: in the config)")
	}
	roles := append(slices.Clone(b.cfg.ZooKeeper.PlatformRoles), flows.AdminRole)
	if !b.dir.HasRole(u.Name, roles...) {
		return nil, flows.Userf("not_role_holder", "可操作 may do it: "+strings.Join(b.dir.Members(roles...), ", "),
			"只有 %s 可以停服或开服 · only holders of %s can stop or start a platform", strings.Join(roles, "/"), strings.Join(roles, ", "))
	}
	if err := zookeeper.CheckPlatform(r.Name); err != nil {
		return nil, flows.Userf("bad_fields", "例 e.g. /ops platform stop android", "%v", err)
	}
	if known := b.cfg.ZooKeeper.Platforms; len(known) > 0 && !slices.Contains(known, r.Name) {
		return nil, flows.Userf("unknown_platform", "平台 platforms: "+strings.Join(known, ", "),
			"没有平台 %s · there is no platform %q%s", r.Name, r.Name, commands.DidYouMean(r.Name, known))
	}
	want := map[string]string{"stop": "stopped", "start": "active"}[r.Op]
	var lines []string
	for _, name := range slices.Sorted(maps.Keys(b.zk)) {
		st := b.zk[name]
		was, err := st.Status(r.Name)
		if err != nil {
			return nil, err
		}
		if err := st.SetStatus(r.Name, want); err != nil {
			return nil, err
		}
		lines = append(lines, fmt.Sprintf("%s: %s -> %s", name, statusWords(was), statusWords(want)))
	}
	title := fmt.Sprintf("⏸ 已停服 %s · %s stopped: every publish skips it until /ops platform start %s", r.Name, r.Name, r.Name)
	if r.Op == "start" {
		title = fmt.Sprintf("▶️ 已开服 %s · %s started: publishes reach it again", r.Name, r.Name)
	}
	return []templates.Message{info("success", title, strings.Join(lines, "\n"))}, nil
}
