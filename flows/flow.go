// Package flows declares ticket flows as data and drives tickets through
// them: a flow is a list of fields and ordered stages (approvals, actions,
// waits), and the Engine applies every event through the flow's transitions
// table with its guards: role holders only, no self-approval, N approvals
// from distinct people, resource locks and time windows.
package flows

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Terminal stage names shared by every flow.
const (
	StageSubmitted   = "submitted"
	StageDone        = "done"
	StageRejected    = "rejected"
	StageCancelled   = "cancelled"
	StageExpired     = "expired"
	StageFailed      = "failed"
	StageRollingBack = "rolling_back"
	StageRolledBack  = "rolled_back"
)

// What a reject or cancel does after changes (Flow.UndoOnStop).
const (
	UndoRun   = "run"
	UndoOffer = "offer"
)

var builtinTitles = map[string]string{
	StageSubmitted:   "已提交 submitted",
	StageDone:        "已完成 done",
	StageRejected:    "已驳回 rejected",
	StageCancelled:   "已取消 cancelled",
	StageExpired:     "已过期 expired",
	StageFailed:      "失败 failed",
	StageRollingBack: "回滚中 rolling back",
	StageRolledBack:  "已回滚 rolled back",
}

// StageLabel gives the bilingual name of a built-in stage and returns
// other names as they are.
func StageLabel(stage string) string {
	if l, ok := builtinTitles[stage]; ok {
		return l
	}
	return stage
}

// StageTitle is a stage as people read it: its declared title, or the
// bilingual name of a built-in stage.
func (f *Flow) StageTitle(stage string) string {
	if st, _ := f.Stage(stage); st != nil {
		return st.Title
	}
	return StageLabel(stage)
}

var reserved = []string{StageSubmitted, StageDone, StageRejected, StageCancelled, StageExpired,
	StageFailed, StageRollingBack, StageRolledBack}

// Ended reports whether a ticket in stage has come to a result people are
// told about (done, rejected, cancelled, expired, failed, rolled back);
// a failed ticket may still be retried.
func Ended(stage string) bool {
	switch stage {
	case StageDone, StageRejected, StageCancelled, StageExpired, StageFailed, StageRolledBack:
		return true
	}
	return false
}

// Duration is a time.Duration written as "90s", "4h" or "3d" in YAML.
type Duration time.Duration

// UnmarshalText parses Go durations plus a "d" (day) suffix.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil {
			return fmt.Errorf("bad duration %q: want e.g. 90s, 30m, 4h or 3d", s)
		}
		*d = Duration(time.Duration(n) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: want e.g. 90s, 30m, 4h or 3d", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration back.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Flow is a ticket flow declared as data.
type Flow struct {
	Name        string `yaml:"name"`
	Title       string `yaml:"title"`
	Description string `yaml:"description"`
	// TitleTemplate names the ticket from its fields, e.g. "{service} {version}".
	TitleTemplate string  `yaml:"title_template"`
	Fields        []Field `yaml:"fields"`
	Stages        []Stage `yaml:"stages"`
	// Locks are resources held while a ticket is in flight, e.g. "service:{service}".
	Locks []string `yaml:"locks"`
	// Operators are roles that may retry failed actions besides the requester.
	Operators []string  `yaml:"operators"`
	Rollback  *Rollback `yaml:"rollback"`
	// OnCancel runs after a cancel (e.g. delete a temporary branch, open
	// sync merge requests); it is safe to repeat.
	OnCancel *Rollback `yaml:"on_cancel"`
	// RequesterRoles limit who may open tickets; empty means anyone.
	RequesterRoles []string `yaml:"requester_roles"`
	// Validator names a check in Go that sees all fields together (rules
	// across fields, look-ups, inventory); it may fill computed fields.
	Validator string `yaml:"validator"`
	// Refresh names computed fields the validator looks up again while a
	// ticket waits for approval (what the approver must see as it is now,
	// e.g. which live versions can reach a new one): on /ops show, before
	// an approval, and on the timer. A change is an event of its own, so a
	// card drawn before it is stale and its buttons refused.
	Refresh []string `yaml:"refresh"`
	// Editable lets the requester change fields while the ticket waits
	// for approval (/ops edit); the stage's approvals start over.
	Editable bool `yaml:"editable"`
	// UndoOnStop says what a reject or cancel does once the ticket's
	// actions changed something (a flow with a rollback): "run" (the
	// default) runs the rollback with the undo steps the actions
	// registered, newest first, ending rolled_back or failed; "offer" ends
	// the ticket rejected or cancelled and offers the rollback with one
	// press.
	UndoOnStop string `yaml:"undo_on_stop"`
	// Destructive names the actions that cannot be taken back in this flow
	// (rollback, release, cancel): each asks for a confirmation first.
	Destructive []Event `yaml:"destructive"`
	// Env is the environment the flow's tickets act on when they have no
	// env field (a go-live is production): what freezes match.
	Env string `yaml:"env"`

	table []Transition
}

// Field types.
const (
	TypeString   = "string"
	TypeText     = "text"
	TypeEnum     = "enum"
	TypeInt      = "int"
	TypeBool     = "bool"
	TypeIP       = "ip"
	TypeIPList   = "iplist"
	TypeDateTime = "datetime"
	TypeURL      = "url"
	TypeCommit   = "commit"
)

var fieldTypes = []string{TypeString, TypeText, TypeEnum, TypeInt, TypeBool, TypeIP, TypeIPList,
	TypeDateTime, TypeURL, TypeCommit}

// Field is one input of a flow.
type Field struct {
	Name     string   `yaml:"name"`
	Label    string   `yaml:"label"`
	Type     string   `yaml:"type"`
	Required bool     `yaml:"required"`
	Enum     []string `yaml:"enum"`
	Pattern  string   `yaml:"pattern"`
	Default  string   `yaml:"default"`
	Example  string   `yaml:"example"`
	Help     string   `yaml:"help"`
	// Computed fields are filled by the flow's validator, never typed.
	Computed bool `yaml:"computed"`
	re       *regexp.Regexp
}

// Stage is one step of a flow.
type Stage struct {
	Name  string    `yaml:"name"`
	Title string    `yaml:"title"`
	Kind  StageKind `yaml:"kind"`
	// Approval stages.
	Roles     []string `yaml:"roles"`
	Approvals int      `yaml:"approvals"`
	// ApprovalsIf raises the approvals needed when a field matches (a
	// protected environment needs two distinct approvers).
	ApprovalsIf   *CondApprovals `yaml:"approvals_if"`
	RemindEvery   Duration       `yaml:"remind_every"`
	EscalateAfter int            `yaml:"escalate_after"` // reminders before escalation
	EscalateTo    string         `yaml:"escalate_to"`
	ExpireAfter   Duration       `yaml:"expire_after"`
	// TokensMayApprove lets an API token's service user approve or
	// reject this stage (when it holds one of the roles); by default only
	// people decide.
	TokensMayApprove bool `yaml:"tokens_may_approve"`
	// Action and wait stages.
	Executor     string            `yaml:"executor"`
	Params       map[string]string `yaml:"params"`
	Timeout      Duration          `yaml:"timeout"`
	MaxAttempts  int               `yaml:"max_attempts"`
	Backoff      Duration          `yaml:"backoff"`
	SafeToRepeat bool              `yaml:"safe_to_repeat"`
	Poll         Duration          `yaml:"poll"`
	// RedoFrom is the stage an action goes back to when its executor finds
	// the approved plan out of date (ExecResult.Redo): e.g. a wipe whose
	// targets changed since the dry run goes back to the dry run, and from
	// there to approval again.
	RedoFrom string `yaml:"redo_from"`
	// Window refuses to enter the stage outside a time window.
	Window *Window `yaml:"window"`
	// SkipIf passes over the stage when a field matches.
	SkipIf *Cond `yaml:"skip_if"`
	// Confirm makes approving this stage ask for a confirmation (a
	// protected stage: the approval starts what cannot be taken back);
	// ConfirmIf does so when a field matches (env = prod).
	Confirm   bool  `yaml:"confirm"`
	ConfirmIf *Cond `yaml:"confirm_if"`
}

// Window is a time window: between two datetime fields of the ticket, or
// a daily "09:00-18:00" in a time zone.
type Window struct {
	FromField string   `yaml:"from_field"`
	ToField   string   `yaml:"to_field"`
	Daily     string   `yaml:"daily"`
	TZ        string   `yaml:"tz"`
	Grace     Duration `yaml:"grace"`
}

// Cond matches a field: equal to a value, or empty.
type Cond struct {
	Field  string `yaml:"field"`
	Equals string `yaml:"equals"`
	Empty  bool   `yaml:"empty"`
}

// CondApprovals is a number of approvals that applies when Cond matches.
type CondApprovals struct {
	Cond      `yaml:",inline"`
	Approvals int `yaml:"approvals"`
}

// Need is how many distinct approvals the stage needs for these fields.
func (st *Stage) Need(fields map[string]string) int {
	if st.ApprovalsIf != nil && st.ApprovalsIf.match(fields) && st.ApprovalsIf.Approvals > st.Approvals {
		return st.ApprovalsIf.Approvals
	}
	return st.Approvals
}

// Rollback is how a done or failed ticket is rolled back.
type Rollback struct {
	Executor string            `yaml:"executor"`
	Params   map[string]string `yaml:"params"`
	Roles    []string          `yaml:"roles"`
	Timeout  Duration          `yaml:"timeout"`
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,39}$`)

// Validate checks a flow declaration and prepares it for use. executors
// lists the executor names that exist.
func (f *Flow) Validate(executors []string) error {
	if !namePattern.MatchString(f.Name) {
		return fmt.Errorf("flow name %q: use lower-case letters, digits, '-' or '_' (e.g. golive)", f.Name)
	}
	for _, r := range f.Refresh {
		if fd := f.Field(r); fd == nil || !fd.Computed || f.Validator == "" {
			return fmt.Errorf("flow %s: refresh: %s must be a computed field filled by the flow's validator", f.Name, r)
		}
	}
	if f.Title == "" {
		f.Title = f.Name
	}
	seen := map[string]bool{}
	for i := range f.Fields {
		fd := &f.Fields[i]
		if !namePattern.MatchString(fd.Name) {
			return fmt.Errorf("flow %s: field name %q: use lower-case letters, digits, '-' or '_'", f.Name, fd.Name)
		}
		if seen[fd.Name] {
			return fmt.Errorf("flow %s: field %s declared twice", f.Name, fd.Name)
		}
		seen[fd.Name] = true
		if fd.Type == "" {
			fd.Type = TypeString
			if len(fd.Enum) > 0 {
				fd.Type = TypeEnum
			}
		}
		if !slices.Contains(fieldTypes, fd.Type) {
			return fmt.Errorf("flow %s: field %s: unknown type %q (one of %s)", f.Name, fd.Name, fd.Type, strings.Join(fieldTypes, ", "))
		}
		if fd.Type == TypeEnum && len(fd.Enum) == 0 {
			return fmt.Errorf("flow %s: field %s: enum needs a list of values", f.Name, fd.Name)
		}
		if fd.Pattern != "" {
			re, err := regexp.Compile("^(?:" + fd.Pattern + ")$")
			if err != nil {
				return fmt.Errorf("flow %s: field %s: bad pattern: %w", f.Name, fd.Name, err)
			}
			fd.re = re
		}
		if fd.Label == "" {
			fd.Label = fd.Name
		}
		if fd.Computed && (fd.Required || fd.Default != "") {
			return fmt.Errorf("flow %s: field %s: a computed field is filled by the validator; it cannot be required or have a default", f.Name, fd.Name)
		}
	}
	if len(f.Stages) == 0 {
		return fmt.Errorf("flow %s: needs at least one stage", f.Name)
	}
	stages := map[string]bool{}
	for i := range f.Stages {
		st := &f.Stages[i]
		if !namePattern.MatchString(st.Name) || slices.Contains(reserved, st.Name) {
			return fmt.Errorf("flow %s: stage name %q: use lower-case letters, digits, '-' or '_', and none of %s", f.Name, st.Name, strings.Join(reserved, ", "))
		}
		if stages[st.Name] {
			return fmt.Errorf("flow %s: stage %s declared twice", f.Name, st.Name)
		}
		stages[st.Name] = true
		if st.Title == "" {
			st.Title = st.Name
		}
		where := fmt.Sprintf("flow %s: stage %s", f.Name, st.Name)
		switch st.Kind {
		case KindApproval:
			if len(st.Roles) == 0 {
				return fmt.Errorf("%s: an approval stage needs roles", where)
			}
			if st.Approvals <= 0 {
				st.Approvals = 1
			}
			if a := st.ApprovalsIf; a != nil && (a.Field == "" || a.Approvals < 1) {
				return fmt.Errorf("%s: approvals_if needs a field and a number of approvals", where)
			}
			if st.EscalateTo != "" && st.RemindEvery <= 0 {
				return fmt.Errorf("%s: escalate_to needs remind_every", where)
			}
			if st.EscalateTo != "" && st.EscalateAfter <= 0 {
				st.EscalateAfter = 1
			}
		case KindAction, KindWait:
			if !slices.Contains(executors, st.Executor) {
				return fmt.Errorf("%s: unknown executor %q (have %s)", where, st.Executor, strings.Join(executors, ", "))
			}
			if st.Timeout <= 0 {
				st.Timeout = Duration(10 * time.Minute)
			}
			if st.MaxAttempts <= 0 {
				st.MaxAttempts = 1
			}
			if st.Backoff <= 0 {
				st.Backoff = Duration(5 * time.Second)
			}
			if st.Kind == KindWait && st.Poll <= 0 {
				st.Poll = Duration(30 * time.Second)
			}
		case KindRelease:
			if !slices.Contains(executors, st.Executor) {
				return fmt.Errorf("%s: unknown executor %q (have %s)", where, st.Executor, strings.Join(executors, ", "))
			}
			if st.Timeout <= 0 {
				st.Timeout = Duration(30 * time.Minute)
			}
		default:
			return fmt.Errorf("%s: kind %q: want approval, action, wait or release", where, st.Kind)
		}
		if st.Window != nil {
			w := st.Window
			if w.Daily == "" && (w.FromField == "" || w.ToField == "") {
				return fmt.Errorf("%s: window needs daily: \"09:00-18:00\" or from_field and to_field", where)
			}
			for _, fn := range []string{w.FromField, w.ToField} {
				if fn != "" && !seen[fn] {
					return fmt.Errorf("%s: window field %s is not a field of the flow", where, fn)
				}
			}
			if w.Daily != "" {
				if _, _, err := parseDaily(w.Daily); err != nil {
					return fmt.Errorf("%s: %w", where, err)
				}
			}
			if _, err := loadTZ(w.TZ); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		}
		if (st.Confirm || st.ConfirmIf != nil) && st.Kind != KindApproval {
			return fmt.Errorf("%s: confirm protects an approval; put destructive: [release] on the flow for a release stage", where)
		}
		if st.ConfirmIf != nil && !seen[st.ConfirmIf.Field] {
			return fmt.Errorf("%s: confirm_if field %s is not a field of the flow", where, st.ConfirmIf.Field)
		}
		if st.SkipIf != nil && !seen[st.SkipIf.Field] {
			return fmt.Errorf("%s: skip_if field %s is not a field of the flow", where, st.SkipIf.Field)
		}
		if st.RedoFrom != "" && (st.Kind != KindAction || !stages[st.RedoFrom] || st.RedoFrom == st.Name) {
			return fmt.Errorf("%s: redo_from %q must name an earlier stage of an action stage", where, st.RedoFrom)
		}
	}
	if f.OnCancel != nil && !slices.Contains(executors, f.OnCancel.Executor) {
		return fmt.Errorf("flow %s: on_cancel: unknown executor %q", f.Name, f.OnCancel.Executor)
	}
	for _, ev := range f.Destructive {
		if !slices.Contains(PersonEvents, ev) || ev == EvApprove {
			return fmt.Errorf("flow %s: destructive: %q is not an action people take (one of reject, cancel, retry, rollback, release; protect an approval with confirm: true on its stage)", f.Name, ev)
		}
	}
	switch f.UndoOnStop {
	case "":
		f.UndoOnStop = UndoRun
	case UndoRun, UndoOffer:
	default:
		return fmt.Errorf("flow %s: undo_on_stop %q: want %s or %s", f.Name, f.UndoOnStop, UndoRun, UndoOffer)
	}
	if f.Rollback != nil {
		if !slices.Contains(executors, f.Rollback.Executor) {
			return fmt.Errorf("flow %s: rollback: unknown executor %q", f.Name, f.Rollback.Executor)
		}
		if f.Rollback.Timeout <= 0 {
			f.Rollback.Timeout = Duration(10 * time.Minute)
		}
	}
	for _, l := range append(slices.Clone(f.Locks), f.TitleTemplate) {
		for _, ref := range placeholders(l) {
			if !seen[ref] {
				return fmt.Errorf("flow %s: %q refers to {%s}, which is not a field", f.Name, l, ref)
			}
		}
	}
	f.table = f.Table()
	return nil
}

var placeholderRe = regexp.MustCompile(`\{([a-z][a-z0-9_-]*)\}`)

func placeholders(s string) []string {
	var out []string
	for _, m := range placeholderRe.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// Expand replaces {field} placeholders with the ticket's field values.
func Expand(s string, fields map[string]string) string {
	return placeholderRe.ReplaceAllStringFunc(s, func(m string) string { return fields[m[1:len(m)-1]] })
}

// UsesOnly reports whether every executor the flow names is in executors.
func (f *Flow) UsesOnly(executors []string) bool {
	for _, st := range f.Stages {
		if st.Executor != "" && !slices.Contains(executors, st.Executor) {
			return false
		}
	}
	for _, r := range []*Rollback{f.Rollback, f.OnCancel} {
		if r != nil && !slices.Contains(executors, r.Executor) {
			return false
		}
	}
	return true
}

// Stage returns the stage called name.
func (f *Flow) Stage(name string) (*Stage, int) {
	for i := range f.Stages {
		if f.Stages[i].Name == name {
			return &f.Stages[i], i
		}
	}
	return nil, -1
}

// Field returns the field called name.
func (f *Flow) Field(name string) *Field {
	for i := range f.Fields {
		if f.Fields[i].Name == name {
			return &f.Fields[i]
		}
	}
	return nil
}

// FieldNames lists the field names, required first when split is true.
func (f *Flow) FieldNames() (required, optional []string) {
	for _, fd := range f.Fields {
		switch {
		case fd.Computed:
			// filled by opsbot, never typed
		case fd.Required:
			required = append(required, fd.Name)
		default:
			optional = append(optional, fd.Name)
		}
	}
	return required, optional
}

// Example is a complete "/ops new" line for the flow.
func (f *Flow) Example() string {
	parts := []string{"/ops new " + f.Name}
	for _, fd := range f.Fields {
		if !fd.Required {
			continue
		}
		v := fd.Example
		if v == "" && len(fd.Enum) > 0 {
			v = fd.Enum[0]
		}
		if v == "" {
			v = "..."
		}
		if strings.ContainsAny(v, " \t") {
			v = `"` + v + `"`
		}
		parts = append(parts, fd.Name+"="+v)
	}
	return strings.Join(parts, " ")
}

// CheckValue validates one field value and returns it normalized.
func (fd *Field) CheckValue(v string) (string, error) {
	v = strings.TrimSpace(v)
	ex := fd.Example
	bad := func(format string, a ...any) (string, error) {
		msg := fmt.Sprintf(format, a...)
		if ex != "" {
			msg += fmt.Sprintf(" (例 e.g. %s=%s)", fd.Name, ex)
		}
		return "", fmt.Errorf("%s", msg)
	}
	switch fd.Type {
	case TypeEnum:
		for _, e := range fd.Enum {
			if strings.EqualFold(e, v) {
				return e, nil
			}
		}
		return bad("%s=%q 不是可选值 is not allowed: choose one of %s", fd.Name, v, strings.Join(fd.Enum, ", "))
	case TypeInt:
		if _, err := strconv.ParseInt(v, 10, 64); err != nil {
			return bad("%s=%q 不是整数 is not a whole number", fd.Name, v)
		}
	case TypeBool:
		switch strings.ToLower(v) {
		case "true", "yes", "y", "1", "是":
			v = "true"
		case "false", "no", "n", "0", "否", "":
			v = "false"
		default:
			return bad("%s=%q: 请填 true 或 false · use true or false", fd.Name, v)
		}
	case TypeIP:
		if net.ParseIP(v) == nil {
			return bad("%s=%q 不是有效的 IP 地址 is not a valid IP address", fd.Name, v)
		}
	case TypeIPList:
		list, err := ParseIPList(v)
		if err != nil {
			return bad("%s: %v", fd.Name, err)
		}
		v = strings.Join(list, ",")
	case TypeDateTime:
		t, err := ParseDateTime(v)
		if err != nil {
			return bad("%s=%q 不是日期时间 is not a date and time: use 2026-05-09T20:00+08:00 or \"2026-05-09 20:00\"", fd.Name, v)
		}
		v = t.Format(time.RFC3339)
	case TypeURL:
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("%s=%q 不是 http(s) 地址 is not an http(s) URL", fd.Name, v)
		}
	case TypeCommit:
		if !regexp.MustCompile(`^[0-9a-f]{7,40}$`).MatchString(v) {
			return bad("%s=%q 不是提交号 is not a commit sha (7 to 40 hex digits)", fd.Name, v)
		}
	}
	if fd.re != nil && !fd.re.MatchString(v) {
		return bad("%s=%q 格式不对 does not match the pattern %s", fd.Name, v, fd.Pattern)
	}
	return v, nil
}

// ParseIPList splits a comma-separated IP list, tolerating spaces and a
// trailing comma, and names the first bad entry.
func ParseIPList(s string) ([]string, error) {
	var out []string
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			if i == len(parts)-1 && i > 0 {
				continue // trailing comma
			}
			return nil, fmt.Errorf("第 %d 项为空 · entry %d is empty: write IPs separated by commas, e.g. 10.0.0.1,10.0.0.2", i+1, i+1)
		}
		if net.ParseIP(p) == nil {
			return nil, fmt.Errorf("第 %d 项 %q 不是有效的 IP 地址 · entry %d %q is not a valid IP address", i+1, p, i+1, p)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseDateTime accepts RFC 3339 and a few forms people type; times
// without a zone are taken as China Standard Time (UTC+8).
func ParseDateTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	cst := time.FixedZone("CST", 8*3600)
	for _, layout := range []string{"2006-01-02 15:04", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, cst); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("bad date %q", s)
}

func parseDaily(s string) (from, to time.Duration, err error) {
	a, b, ok := strings.Cut(s, "-")
	parse := func(x string) (time.Duration, error) {
		t, err := time.Parse("15:04", strings.TrimSpace(x))
		if err != nil {
			return 0, err
		}
		return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
	}
	if ok {
		if from, err = parse(a); err == nil {
			to, err = parse(b)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("daily window %q: want e.g. 09:00-18:00", s)
	}
	return from, to, nil
}

func loadTZ(name string) (*time.Location, error) {
	switch name {
	case "", "Asia/Shanghai", "CST":
		return time.FixedZone("CST", 8*3600), nil
	case "UTC":
		return time.UTC, nil
	}
	l, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", name, err)
	}
	return l, nil
}

// Open reports whether the window contains now, and when it opens or
// closed, for the message.
func (w *Window) check(now time.Time, fields map[string]string) (ok bool, why string) {
	if w.Daily != "" {
		loc, _ := loadTZ(w.TZ)
		from, to, _ := parseDaily(w.Daily)
		l := now.In(loc)
		day := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc)
		if now.Before(day.Add(from)) || now.After(day.Add(to).Add(w.Grace.D())) {
			return false, fmt.Sprintf("只能在每日 %s 执行 only allowed daily %s (%s)", w.Daily, w.Daily, loc)
		}
		return true, ""
	}
	from, err1 := ParseDateTime(fields[w.FromField])
	to, err2 := ParseDateTime(fields[w.ToField])
	if err1 != nil || err2 != nil {
		return false, fmt.Sprintf("计划窗口未填写 the planned window (%s, %s) is not set", w.FromField, w.ToField)
	}
	if now.Before(from) {
		return false, fmt.Sprintf("计划窗口尚未开始 the planned window opens at %s", from.Format(time.RFC3339))
	}
	if now.After(to.Add(w.Grace.D())) {
		return false, fmt.Sprintf("计划窗口已结束 the planned window ended at %s", to.Format(time.RFC3339))
	}
	return true, ""
}

func (c *Cond) match(fields map[string]string) bool {
	v := strings.TrimSpace(fields[c.Field])
	if c.Empty {
		return v == "" || v == "false"
	}
	return strings.EqualFold(v, c.Equals)
}

// Roles lists every role the flow names: its stages' approvers and
// actors, its operators and who may roll back. Holders of these roles
// take part in the flow's tickets, and so may read them.
func (f *Flow) Roles() []string {
	var out []string
	add := func(rs []string) {
		for _, r := range rs {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	for _, st := range f.Stages {
		add(st.Roles)
	}
	add(f.Operators)
	for _, rb := range []*Rollback{f.Rollback, f.OnCancel} {
		if rb != nil {
			add(rb.Roles)
		}
	}
	return out
}
