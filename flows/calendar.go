package flows

// The calendar as the engine applies it: freezes refuse new tickets and
// executions on what they cover (unless a ticket went through as an
// exception), people away hand their approvals to a delegate, and a
// role's duty rotation decides who hears about an approval first.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"opsbot/state"
)

// ExceptionField is the option of /ops new that asks for a freeze
// exception, with its reason.
const ExceptionField = "exception"

// EnvOf is the environment a ticket of f acts on: its env field, or the
// flow's own env (a go-live is production).
func (f *Flow) EnvOf(fields map[string]string) string {
	if v := strings.TrimSpace(fields["env"]); v != "" {
		return v
	}
	return f.Env
}

// expandLocks names the resources a ticket with these fields locks.
func (f *Flow) expandLocks(fields map[string]string) []string {
	var out []string
	for _, l := range f.Locks {
		out = append(out, Expand(l, fields))
	}
	return out
}

// FreezeCovers reports whether fz covers a ticket of f with these fields
// and locks: its environments, flows and resources ("service:payments"
// matches the field service or the lock of that name); an empty list
// covers every value.
func FreezeCovers(fz state.Freeze, f *Flow, fields map[string]string, locks []string) bool {
	if len(fz.Envs) > 0 && !slices.Contains(fz.Envs, f.EnvOf(fields)) {
		return false
	}
	if len(fz.Flows) > 0 && !slices.Contains(fz.Flows, f.Name) {
		return false
	}
	if len(fz.Resources) == 0 {
		return true
	}
	for _, r := range fz.Resources {
		if slices.Contains(locks, r) {
			return true
		}
		if k, v, ok := strings.Cut(r, ":"); ok && fields[k] != "" && strings.EqualFold(fields[k], v) {
			return true
		}
	}
	return false
}

// FreezeHolds reports whether fz's window holds at now and, when it does,
// when this holding ends (zero: no end).
func FreezeHolds(fz state.Freeze, now time.Time) (end time.Time, ok bool) {
	if fz.Ended || (!fz.From.IsZero() && now.Before(fz.From)) || (!fz.Until.IsZero() && !now.Before(fz.Until)) {
		return time.Time{}, false
	}
	if fz.Weekly == nil {
		return fz.Until, true
	}
	loc, err := loadTZ(fz.TZ)
	if err != nil {
		loc = time.UTC
	}
	w := fz.Weekly
	l := now.In(loc)
	m := int(l.Weekday())*1440 + l.Hour()*60 + l.Minute()
	from, to := int(w.FromDay)*1440+w.FromMin, int(w.ToDay)*1440+w.ToMin
	in := from <= m && m < to
	if from > to {
		in = m >= from || m < to
	}
	if !in {
		return time.Time{}, false
	}
	minute := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), 0, 0, loc)
	end = minute.Add(time.Duration((to-m+7*1440)%(7*1440)) * time.Minute)
	if !fz.Until.IsZero() && end.After(fz.Until) {
		end = fz.Until
	}
	return end, true
}

// FreezeNext is the next window of fz that has not ended by now: its start
// (now or earlier when it holds) and end. ok is false when none is left.
func FreezeNext(fz state.Freeze, now time.Time) (start, end time.Time, ok bool) {
	if fz.Ended || (!fz.Until.IsZero() && !now.Before(fz.Until)) {
		return time.Time{}, time.Time{}, false
	}
	if fz.Weekly == nil {
		return fz.From, fz.Until, true
	}
	if e, holds := FreezeHolds(fz, now); holds {
		return now, e, true
	}
	loc, err := loadTZ(fz.TZ)
	if err != nil {
		loc = time.UTC
	}
	at := now
	if fz.From.After(at) {
		at = fz.From
	}
	l := at.In(loc)
	w := fz.Weekly
	m := int(l.Weekday())*1440 + l.Hour()*60 + l.Minute()
	from := int(w.FromDay)*1440 + w.FromMin
	minute := time.Date(l.Year(), l.Month(), l.Day(), l.Hour(), l.Minute(), 0, 0, loc)
	start = minute.Add(time.Duration((from-m+7*1440)%(7*1440)) * time.Minute)
	if !fz.Until.IsZero() && !start.Before(fz.Until) {
		return time.Time{}, time.Time{}, false
	}
	end, _ = FreezeHolds(fz, start)
	return start, end, true
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
	"周日": time.Sunday, "周一": time.Monday, "周二": time.Tuesday, "周三": time.Wednesday, "周四": time.Thursday, "周五": time.Friday, "周六": time.Saturday}

// ParseWeekly reads a weekly window: "fri 18:00-mon 09:00" (or 周五 18:00-周一 09:00).
func ParseWeekly(s string) (*state.Weekly, error) {
	bad := fmt.Errorf("每周窗口 %q 无法识别 · weekly window %q: want e.g. \"fri 18:00-mon 09:00\"", s, s)
	a, b, ok := strings.Cut(s, "-")
	if !ok {
		return nil, bad
	}
	point := func(x string) (time.Weekday, int, bool) {
		f := strings.Fields(strings.ToLower(x))
		if len(f) != 2 {
			return 0, 0, false
		}
		day, ok := weekdays[f[0]]
		if !ok && len(f[0]) > 3 {
			day, ok = weekdays[f[0][:3]]
		}
		t, err := time.Parse("15:04", f[1])
		return day, t.Hour()*60 + t.Minute(), ok && err == nil
	}
	fd, fm, ok1 := point(a)
	td, tm, ok2 := point(b)
	if !ok1 || !ok2 || (fd == td && fm == tm) {
		return nil, bad
	}
	return &state.Weekly{FromDay: fd, FromMin: fm, ToDay: td, ToMin: tm}, nil
}

// WeeklyText writes a weekly window back as people type it.
func WeeklyText(w *state.Weekly) string {
	day := func(d time.Weekday) string { return strings.ToLower(d.String()[:3]) }
	return fmt.Sprintf("%s %02d:%02d-%s %02d:%02d", day(w.FromDay), w.FromMin/60, w.FromMin%60, day(w.ToDay), w.ToMin/60, w.ToMin%60)
}

// LoadTZ is the time zone a freeze names ("" is China Standard Time, the
// teams' own).
func LoadTZ(name string) (*time.Location, error) { return loadTZ(name) }

// Calendar reads the calendar as it is now and keeps it for what only
// words or routes notices (cards, who hears first).
func (e *Engine) Calendar(ctx context.Context) (state.Calendar, error) {
	c, err := e.store.ReadCalendar(ctx)
	if err == nil {
		e.cal.Store(&c)
	}
	return c, err
}

// cached is the calendar as last read (empty before the first read).
func (e *Engine) cached() state.Calendar {
	if c := e.cal.Load(); c != nil {
		return *c
	}
	return state.Calendar{}
}

// Delegate is who holds user's approvals now, while user is away.
func (e *Engine) Delegate(user string) (string, bool) {
	a, ok := e.cached().AwayOf(user, e.now())
	return a.Delegate, ok
}

// frozen finds a freeze that holds now over a ticket of f.
func frozen(cal state.Calendar, f *Flow, fields map[string]string, locks []string, now time.Time) (state.Freeze, time.Time, bool) {
	for _, fz := range cal.Freezes {
		if !FreezeCovers(fz, f, fields, locks) {
			continue
		}
		if end, ok := FreezeHolds(fz, now); ok {
			return fz, end, true
		}
	}
	return state.Freeze{}, time.Time{}, false
}

// FreezeText says what a freeze covers, for people.
func FreezeText(fz state.Freeze) string {
	var parts []string
	if len(fz.Envs) > 0 {
		parts = append(parts, "env "+strings.Join(fz.Envs, ","))
	}
	if len(fz.Flows) > 0 {
		parts = append(parts, "flows "+strings.Join(fz.Flows, ","))
	}
	if len(fz.Resources) > 0 {
		parts = append(parts, strings.Join(fz.Resources, ","))
	}
	if len(parts) == 0 {
		return "everything"
	}
	return strings.Join(parts, " · ")
}

// EndText is when a freeze's holding ends, for people.
func EndText(end time.Time, tz string) string {
	if end.IsZero() {
		return "解除为止 until lifted"
	}
	loc, err := loadTZ(tz)
	if err != nil {
		loc = time.UTC
	}
	return end.In(loc).Format("2006-01-02 15:04 MST")
}

// frozenError refuses a ticket's creation or execution under fz; zh and
// en say what is refused.
func frozenError(fz state.Freeze, end time.Time, zh, en, id string) error {
	hint := "冻结期间不允许 not while frozen; /ops calendar"
	if len(fz.Except) > 0 {
		if id == "" {
			hint = fmt.Sprintf("例外需 %s 额外审批 an exception needs one more approval from %s: add exception=\"why\" to /ops new",
				strings.Join(fz.Except, "/"), strings.Join(fz.Except, " or "))
		} else {
			hint = fmt.Sprintf("例外需 %s 额外审批 an exception needs one more approval from %s: /ops exception %s \"why\"",
				strings.Join(fz.Except, "/"), strings.Join(fz.Except, " or "), id)
		}
	}
	return Userf("frozen", hint, "❄️ 冻结中（%s，%s，由 %s 设置），%s 被拒绝，至 %s · frozen (%s: %s, set by %s): %s is refused until %s",
		FreezeText(fz), fz.Reason, fz.By, zh, EndText(end, fz.TZ), FreezeText(fz), fz.Reason, fz.By, en, EndText(end, fz.TZ))
}

// noExceptions refuses an exception to a freeze that allows none.
func noExceptions(fz state.Freeze, end time.Time) error {
	return Userf("frozen", "/ops calendar", "❄️ 冻结 %s 不允许例外（%s，至 %s）· freeze %s allows no exceptions (%s, until %s)",
		fz.ID, fz.Reason, EndText(end, fz.TZ), fz.ID, fz.Reason, EndText(end, fz.TZ))
}

// Frozen is the freeze that stops ticket t of f now: one that covers it
// and holds, unless the ticket went through it as an approved exception.
func Frozen(cal state.Calendar, f *Flow, t state.Ticket, now time.Time) (state.Freeze, time.Time, bool) {
	fz, end, ok := frozen(cal, f, t.Fields, t.Locks, now)
	if !ok || exceptionApproved(t, fz) {
		return state.Freeze{}, time.Time{}, false
	}
	return fz, end, true
}

// exceptionApproved says the ticket went through as an exception to fz.
func exceptionApproved(t state.Ticket, fz state.Freeze) bool {
	ex := t.Exception
	return ex != nil && ex.ApprovedBy != "" && len(fz.Except) > 0
}

// checkFreeze refuses a person's step that starts an execution (an
// approval into an action, a retry, a batch release) under a freeze the
// ticket has no approved exception to. Steps the bot takes by itself go
// on: the work was started before.
func (s *step) checkFreeze(zh, en string) error {
	if s.cal == nil || s.actor == SystemActor {
		return nil
	}
	if s.event == EvSubmit && s.t.Exception != nil {
		// Asking for an exception with the ticket: Create checked the
		// freeze, and a first step (a dry run, a config check) prepares
		// what the approvals, the exception's among them, decide.
		return nil
	}
	fz, end, ok := frozen(*s.cal, s.f, s.t.Fields, s.t.Locks, s.now)
	if !ok || exceptionApproved(s.t, fz) {
		return nil
	}
	return frozenError(fz, end, zh, en, s.t.ID)
}

// exceptionPending: the ticket asked for a freeze exception nobody
// approved yet; otherwise another row is meant.
func exceptionPending(g *Guard) error {
	if ex := g.Ticket.Exception; ex != nil && ex.ApprovedBy == "" {
		return nil
	}
	return errOtherRow
}

// holdsExceptionRole: the actor holds a role the exception needs.
func holdsExceptionRole(g *Guard) error {
	if g.Engine.dir.HasRole(g.Action.Actor, g.Ticket.Exception.Roles...) {
		return nil
	}
	return errOtherRow
}

// exceptionAsked: where nothing else is approved (a batch release, a
// failed step), only a pending freeze exception is.
func exceptionAsked(g *Guard) error {
	if ex := g.Ticket.Exception; ex != nil && ex.ApprovedBy == "" {
		return nil
	}
	title := g.Flow.StageTitle(g.Ticket.Stage)
	return Userf("not_allowed", fmt.Sprintf("/ops show %s", g.Ticket.ID), "%s 处于 %s，没有待审批的内容 · %s is at %s: nothing waits for approval",
		g.Ticket.ID, title, g.Ticket.ID, title)
}

// mustHoldExceptionRole refuses who does not hold the exception's role.
func mustHoldExceptionRole(g *Guard) error {
	ex := g.Ticket.Exception
	if g.Engine.dir.HasRole(g.Action.Actor, ex.Roles...) {
		return nil
	}
	return Userf("not_role_holder", "可审批 can approve: "+strings.Join(g.Engine.dir.Members(ex.Roles...), ", "),
		"%s 的冻结例外需要 %s 审批 · the freeze exception of %s needs a holder of %s", g.Ticket.ID, strings.Join(ex.Roles, "/"),
		g.Ticket.ID, strings.Join(ex.Roles, ", "))
}

// mayAskException: the requester (or an admin) asks for an exception,
// once.
func mayAskException(g *Guard) error {
	t := g.Ticket
	if t.Exception != nil {
		return Userf("already_asked", fmt.Sprintf("/ops show %s", t.ID), "%s 已申请冻结例外 · %s already asked for a freeze exception", t.ID, t.ID)
	}
	if g.Action.Actor == t.Requester || g.Engine.dir.HasRole(g.Action.Actor, AdminRole) {
		return nil
	}
	return Userf("not_requester", fmt.Sprintf("ask %s", t.Requester),
		"只有申请人 %s 可以申请冻结例外 · only the requester %s can ask for a freeze exception on %s", t.Requester, t.Requester, t.ID)
}

// route is who hears that roles must approve: every holder (not the
// requester, not who approved already), a person away replaced by their
// delegate; with first, a role with a duty rotation only through the
// person on duty. onDuty names them ("infra=dave").
func (s *step) route(roles []string, first bool) (users, onDuty []string) {
	cal := s.e.cached()
	if s.cal != nil {
		cal = *s.cal
	}
	eligible := func(u string) bool { return u != s.t.Requester && !approvedBy(s.t, u) }
	add := func(u string, role ...string) {
		if a, ok := cal.AwayOf(u, s.now); ok && eligible(a.Delegate) && s.e.dir.HasRole(a.Delegate, role...) {
			u = a.Delegate
		}
		if eligible(u) && !slices.Contains(users, u) {
			users = append(users, u)
		}
	}
	for _, r := range roles {
		r = state.NormName(r)
		if d, ok := cal.DutyOf(r); ok && first {
			if who, _, _ := d.OnDuty(s.now); who != "" && eligible(who) && s.e.dir.HasRole(who, r) {
				onDuty = append(onDuty, r+"="+who)
				add(who, r)
				continue
			}
		}
		for _, u := range s.e.dir.Members(r) {
			add(u, r)
		}
	}
	slices.Sort(users)
	return users, onDuty
}

// markHandovers records on a stage just entered the hand-overs its
// notice already made (a delegate told instead of someone away), so the
// sweep does not offer them again.
func (s *step) markHandovers(roles, told []string) {
	cal := s.e.cached()
	if s.cal != nil {
		cal = *s.cal
	}
	for _, a := range cal.Away {
		if s.now.Before(a.Until) && slices.Contains(told, a.Delegate) && a.User != s.t.Requester && s.e.dir.HasRole(a.User, roles...) {
			s.t.Offered = append(s.t.Offered, a.User+">"+a.Delegate)
		}
	}
}

// delegatedFor is whom the actor approves for: a person away who handed
// their approvals to the actor and could approve this stage.
func (s *step) delegatedFor() string {
	cal := s.e.cached()
	if s.cal != nil {
		cal = *s.cal
	}
	for _, a := range cal.Away {
		if a.Delegate == s.actor && s.now.Before(a.Until) && a.User != s.t.Requester && !approvedBy(s.t, a.User) &&
			s.e.dir.HasRole(a.User, s.t.WaitingRoles...) {
			return a.User
		}
	}
	return ""
}

// exceptionGuard marks the row of an approval that lets a ticket through
// a freeze (its apply records the exception, not a stage approval).
const exceptionGuard = "freeze exception asked; a holder of the freeze's exception role; not the requester"

// askException records the requester's ask for a way through the freeze
// that holds over the ticket now.
func (e *Engine) askException(s *step) error {
	if s.cal == nil {
		return fmt.Errorf("exception asked without the calendar")
	}
	fz, end, ok := frozen(*s.cal, s.f, s.t.Fields, s.t.Locks, s.now)
	if !ok {
		return Userf("not_frozen", "/ops calendar", "现在没有冻结覆盖 %s，不需要例外 · no freeze covers %s now: it needs no exception", s.t.ID, s.t.ID)
	}
	if len(fz.Except) == 0 {
		return noExceptions(fz, end)
	}
	if strings.TrimSpace(s.ch.Event.Comment) == "" {
		return Userf("reason_required", fmt.Sprintf("/ops exception %s 原因 reason", s.t.ID), "冻结例外需要原因 · a freeze exception needs a reason")
	}
	s.t.Exception = &state.Exception{Freeze: fz.ID, Roles: normRoles(fz.Except), Reason: s.ch.Event.Comment, By: s.actor, At: s.now}
	s.exceptionAsked()
	return nil
}

// exceptionAsked tells the exception's role holders and audits the ask.
func (s *step) exceptionAsked() {
	ex := s.t.Exception
	if s.ch.Event.Data == nil {
		s.ch.Event.Data = map[string]string{}
	}
	s.ch.Event.Data["exception"] = ex.Freeze
	s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: s.actor, Action: "freeze exception asked", Ticket: s.t.ID,
		Args: ex.Freeze + ": " + ex.Reason, Result: "ok", Version: s.version()})
	s.notify(s.approvers(ex.Roles), NoticeExceptionNeeded, ex.Roles)
}

// Handover offers the approval stages a.User could approve to a.Delegate
// (back: to a.User again, the absence over). Each such ticket records the
// hand-over once (a retry after a crash offers nothing twice), redraws
// its cards and tells whoever holds the approvals now. It returns how
// many tickets were handed over.
func (e *Engine) Handover(ctx context.Context, a state.Away, back bool) (int, error) {
	cal, err := e.Calendar(ctx)
	if err != nil {
		return 0, err
	}
	mark, to := a.User+">"+a.Delegate, a.Delegate
	if back {
		mark, to = a.User+"<"+a.Delegate, a.User
	}
	pending := func(t state.Ticket) bool {
		f, ok := e.flows[t.Flow]
		if !ok {
			return false
		}
		st, _ := f.Stage(t.Stage)
		return st != nil && st.Kind == KindApproval && t.Requester != a.User && t.Requester != to && !approvedBy(t, a.User) &&
			!approvedBy(t, to) && e.dir.HasRole(a.User, t.WaitingRoles...) && !slices.Contains(t.Offered, mark)
	}
	n := 0
	for offset := 0; ; offset += 200 {
		page, err := e.store.List(ctx, state.Index{Kind: "open"}, pending, offset, 200)
		if err != nil {
			return n, err
		}
		for _, t := range page.Tickets {
			handed := false
			_, err := e.commit(ctx, t.ID, func(cur state.Ticket) (state.Change, error) {
				if handed = pending(cur); !handed {
					return state.Change{}, state.ErrNoChange
				}
				s := e.newStep(e.flows[cur.Flow], cur, SystemActor, EvDelegate)
				s.cal = &cal
				s.t.Offered = append(s.t.Offered, mark)
				s.ch.Event.Data = map[string]string{"away": a.User, "delegate": a.Delegate, "until": a.Until.Format(time.RFC3339)}
				if back {
					s.ch.Event.Data["back"] = "true"
				}
				s.ch.Audit = append(s.ch.Audit, state.AuditEntry{At: s.now, User: SystemActor, Action: "handover", Ticket: cur.ID,
					Args: mark, Result: "ok", Version: s.version()})
				s.notify([]string{to}, NoticeDelegated, s.t.WaitingRoles)
				return s.finish()
			})
			if err != nil {
				return n, fmt.Errorf("hand %s over: %w", t.ID, err)
			}
			if handed {
				n++
			}
		}
		if !page.More {
			return n, nil
		}
	}
}
