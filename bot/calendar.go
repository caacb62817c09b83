package bot

// The calendar's commands (/ops freeze, unfreeze, milestone, calendar,
// away, duty) and its sweep: a freeze's reminder the day before it
// starts and its end notice, each queued once in the transaction that
// marks it; absences that end hand the approvals back.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"opsbot/commands"
	"opsbot/flows"
	"opsbot/present"
	"opsbot/state"
	"opsbot/templates"
)

// Tick fires what is due now: the engine's timers (reminders,
// escalations, expiry, duty widening) and the calendar's announcements
// and absences.
func (b *Bot) Tick(ctx context.Context) error {
	err := b.engine.Tick(ctx)
	return errors.Join(err, b.calendarTick(ctx))
}

// zoneName is the time zone freezes are set in when a command names none.
func (b *Bot) zoneName() string { return b.cfg.ZoneOrUTC().String() }

// mayFreeze refuses who may not set or lift freezes and milestones.
func (b *Bot) mayFreeze(u state.User) error {
	roles := append(slices.Clone(b.cfg.Calendar.FreezeRoles), flows.AdminRole)
	if b.dir.HasRole(u.Name, roles...) {
		return nil
	}
	return flows.Userf("not_role_holder", "可操作 can freeze: "+strings.Join(b.dir.Members(roles...), ", "),
		"只有 %s 可以设置冻结或里程碑 · only holders of %s can set or lift freezes and milestones", strings.Join(roles, "/"), strings.Join(roles, ", "))
}

// announcement is a freeze notice queued to its channel.
func (b *Bot) announcement(kind string, fz state.Freeze, start, end time.Time) (state.Notification, error) {
	ch := fz.Channel
	m := present.FreezeNotice(kind, fz, start, end, b.cfg.Channels[ch].Mention != "none")
	raw, err := json.Marshal(m)
	now := b.now()
	return state.Notification{User: ch, Kind: state.NotifyChannel, Message: raw, NextAt: now, Created: now}, err
}

// parseWhen reads a day or a time of day in loc ("2026-05-12",
// "2026-05-12 09:00"), or a time with its offset (RFC 3339).
func parseWhen(s string, loc *time.Location) (time.Time, error) {
	for _, layout := range []string{"2006-01-02", "2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02 15:04:05"} {
		if t, err := time.ParseInLocation(layout, strings.TrimSpace(s), loc); err == nil {
			return t, nil
		}
	}
	return time.Parse(time.RFC3339, strings.TrimSpace(s))
}

// freezeSpec checks what a new freeze names and builds it.
func (b *Bot) freezeSpec(u state.User, envs, fls, resources []string, from, until, every, tz string, except []string, channel, reason string) (state.Freeze, error) {
	now := b.now()
	example := `例 e.g. /ops freeze env=prod flows=golive until="2026-05-12 09:00" reason="5.9 external test"`
	fz := state.Freeze{Envs: envs, Resources: resources, Reason: b.redact.Redact(reason), By: u.Name, At: now,
		Except: nil, Channel: channel, TZ: tz}
	if fz.TZ == "" {
		fz.TZ = b.zoneName()
	}
	loc, err := flows.LoadTZ(fz.TZ)
	if err != nil {
		return fz, flows.Userf("bad_fields", "例 e.g. tz=Asia/Shanghai", "tz=%q 不是时区 · tz=%q is not a time zone", tz, tz)
	}
	for _, name := range fls {
		f, ok := b.engine.Flow(name)
		if !ok {
			return fz, flows.Userf("unknown_flow", "flows: "+strings.Join(b.engine.FlowNames(), ", ")+commands.DidYouMean(name, b.engine.FlowNames()),
				"没有流程 %s · unknown flow %q", name, name)
		}
		fz.Flows = append(fz.Flows, f.Name)
	}
	for _, r := range resources {
		if k, v, ok := strings.Cut(r, ":"); !ok || k == "" || v == "" {
			return fz, flows.Userf("bad_fields", "例 e.g. resource=service:payments or resource=platform:ios", "resource=%q 应为 名称:值 · resource=%q is not kind:name", r, r)
		}
	}
	for _, r := range except {
		r = state.NormName(r)
		if len(b.dir.Members(r)) == 0 {
			return fz, flows.Userf("bad_fields", "roles: "+strings.Join(b.dir.Roles(), ", ")+commands.DidYouMean(r, b.dir.Roles()),
				"except=%s：没有人持有该角色，例外无人能批 · except=%s: nobody holds that role, so nobody could approve an exception", r, r)
		}
		fz.Except = append(fz.Except, r)
	}
	if fz.Channel == "" {
		fz.Channel = b.cfg.Calendar.Channel
	}
	fz.From = now
	if from != "" {
		if fz.From, err = parseWhen(from, loc); err != nil {
			return fz, flows.Userf("bad_fields", example, "from=%q 不是日期 · from=%q is not a date or time", from, from)
		}
	}
	if until != "" {
		if fz.Until, err = parseWhen(until, loc); err != nil {
			return fz, flows.Userf("bad_fields", example, "until=%q 不是日期 · until=%q is not a date or time", until, until)
		}
		if !fz.Until.After(now) {
			return fz, flows.Userf("bad_fields", example, "until=%s 已经过去 · until=%s is in the past", until, until)
		}
		if !fz.From.IsZero() && !fz.Until.After(fz.From) {
			return fz, flows.Userf("bad_fields", example, "until 必须晚于 from · until= must come after from=")
		}
	}
	if every != "" {
		if fz.Weekly, err = flows.ParseWeekly(every); err != nil {
			return fz, flows.Userf("bad_fields", `例 e.g. every="fri 18:00-mon 09:00"`, "%v", err)
		}
	}
	return fz, nil
}

// setFreeze stores a new freeze with its announcement; a freeze that
// starts within the reminder's lead time is not reminded again.
func (b *Bot) setFreeze(ctx context.Context, fz state.Freeze, more func(*state.CalendarChange)) (state.Freeze, error) {
	now := b.now()
	start, end, ok := flows.FreezeNext(fz, now)
	if !ok {
		return fz, flows.Userf("bad_fields", "", "这个冻结没有未来的时间窗口 · this freeze has no window left")
	}
	if start.IsZero() {
		start = now
	}
	if !start.After(now.Add(b.cfg.Calendar.RemindBefore.D())) {
		fz.RemindedFor = start
	}
	var err error
	if fz.ID, err = b.store.NewFreezeID(ctx); err != nil {
		return fz, err
	}
	// The freeze and its announcement land together, once.
	n, err := b.announcement(present.FreezeSet, fz, start, end)
	if err != nil {
		return fz, err
	}
	c := state.CalendarChange{PutFreezes: []state.Freeze{fz}, Notify: []state.Notification{n}}
	if more != nil {
		more(&c)
	}
	return fz, b.store.WriteCalendar(ctx, c)
}

// freeze answers /ops freeze and /ops unfreeze.
func (b *Bot) freeze(ctx context.Context, u state.User, r commands.Freeze) ([]templates.Message, error) {
	now := b.now()
	if r.Op == "list" {
		cal, err := b.store.ReadCalendar(ctx)
		if err != nil {
			return nil, err
		}
		var lines []string
		for _, fz := range cal.Freezes {
			start, end, ok := flows.FreezeNext(fz, now)
			if !ok {
				continue
			}
			state := "已排期 scheduled"
			if _, holds := flows.FreezeHolds(fz, now); holds {
				state = "生效中 in force"
			}
			line := fmt.Sprintf("%s %s · %s (%s): %s · by %s", fz.ID, flows.FreezeText(fz), present.FreezeWindow(fz, start, end), state, fz.Reason, fz.By)
			if len(fz.Except) > 0 {
				line += " · 例外 exception: " + strings.Join(fz.Except, "/")
			}
			lines = append(lines, line)
		}
		if len(lines) == 0 {
			return []templates.Message{info("info", "没有冻结 no freezes", "")}, nil
		}
		return []templates.Message{info("info", fmt.Sprintf("冻结 Freezes: %d", len(lines)), strings.Join(lines, "\n"))}, nil
	}
	if err := b.mayFreeze(u); err != nil {
		return nil, err
	}
	if r.Op == "lift" {
		return b.unfreeze(ctx, u, r)
	}
	fz, err := b.freezeSpec(u, r.Envs, r.Flows, r.Resources, r.From, r.Until, r.Every, r.TZ, r.Except, r.Channel, r.Reason)
	if err != nil {
		return nil, err
	}
	if fz, err = b.setFreeze(ctx, fz, nil); err != nil {
		return nil, err
	}
	start, end, _ := flows.FreezeNext(fz, now)
	return []templates.Message{info("success", fmt.Sprintf("🧊 %s 已冻结 %s · %s frozen %s", fz.ID, flows.FreezeText(fz), flows.FreezeText(fz), present.FreezeWindow(fz, start, end)),
		fmt.Sprintf("%s\n已通知 announced in #%s · /ops unfreeze %s", fz.Reason, fz.Channel, fz.ID))}, nil
}

// unfreeze lifts a freeze by id, or every freeze of an environment: it
// ends now, with its end notice.
func (b *Bot) unfreeze(ctx context.Context, u state.User, r commands.Freeze) ([]templates.Message, error) {
	now := b.now()
	var lifted []state.Freeze
	_, err := b.store.EditCalendar(ctx, func(cal state.Calendar) (state.CalendarChange, error) {
		lifted = nil
		var c state.CalendarChange
		for _, fz := range cal.Freezes {
			if fz.Ended || (r.ID != "" && fz.ID != r.ID) || (r.Env != "" && !slices.Contains(fz.Envs, r.Env)) {
				continue
			}
			if _, _, ok := flows.FreezeNext(fz, now); !ok {
				continue
			}
			fz.Ended, fz.LiftedBy = true, u.Name
			if fz.Until.IsZero() || fz.Until.After(now) {
				fz.Until = now
			}
			n, err := b.announcement(present.FreezeEnded, fz, time.Time{}, now)
			if err != nil {
				return c, err
			}
			c.PutFreezes = append(c.PutFreezes, fz)
			c.Notify = append(c.Notify, n)
			lifted = append(lifted, fz)
		}
		return c, nil
	})
	if errors.Is(err, state.ErrNoChange) {
		what := r.ID
		if what == "" {
			what = r.Env
		}
		return nil, flows.Userf("not_frozen", "/ops freeze list", "%s 没有冻结 · %s is not frozen", what, what)
	}
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, fz := range lifted {
		ids = append(ids, fmt.Sprintf("%s (%s: %s)", fz.ID, flows.FreezeText(fz), fz.Reason))
	}
	return []templates.Message{info("success", "🔓 已解除冻结 lifted: "+strings.Join(ids, "; "), "")}, nil
}

// milestone answers /ops milestone.
func (b *Bot) milestone(ctx context.Context, u state.User, r commands.Milestone) ([]templates.Message, error) {
	if r.Op == "list" {
		cal, err := b.store.ReadCalendar(ctx)
		if err != nil {
			return nil, err
		}
		var lines []string
		for _, m := range cal.Milestones {
			if r.Version == "" || m.Version == r.Version {
				lines = append(lines, milestoneLine(m))
			}
		}
		if len(lines) == 0 {
			return []templates.Message{info("info", "没有里程碑 no milestones", "/ops milestone add 5.9 date=2026-05-09 name=\"对外测试\" kind=external_test")}, nil
		}
		return []templates.Message{info("info", fmt.Sprintf("里程碑 Milestones: %d", len(lines)), strings.Join(lines, "\n"))}, nil
	}
	if err := b.mayFreeze(u); err != nil {
		return nil, err
	}
	loc, _ := flows.LoadTZ(b.zoneName())
	day, err := time.ParseInLocation("2006-01-02", r.Date, loc)
	if err != nil {
		return nil, flows.Userf("bad_fields", `例 e.g. date=2026-04-26`, "date=%q 不是日期 · date=%q is not a day (YYYY-MM-DD)", r.Date, r.Date)
	}
	m := state.Milestone{Version: r.Version, Date: day.Format("2006-01-02"), Name: b.redact.Redact(r.Name), Kind: r.Kind, By: u.Name, At: b.now()}
	if r.Op == "remove" {
		_, err := b.store.EditCalendar(ctx, func(cal state.Calendar) (state.CalendarChange, error) {
			for _, x := range cal.Milestones {
				if x.Key() == m.Key() {
					return state.CalendarChange{DeleteMilestones: []string{m.Key()}}, nil
				}
			}
			return state.CalendarChange{}, nil
		})
		if errors.Is(err, state.ErrNoChange) {
			return nil, flows.Userf("not_found", "/ops milestone list "+r.Version, "没有这个里程碑 · version %s has no milestone %q on %s", r.Version, r.Name, m.Date)
		}
		if err != nil {
			return nil, err
		}
		return []templates.Message{info("success", "🗑 已删除里程碑 milestone removed: "+milestoneLine(m), "它设置的冻结仍在 a freeze it set stays: /ops unfreeze F-n")}, nil
	}
	cal, err := b.store.ReadCalendar(ctx)
	if err != nil {
		return nil, err
	}
	for _, x := range cal.Milestones {
		if x.Key() == m.Key() {
			return nil, flows.Userf("exists", fmt.Sprintf("/ops milestone remove %s date=%s name=%q", m.Version, m.Date, m.Name),
				"里程碑已存在 · %s already has %s on %s", m.Version, m.Name, m.Date)
		}
	}
	body := ""
	if len(r.Envs) == 0 && len(r.Flows) == 0 {
		if err := b.store.WriteCalendar(ctx, state.CalendarChange{PutMilestones: []state.Milestone{m}}); err != nil {
			return nil, err
		}
	} else {
		// A milestone that freezes: from its day until until= or the
		// version's next milestone after it (the external test).
		until := r.Until
		if until == "" {
			for _, x := range cal.Milestones {
				if x.Version == m.Version && x.Date > m.Date && (until == "" || x.Date < until) {
					until = x.Date
				}
			}
			if until == "" {
				return nil, flows.Userf("bad_fields", fmt.Sprintf(`例 e.g. until=2026-05-09, or first /ops milestone add %s date=2026-05-09 name="对外测试" kind=external_test`, m.Version),
					"冻结到哪天？需要 until= 或该版本更晚的里程碑 · freeze until when? give until= or add a later milestone of %s first", m.Version)
			}
		}
		fz, err := b.freezeSpec(u, r.Envs, r.Flows, nil, m.Date, until, "", "", r.Except, r.Channel,
			fmt.Sprintf("%s %s", m.Version, m.Name))
		if err != nil {
			return nil, err
		}
		fz.Milestone = m.Key()
		if fz, err = b.setFreeze(ctx, fz, func(c *state.CalendarChange) {
			m.Freeze = c.PutFreezes[0].ID // the milestone names the freeze it set
			c.PutMilestones = append(c.PutMilestones, m)
		}); err != nil {
			return nil, err
		}
		start, end, _ := flows.FreezeNext(fz, b.now())
		body = fmt.Sprintf("🧊 %s 冻结 %s · freezes %s %s（已通知 announced in #%s）", fz.ID, flows.FreezeText(fz), flows.FreezeText(fz),
			present.FreezeWindow(fz, start, end), fz.Channel)
	}
	return []templates.Message{info("success", "📅 已添加里程碑 milestone added: "+milestoneLine(m), body)}, nil
}

func milestoneLine(m state.Milestone) string {
	s := fmt.Sprintf("%s %s %s", m.Date, m.Version, m.Name)
	if m.Kind != "" {
		s += " (" + m.Kind + ")"
	}
	if m.Freeze != "" {
		s += " ❄️ " + m.Freeze
	}
	return s
}

// calendarView answers /ops calendar [YYYY-MM]: the month's milestones
// and freezes by day, who is away and who is on duty.
func (b *Bot) calendarView(ctx context.Context, r commands.Calendar) ([]templates.Message, error) {
	loc, _ := flows.LoadTZ(b.zoneName())
	now := b.now().In(loc)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, loc)
	if r.Month != "" {
		m, err := time.ParseInLocation("2006-01", r.Month, loc)
		if err != nil {
			return nil, flows.Userf("bad_fields", "例 e.g. /ops calendar 2026-05", "%q 不是月份 · %q is not a month (YYYY-MM)", r.Month, r.Month)
		}
		month = m
	}
	next := month.AddDate(0, 1, 0)
	cal, err := b.store.ReadCalendar(ctx)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, m := range cal.Milestones {
		if m.Date >= month.Format("2006-01-02") && m.Date < next.Format("2006-01-02") {
			lines = append(lines, "📅 "+milestoneLine(m))
		}
	}
	for _, fz := range cal.Freezes {
		start, end, ok := flows.FreezeNext(fz, month)
		if fz.Weekly == nil {
			start, end, ok = fz.From, fz.Until, !fz.Ended || fz.Until.After(month)
			if fz.From.IsZero() {
				start = fz.At
			}
		}
		if !ok || !start.Before(next) || (!end.IsZero() && end.Before(month)) {
			continue
		}
		line := fmt.Sprintf("❄️ %s %s · %s: %s", fz.ID, flows.FreezeText(fz), present.FreezeWindow(fz, start, end), fz.Reason)
		if fz.Ended && fz.LiftedBy != "" {
			line += " (解除 lifted by " + fz.LiftedBy + ")"
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	for _, a := range cal.Away {
		if a.Until.After(month) && a.Since.Before(next) {
			lines = append(lines, fmt.Sprintf("🏖 %s 休假至 away until %s · 审批转交 approvals: %s", a.User, a.Until.In(loc).Format("2006-01-02 15:04"), a.Delegate))
		}
	}
	for _, d := range cal.Duties {
		who, _, to := d.OnDuty(b.now())
		lines = append(lines, fmt.Sprintf("👷 %s 值班 on duty: %s 至 until %s (%s: %s)", d.Role, who, to.In(loc).Format("2006-01-02 15:04"), d.Every, strings.Join(d.People, ", ")))
	}
	title := fmt.Sprintf("🗓 %s 日历 calendar", month.Format("2006-01"))
	if len(lines) == 0 {
		return []templates.Message{info("info", title, "没有冻结、里程碑、休假或值班 nothing planned")}, nil
	}
	return []templates.Message{info("info", title, strings.Join(lines, "\n"))}, nil
}

// approvalRoles are the roles of user that some approval stage asks for.
func (b *Bot) approvalRoles(user string) []string {
	u, _ := b.dir.User(user)
	var out []string
	for _, name := range b.engine.FlowNames() {
		f, _ := b.engine.Flow(name)
		for _, st := range f.Stages {
			for _, r := range st.Roles {
				if r = state.NormName(r); slices.Contains(u.Roles, r) && !slices.Contains(out, r) {
					out = append(out, r)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// away answers /ops away.
func (b *Bot) away(ctx context.Context, u state.User, r commands.Away) ([]templates.Message, error) {
	now := b.now()
	cal, err := b.store.ReadCalendar(ctx)
	if err != nil {
		return nil, err
	}
	switch r.Op {
	case "list":
		var lines []string
		for _, a := range cal.Away {
			if now.Before(a.Until) {
				lines = append(lines, fmt.Sprintf("%s → %s 至 until %s", a.User, a.Delegate, templates.Stamp(a.Until)))
			}
		}
		if len(lines) == 0 {
			return []templates.Message{info("info", "没有人休假 nobody is away", "")}, nil
		}
		return []templates.Message{info("info", "休假 Away", strings.Join(lines, "\n"))}, nil
	case "end":
		a, ok := cal.AwayOf(u.Name, now)
		if !ok {
			return nil, flows.Userf("not_away", "/ops away until=2026-05-12 delegate=bob", "你没有在休假 · you are not away")
		}
		// It ends now: from here on nothing routes to the delegate, and the
		// sweep finishes the hand-back should this stop half-way.
		a.Until = now
		if err := b.store.WriteCalendar(ctx, state.CalendarChange{PutAway: []state.Away{a}}); err != nil {
			return nil, err
		}
		n, err := b.endAway(ctx, a, u.Name)
		if err != nil {
			return nil, err
		}
		return []templates.Message{info("success", fmt.Sprintf("👋 欢迎回来，审批已交还给你 · welcome back: your approvals are yours again (%d pending)", n), "")}, nil
	}
	loc, _ := flows.LoadTZ(b.zoneName())
	until, err := parseWhen(r.Until, loc)
	if err != nil {
		return nil, flows.Userf("bad_fields", "例 e.g. /ops away until=2026-05-12 delegate=bob", "until=%q 不是日期 · until=%q is not a date", r.Until, r.Until)
	}
	if !until.After(now) {
		return nil, flows.Userf("bad_fields", "例 e.g. /ops away until=2026-05-12 delegate=bob", "until=%s 已经过去 · until=%s is in the past", r.Until, r.Until)
	}
	d, ok := b.dir.User(r.Delegate)
	if !ok {
		var names []string
		for _, x := range b.dir.Users() {
			names = append(names, x.Name)
		}
		return nil, flows.Userf("unknown_user", "/ops role list"+commands.DidYouMean(r.Delegate, names), "没有用户 %s · no user called %s", r.Delegate, r.Delegate)
	}
	if d.Name == u.Name {
		return nil, flows.Userf("bad_fields", "delegate= 写另一个人 name someone else", "不能转交给自己 · you cannot hand your approvals to yourself")
	}
	roles := b.approvalRoles(u.Name)
	if len(roles) == 0 {
		return nil, flows.Userf("nothing_to_delegate", "", "你没有审批角色，无需转交 · you hold no role that approves anything: nothing to hand over")
	}
	var missing []string
	for _, role := range roles {
		if !b.dir.HasRole(d.Name, role) {
			missing = append(missing, role)
		}
	}
	if len(missing) > 0 {
		return nil, flows.Userf("not_role_holder", "可转交 can take them: "+strings.Join(slices.DeleteFunc(b.dir.Members(roles...), func(x string) bool { return x == u.Name }), ", "),
			"%s 没有角色 %s，不能代你审批 · %s does not hold %s, so cannot approve for you", d.Name, strings.Join(missing, "/"), d.Name, strings.Join(missing, ", "))
	}
	if da, away := cal.AwayOf(d.Name, now); away {
		return nil, flows.Userf("delegate_away", "", "%s 也在休假（至 %s）· %s is away too (until %s)", d.Name, templates.Stamp(da.Until), d.Name, templates.Stamp(da.Until))
	}
	a := state.Away{User: u.Name, Delegate: d.Name, Until: until, Since: now, By: u.Name}
	if err := b.store.WriteCalendar(ctx, state.CalendarChange{PutAway: []state.Away{a}}); err != nil {
		return nil, err
	}
	n, err := b.engine.Handover(ctx, a, false)
	if err != nil {
		return nil, err
	}
	return []templates.Message{info("success", fmt.Sprintf("🏖 %s 的审批转交给 %s 至 %s · %s's approvals go to %s until %s", u.Name, d.Name, templates.Stamp(until), u.Name, d.Name, templates.Stamp(until)),
		fmt.Sprintf("已转交 %d 个待审批工单 %d pending approval(s) handed over · /ops away end", n, n))}, nil
}

// endAway hands an absence's approvals back, then ends it (in this
// order: a crash in between hands back again, once per ticket).
func (b *Bot) endAway(ctx context.Context, a state.Away, by string) (int, error) {
	n, err := b.engine.Handover(ctx, a, true)
	if err != nil {
		return n, err
	}
	_, err = b.store.EditCalendar(ctx, func(cal state.Calendar) (state.CalendarChange, error) {
		for _, x := range cal.Away {
			if x.User == a.User && x.Since.Equal(a.Since) {
				return state.CalendarChange{DeleteAway: []string{a.User}, Audit: []state.AuditEntry{{At: b.now(), User: by, Action: "away ended",
					Args: a.User + " (delegate " + a.Delegate + ")", Result: "ok"}}}, nil
			}
		}
		return state.CalendarChange{}, nil
	})
	if errors.Is(err, state.ErrNoChange) {
		err = nil
	}
	if err == nil {
		// Cards drawn from now on no longer name the delegate.
		_, err = b.engine.Calendar(ctx)
	}
	return n, err
}

// duty answers /ops duty.
func (b *Bot) duty(ctx context.Context, u state.User, r commands.Duty) ([]templates.Message, error) {
	now := b.now()
	cal, err := b.store.ReadCalendar(ctx)
	if err != nil {
		return nil, err
	}
	loc, _ := flows.LoadTZ(b.zoneName())
	if r.Op == "show" {
		var lines []string
		for _, d := range cal.Duties {
			if r.Role == "" || d.Role == r.Role {
				who, _, to := d.OnDuty(now)
				lines = append(lines, fmt.Sprintf("%s: %s 值班至 on duty until %s (%s: %s)", d.Role, who, to.In(loc).Format("2006-01-02 15:04"), d.Every, strings.Join(d.People, ", ")))
			}
		}
		if len(lines) == 0 {
			return []templates.Message{info("info", "没有值班轮换 no duty rotations", "/ops duty set infra dave,erin weekly")}, nil
		}
		return []templates.Message{info("info", "值班 On duty", strings.Join(lines, "\n"))}, nil
	}
	if !b.dir.HasRole(u.Name, flows.AdminRole, r.Role) {
		return nil, flows.Userf("not_role_holder", "", "只有 %s 角色或管理员可以设置值班 · only holders of %s or an admin can set its duty rotation", r.Role, r.Role)
	}
	if r.Op == "clear" {
		if _, ok := cal.DutyOf(r.Role); !ok {
			return nil, flows.Userf("not_found", "/ops duty show", "%s 没有值班轮换 · %s has no duty rotation", r.Role, r.Role)
		}
		if err := b.store.WriteCalendar(ctx, state.CalendarChange{DeleteDuties: []string{r.Role}}); err != nil {
			return nil, err
		}
		return []templates.Message{info("success", fmt.Sprintf("已清除 %s 的值班轮换 · %s's duty rotation cleared: approvals go to the whole role", r.Role, r.Role), "")}, nil
	}
	var missing []string
	for _, p := range r.People {
		if !b.dir.HasRole(p, r.Role) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return nil, flows.Userf("not_role_holder", r.Role+": "+strings.Join(b.dir.Members(r.Role), ", "),
			"%s 没有角色 %s · %s do(es) not hold %s", strings.Join(missing, ", "), r.Role, strings.Join(missing, ", "), r.Role)
	}
	// Turns start today (daily) or this Monday (weekly), at midnight.
	l := now.In(loc)
	anchor := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
	if r.Every == "weekly" {
		anchor = anchor.AddDate(0, 0, -((int(l.Weekday()) + 6) % 7))
	}
	d := state.Duty{Role: r.Role, People: r.People, Every: r.Every, Anchor: anchor, By: u.Name, At: now}
	if err := b.store.WriteCalendar(ctx, state.CalendarChange{PutDuties: []state.Duty{d}}); err != nil {
		return nil, err
	}
	who, _, to := d.OnDuty(now)
	return []templates.Message{info("success", fmt.Sprintf("👷 %s 值班轮换 duty rotation (%s): %s", r.Role, r.Every, strings.Join(r.People, " → ")),
		fmt.Sprintf("现在值班 on duty now: %s 至 until %s；审批先通知值班人 approvals go to them first", who, to.In(loc).Format("2006-01-02 15:04")))}, nil
}

// calendarTick queues each freeze's reminder (the lead time before a
// window starts) and end notice, once each, and ends absences whose date
// has come.
func (b *Bot) calendarTick(ctx context.Context) error {
	now := b.now()
	_, err := b.store.EditCalendar(ctx, func(cal state.Calendar) (state.CalendarChange, error) {
		var c state.CalendarChange
		for _, fz := range cal.Freezes {
			if fz.Ended {
				continue
			}
			if !fz.Until.IsZero() && !now.Before(fz.Until) {
				fz.Ended = true
				n, err := b.announcement(present.FreezeEnded, fz, time.Time{}, fz.Until)
				if err != nil {
					return c, err
				}
				c.PutFreezes, c.Notify = append(c.PutFreezes, fz), append(c.Notify, n)
				c.Audit = append(c.Audit, state.AuditEntry{At: now, User: flows.SystemActor, Action: "freeze ended", Args: fz.ID + ": " + fz.Reason, Result: "ok"})
				continue
			}
			start, end, ok := flows.FreezeNext(fz, now)
			if !ok || !start.After(now) || start.Equal(fz.RemindedFor) || now.Before(start.Add(-b.cfg.Calendar.RemindBefore.D())) {
				continue
			}
			fz.RemindedFor = start
			n, err := b.announcement(present.FreezeReminder, fz, start, end)
			if err != nil {
				return c, err
			}
			c.PutFreezes, c.Notify = append(c.PutFreezes, fz), append(c.Notify, n)
		}
		return c, nil
	})
	if err != nil && !errors.Is(err, state.ErrNoChange) {
		return fmt.Errorf("freeze notices: %w", err)
	}
	cal, err := b.engine.Calendar(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range cal.Away {
		if now.Before(a.Until) {
			// Offered again where a crash left it unoffered; once per ticket.
			if _, err := b.engine.Handover(ctx, a, false); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if _, err := b.endAway(ctx, a, flows.SystemActor); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
