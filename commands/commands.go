// Package commands turns chat text and button payloads into typed
// requests. It is platform-neutral: every transport hands it the text a
// person typed (or a button's value) and gets back a Request or a
// *flows.UserError saying what was wrong and what to type instead.
package commands

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"opsbot/flows"
	"opsbot/state"
)

// Request is a parsed command.
type Request interface{ Command() string }

// Help asks for the command list or one command's usage; Short asks for a
// few lines to start with (an answer to a greeting).
type Help struct {
	Topic string
	Short bool
}

// New opens a ticket.
type New struct {
	Flow   string
	Fields map[string]string
}

// Show shows a ticket.
type Show struct{ Ticket string }

// List lists tickets: Scope is mine, waiting, open or all.
type List struct {
	Scope string
	Flow  string
	Page  int
}

// Act is a person's action on a ticket: approve, reject, cancel, retry,
// release or rollback. Version comes from a card button ("T-42#7") and
// is 0 when typed; Batch is the batch a release or rollback button names
// ("batch=2"), 0 when none is named. Encode writes an Act as the command
// a button carries; Parse reads it back.
type Act struct {
	Event   flows.Event
	Ticket  string
	Version int64
	Batch   int
	// Confirm: "confirm" (确认) was given, for an action that cannot be
	// taken back.
	Confirm bool
	Comment string
}

// Role grants, revokes or lists roles.
type Role struct {
	Op   string // grant, revoke, list
	Role string
	User string
}

// Audit shows the audit log of a ticket, a user, or everything.
type Audit struct {
	Ticket string
	User   string
	Page   int
}

// Version asks the version service's records: "resolve" (what a client
// is offered) or "list" (a platform's history).
type Version struct {
	Op   string
	Args map[string]string
}

// Platform stops or starts a game platform: a stopped platform is
// skipped by every publish, visibly.
type Platform struct {
	Op   string // stop, start
	Name string
}

// Edit changes fields of a ticket waiting for approval.
type Edit struct {
	Ticket  string
	Version int64
	Fields  map[string]string
}

// Mute stops (On) or resumes the progress notices of a ticket for the
// person who asks.
type Mute struct {
	Ticket string
	On     bool
}

// Cluster shows one store cluster with its utilization, or lists them.
type Cluster struct {
	Op   string // show, list
	Name string
	Env  string
}

// Store shows one store.
type Store struct{ ID string }

// Freeze sets (Op "set"), lifts ("lift") or lists ("list") environment
// freezes: a frozen environment cannot be cleaned up.
// Server shows a store server: its record, Puppet group, certificate
// and the ticket holding it.
type Server struct{ Host string }

// Webhook shows the webhooks' and the audit stream's delivery, or sends
// a feed's dead letters again.
type Webhook struct {
	Op   string // status or retry
	Name string
}

type Freeze struct {
	Op string
	// ID names the freeze to lift ("F-3"); Env lifts every freeze of an
	// environment.
	ID  string
	Env string
	// Envs, Flows and Resources are what a new freeze covers.
	Envs      []string
	Flows     []string
	Resources []string
	From      string
	Until     string
	// Every is a weekly window: "fri 18:00-mon 09:00".
	Every   string
	TZ      string
	Reason  string
	Except  []string
	Channel string
}

// Milestone adds (Op "add"), removes ("remove") or lists ("list") the
// dated milestones of a version's release plan; a milestone with envs or
// flows freezes them from its date.
type Milestone struct {
	Op      string
	Version string
	Date    string
	Name    string
	Kind    string
	Envs    []string
	Flows   []string
	Until   string
	Except  []string
	Channel string
}

// Calendar shows the freezes, milestones, people away and duty of a
// month ("" is this month).
type Calendar struct{ Month string }

// Away hands the sender's approvals to a delegate until a date (Op
// "set"), ends that early ("end"), or lists who is away ("list").
type Away struct {
	Op       string
	Until    string
	Delegate string
}

// Duty sets a role's rotation (Op "set"), shows who is on duty ("show")
// or clears it ("clear").
type Duty struct {
	Op     string
	Role   string
	People []string
	Every  string
}

// Command implements Request.
func (Help) Command() string      { return "help" }
func (New) Command() string       { return "new" }
func (Show) Command() string      { return "show" }
func (List) Command() string      { return "list" }
func (a Act) Command() string     { return string(a.Event) }
func (Role) Command() string      { return "role" }
func (Audit) Command() string     { return "audit" }
func (Version) Command() string   { return "version" }
func (Platform) Command() string  { return "platform" }
func (Edit) Command() string      { return "edit" }
func (Cluster) Command() string   { return "cluster" }
func (Store) Command() string     { return "store" }
func (Webhook) Command() string   { return "webhook" }
func (Server) Command() string    { return "server" }
func (Milestone) Command() string { return "milestone" }
func (Calendar) Command() string  { return "calendar" }
func (Away) Command() string      { return "away" }
func (Duty) Command() string      { return "duty" }
func (m Mute) Command() string {
	if m.On {
		return "mute"
	}
	return "unmute"
}
func (f Freeze) Command() string {
	if f.Op == "lift" {
		return "unfreeze"
	}
	return "freeze"
}

// Spec describes a command for the registry and for help.
type Spec struct {
	Name    string
	Aliases []string
	Usage   string
	Summary string
	Example string
	Parse   func(args []string) (Request, error)
}

// Registry maps command names to specs.
type Registry struct {
	specs []Spec
	index map[string]*Spec
}

// NewRegistry builds a registry and refuses duplicate names or aliases.
func NewRegistry(specs ...Spec) (*Registry, error) {
	r := &Registry{index: map[string]*Spec{}}
	r.specs = specs
	for i := range r.specs {
		s := &r.specs[i]
		for _, n := range append([]string{s.Name}, s.Aliases...) {
			if _, dup := r.index[n]; dup {
				return nil, fmt.Errorf("command %q registered twice", n)
			}
			r.index[n] = s
		}
	}
	return r, nil
}

// Specs returns the commands in registration order.
func (r *Registry) Specs() []Spec { return r.specs }

// Lookup finds a command by name or alias.
func (r *Registry) Lookup(name string) (*Spec, bool) {
	s, ok := r.index[strings.ToLower(name)]
	return s, ok
}

func usageErr(s *Spec, format string, a ...any) error {
	return &flows.UserError{Code: "usage", Message: fmt.Sprintf(format, a...),
		Hint: "用法 usage: " + s.Usage + " · 例 e.g. " + s.Example}
}

// Default returns the registry of opsbot's commands.
func Default() *Registry {
	r, err := NewRegistry(specs()...)
	if err != nil {
		panic(err) // the built-in table is fixed; a duplicate is a bug caught by tests
	}
	return r
}

func specs() []Spec {
	var out []Spec
	out = append(out,
		Spec{Name: "help", Aliases: []string{"帮助", "?"}, Usage: "/ops help [command]", Summary: "命令说明 list commands, or explain one",
			Example: "/ops help new", Parse: func(a []string) (Request, error) {
				return Help{Topic: strings.Join(a, " ")}, nil
			}},
		Spec{Name: "new", Aliases: []string{"新建", "create", "提交工单", "提交", "申请"}, Usage: "/ops new <flow> key=value ...", Summary: "提交工单 open a ticket",
			Example: `/ops new golive service=payments version=v1.4.2 rollback_app="redeploy v1.4.1"`},
		Spec{Name: "show", Aliases: []string{"status", "查看", "状态"}, Usage: "/ops show T-42", Summary: "查看工单 show a ticket",
			Example: "/ops show T-42"},
		Spec{Name: "list", Aliases: []string{"ls", "列表"}, Usage: "/ops list [mine|waiting|open|all] [flow=NAME] [page=N]",
			Summary: "工单列表 list tickets", Example: "/ops list waiting flow=golive"},
	)
	for _, a := range []struct {
		name                        flows.Event
		zh, summary, usage, example string
	}{
		{flows.EvApprove, "同意", "同意 approve a ticket's current stage (通过, 批准)", "/ops approve T-42 [comment]", "/ops approve T-42 looks good"},
		{flows.EvReject, "驳回", "驳回 reject a ticket (reason required)", "/ops reject T-42 <reason>", "/ops reject T-42 window collides with the sale"},
		{flows.EvCancel, "取消", "取消 cancel your ticket and release its locks", "/ops cancel T-42", "/ops cancel T-42"},
		{flows.EvRetry, "重试", "重试 retry a failed step", "/ops retry T-42", "/ops retry T-42"},
		{flows.EvRollback, "回滚", "回滚 run the flow's rollback (a batch release: the newest released batch; a data cleanup: restore its backup)", "/ops rollback T-42", "/ops rollback T-42"},
		{flows.EvRelease, "发布", "发布 release the next batch of a batch release", "/ops release T-42 [batch=N]", "/ops release T-42"},
		{flows.EvException, "例外", "冻结例外 ask to go through a freeze (one more approval from the freeze's role)", "/ops exception T-42 <reason>", "/ops exception T-42 payment outage hotfix"},
	} {
		aliases := []string{a.zh}
		if a.name == flows.EvApprove {
			aliases = append(aliases, "通过", "批准")
		}
		if a.name == flows.EvRollback {
			aliases = append(aliases, "restore", "恢复") // a cleanup's rollback restores its backup
		}
		out = append(out, Spec{Name: string(a.name), Aliases: aliases, Usage: a.usage, Summary: a.summary, Example: a.example})
	}
	out = append(out,
		Spec{Name: "role", Aliases: []string{"角色"}, Usage: "/ops role grant|revoke <role> <user> · /ops role list [user]",
			Summary: "角色管理 grant, revoke or list roles (grant/revoke: admin only)", Example: "/ops role grant techlead bob"},
		Spec{Name: "audit", Aliases: []string{"审计"}, Usage: "/ops audit [T-42|user] [page=N]", Summary: "审计日志 show the audit log",
			Example: "/ops audit T-42"},
		Spec{Name: "edit", Aliases: []string{"修改"}, Usage: "/ops edit T-42 key=value ...", Summary: "修改等待审批的工单 edit a ticket that waits for approval (approvals start over)",
			Example: "/ops edit T-42 size=5+3 k8s_id=c-7f3a9"},
		Spec{Name: "mute", Aliases: []string{"静音"}, Usage: "/ops mute T-42", Summary: "不再接收该工单的进度通知（结果仍会通知）stop hearing a ticket's progress (you still hear its result)",
			Example: "/ops mute T-42"},
		Spec{Name: "unmute", Aliases: []string{"取消静音"}, Usage: "/ops unmute T-42", Summary: "恢复接收进度通知 hear a ticket's progress again",
			Example: "/ops unmute T-42"},
		Spec{Name: "cluster", Aliases: []string{"集群"}, Usage: "/ops cluster show NAME · /ops cluster list [env=prod]", Summary: "集群与使用率 a store cluster and its utilization",
			Example: "/ops cluster show prod-sh-01"},
		Spec{Name: "store", Aliases: []string{"门店"}, Usage: "/ops store show ID", Summary: "门店信息 a store and its cluster",
			Example: "/ops store show S-1001"},
		Spec{Name: "freeze", Aliases: []string{"冻结", "封版"}, Usage: `/ops freeze env=ENV[,ENV] [flows=F,F] [resource=service:NAME] [from=DATE] until=DATE|every="fri 18:00-mon 09:00" [tz=Asia/Shanghai] [except=ROLE] [channel=NAME] reason=... · /ops freeze list`,
			Summary: "冻结：期间不能提交或执行所覆盖的工单 freeze environments, flows or resources: no new tickets or executions on them in the window", Example: `/ops freeze env=prod flows=golive,puppet-release until="2026-05-12 09:00" except=director reason="5.9 external test"`},
		Spec{Name: "unfreeze", Aliases: []string{"解冻"}, Usage: "/ops unfreeze F-3 · /ops unfreeze env=ENV", Summary: "解除冻结 lift a freeze (by id, or every freeze of an environment)",
			Example: "/ops unfreeze F-3"},
		Spec{Name: "milestone", Aliases: []string{"里程碑"}, Usage: `/ops milestone add VERSION date=YYYY-MM-DD name=... [kind=requirements_freeze|code_freeze|package|external_test] [env=ENV] [flows=F,F] [until=DATE] [except=ROLE] [channel=NAME] · /ops milestone list [VERSION] · /ops milestone remove VERSION date=... name=...`,
			Summary: "版本计划里程碑，封版可自动冻结 a version's dated milestones; a code freeze can freeze envs or flows", Example: `/ops milestone add 5.9 date=2026-04-26 name="封版打包合并代码数值" kind=code_freeze env=tdev`},
		Spec{Name: "calendar", Aliases: []string{"日历"}, Usage: "/ops calendar [YYYY-MM]", Summary: "冻结、里程碑、休假与值班 freezes, milestones, people away and duty in a month",
			Example: "/ops calendar 2026-05"},
		Spec{Name: "away", Aliases: []string{"休假", "请假"}, Usage: "/ops away until=YYYY-MM-DD delegate=USER · /ops away end · /ops away list",
			Summary: "休假转交审批 hand your approvals to a delegate with the same role until a date", Example: "/ops away until=2026-05-12 delegate=bob"},
		Spec{Name: "duty", Aliases: []string{"值班"}, Usage: "/ops duty set ROLE USER,USER daily|weekly · /ops duty show [ROLE] · /ops duty clear ROLE",
			Summary: "值班轮换：审批先通知值班人 a role's duty rotation: approvals go to the person on duty first", Example: "/ops duty set infra dave,erin weekly"},
		Spec{Name: "version", Aliases: []string{"版本"}, Usage: "/ops version resolve platform=P section=N gray_version=V prod_version=V · /ops version list platform=P [online=true] [page=N]",
			Summary: "版本查询 what a game client would be offered, or a platform's version history", Example: "/ops version resolve platform=android section=2 gray_version= prod_version=1146"},
		Spec{Name: "server", Aliases: []string{"服务器"}, Usage: "/ops server show HOST",
			Summary: "门店服务器：清单、Puppet 分组、证书、进行中的工单 a store server: inventory record, Puppet group, certificate, the ticket in flight", Example: "/ops server show pos-01.s1001.store.example.com"},
		Spec{Name: "webhook", Aliases: []string{"推送"}, Usage: "/ops webhook status [NAME] · /ops webhook retry NAME",
			Summary: "事件推送与审计流的投递状态、死信 webhook and audit stream delivery, dead letters; retry sends dead letters again", Example: "/ops webhook status siem"},
		Spec{Name: "platform", Aliases: []string{"平台"}, Usage: "/ops platform stop|start P",
			Summary: "停服或开服 stop or start a game platform (a stopped platform is skipped by every publish)", Example: "/ops platform stop android"},
	)
	for i := range out {
		s := &out[i]
		switch s.Name {
		case "new":
			s.Parse = func(a []string) (Request, error) { return parseNew(s, a) }
		case "show":
			s.Parse = func(a []string) (Request, error) {
				if len(a) != 1 {
					return nil, usageErr(s, "需要一个工单号 show takes one ticket id")
				}
				id, _, err := ticketRef(s, a[0])
				return Show{Ticket: id}, err
			}
		case "list":
			s.Parse = func(a []string) (Request, error) { return parseList(s, a) }
		case string(flows.EvApprove), string(flows.EvReject), string(flows.EvCancel), string(flows.EvRetry), string(flows.EvRollback), string(flows.EvRelease),
			string(flows.EvException):
			s.Parse = func(a []string) (Request, error) { return parseAct(s, a) }
		case "role":
			s.Parse = func(a []string) (Request, error) { return parseRole(s, a) }
		case "audit":
			s.Parse = func(a []string) (Request, error) { return parseAudit(s, a) }
		case "version":
			s.Parse = func(a []string) (Request, error) { return parseVersion(s, a) }
		case "platform":
			s.Parse = func(a []string) (Request, error) {
				if len(a) != 2 || (a[0] != "stop" && a[0] != "start") {
					return nil, usageErr(s, "需要 stop 或 start 和一个平台 · platform needs stop or start and one platform")
				}
				return Platform{Op: a[0], Name: a[1]}, nil
			}
		case "edit":
			s.Parse = func(a []string) (Request, error) { return parseEdit(s, a) }
		case "freeze", "unfreeze":
			s.Parse = func(a []string) (Request, error) { return parseFreeze(s, a) }
		case "milestone":
			s.Parse = func(a []string) (Request, error) { return parseMilestone(s, a) }
		case "calendar":
			s.Parse = func(a []string) (Request, error) {
				if len(a) > 1 {
					return nil, usageErr(s, "最多一个月份 calendar takes at most one month")
				}
				if len(a) == 1 {
					return Calendar{Month: a[0]}, nil
				}
				return Calendar{}, nil
			}
		case "away":
			s.Parse = func(a []string) (Request, error) { return parseAway(s, a) }
		case "duty":
			s.Parse = func(a []string) (Request, error) { return parseDuty(s, a) }
		case "cluster":
			s.Parse = func(a []string) (Request, error) { return parseCluster(s, a) }
		case "mute", "unmute":
			s.Parse = func(a []string) (Request, error) {
				if len(a) != 1 {
					return nil, usageErr(s, "需要一个工单号 %s takes one ticket id", s.Name)
				}
				id, _, err := ticketRef(s, a[0])
				return Mute{Ticket: id, On: s.Name == "mute"}, err
			}
		case "server":
			s.Parse = func(a []string) (Request, error) {
				if len(a) == 1 && a[0] != "show" {
					a = []string{"show", a[0]}
				}
				if len(a) != 2 || a[0] != "show" {
					return nil, usageErr(s, "需要主机名 server show takes one hostname")
				}
				return Server{Host: strings.ToLower(a[1])}, nil
			}
		case "webhook":
			s.Parse = func(a []string) (Request, error) {
				switch {
				case len(a) == 0:
					return Webhook{Op: "status"}, nil
				case a[0] == "status" && len(a) <= 2:
					return Webhook{Op: "status", Name: strings.Join(a[1:], "")}, nil
				case a[0] == "retry" && len(a) == 2:
					return Webhook{Op: "retry", Name: a[1]}, nil
				}
				return nil, usageErr(s, "webhook status [名称 name] 或 retry 名称 · webhook status [name] or webhook retry name")
			}
		case "store":
			s.Parse = func(a []string) (Request, error) {
				if len(a) == 1 && a[0] != "show" {
					a = []string{"show", a[0]} // "/ops store S-1" reads as show
				}
				if len(a) != 2 || a[0] != "show" {
					return nil, usageErr(s, "需要门店号 store show takes one store id")
				}
				return Store{ID: a[1]}, nil
			}
		}
	}
	return out
}

// ticketRef parses "T-42" or a button's "T-42#7".
func ticketRef(s *Spec, tok string) (string, int64, error) {
	ref, ver, hasVer := strings.Cut(tok, "#")
	n, ok := state.ParseID(ref)
	if !ok {
		return "", 0, usageErr(s, "%q 不是工单号 is not a ticket id", tok)
	}
	var v int64
	if hasVer {
		x, err := strconv.ParseInt(ver, 10, 64)
		if err != nil || x <= 0 {
			return "", 0, usageErr(s, "%q 不是工单号 is not a ticket id", tok)
		}
		v = x
	}
	return state.FormatID(n), v, nil
}

func parseNew(s *Spec, a []string) (Request, error) {
	if len(a) == 0 {
		return nil, usageErr(s, "需要流程名 which flow?")
	}
	req := New{Flow: strings.ToLower(a[0]), Fields: map[string]string{}}
	for _, kv := range a[1:] {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			return nil, usageErr(s, "%q 不是 key=value 格式 is not key=value", kv)
		}
		if _, dup := req.Fields[k]; dup {
			return nil, usageErr(s, "字段 %s 重复 field %s given twice", k, k)
		}
		req.Fields[k] = v
	}
	return req, nil
}

func parseOpts(s *Spec, a []string, allowed ...string) (pos []string, opts map[string]string, err error) {
	opts = map[string]string{}
	for _, tok := range a {
		k, v, ok := strings.Cut(tok, "=")
		if !ok {
			pos = append(pos, tok)
			continue
		}
		k = strings.ToLower(k)
		found := false
		for _, x := range allowed {
			found = found || x == k
		}
		if !found {
			return nil, nil, usageErr(s, "未知选项 unknown option %q%s", k, DidYouMean(k, allowed))
		}
		opts[k] = v
	}
	return pos, opts, nil
}

// DidYouMean is ` (是不是 did you mean "x"?)` for the word among candidates
// nearest to w, or "": only words are suggested ("?" is an alias, not a
// likely typo).
func DidYouMean(w string, c []string) string {
	words := make([]string, 0, len(c))
	for _, x := range c {
		if x != "" && unicode.IsLetter([]rune(x)[0]) {
			words = append(words, x)
		}
	}
	if x := flows.Closest(w, words); x != "" {
		return fmt.Sprintf(" (是不是 did you mean %q?)", x)
	}
	return ""
}

func pageOpt(s *Spec, opts map[string]string) (int, error) {
	p := 1
	if v, ok := opts["page"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100000 {
			return 0, usageErr(s, "page=%q 不是正整数 is not a page number", v)
		}
		p = n
	}
	return p, nil
}

var scopes = []string{"mine", "waiting", "open", "all"}

func parseList(s *Spec, a []string) (Request, error) {
	pos, opts, err := parseOpts(s, a, "flow", "page")
	if err != nil {
		return nil, err
	}
	req := List{Scope: "open", Flow: strings.ToLower(opts["flow"])}
	if req.Page, err = pageOpt(s, opts); err != nil {
		return nil, err
	}
	if len(pos) > 1 {
		return nil, usageErr(s, "只能有一个范围 one scope at most")
	}
	if len(pos) == 1 {
		sc := strings.ToLower(pos[0])
		switch sc {
		case "我的", "my":
			sc = "mine"
		case "待办", "待审批", "todo":
			sc = "waiting"
		}
		found := false
		for _, x := range scopes {
			found = found || x == sc
		}
		if !found {
			return nil, usageErr(s, "未知范围 unknown scope %q%s", pos[0], DidYouMean(sc, scopes))
		}
		req.Scope = sc
	}
	return req, nil
}

func parseAct(s *Spec, a []string) (Request, error) {
	req, err := readAct(s, a)
	if err != nil {
		return nil, err
	}
	if req.Event == flows.EvReject && req.Comment == "" {
		return nil, usageErr(s, "驳回需要原因 a rejection needs a reason")
	}
	return req, nil
}

func parseRole(s *Spec, a []string) (Request, error) {
	if len(a) == 0 {
		return Role{Op: "list"}, nil
	}
	op := strings.ToLower(a[0])
	switch op {
	case "list", "ls":
		if len(a) > 2 {
			return nil, usageErr(s, "role list 最多一个用户 takes at most one user")
		}
		r := Role{Op: "list"}
		if len(a) == 2 {
			r.User = state.NormName(a[1])
		}
		return r, nil
	case "grant", "revoke", "add", "remove":
		if op == "add" {
			op = "grant"
		} else if op == "remove" {
			op = "revoke"
		}
		if len(a) != 3 {
			return nil, usageErr(s, "需要角色和用户 %s needs a role and a user", op)
		}
		role := state.NormName(a[1])
		if !roleName(role) {
			return nil, usageErr(s, "角色名 %q 无效 role names use letters, digits, '-' and '_'", a[1])
		}
		return Role{Op: op, Role: role, User: state.NormName(a[2])}, nil
	}
	return nil, usageErr(s, "未知操作 unknown role operation %q%s", a[0], DidYouMean(op, []string{"grant", "revoke", "list"}))
}

func roleName(r string) bool {
	if r == "" || len(r) > 40 {
		return false
	}
	for _, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func parseAudit(s *Spec, a []string) (Request, error) {
	pos, opts, err := parseOpts(s, a, "page")
	if err != nil {
		return nil, err
	}
	req := Audit{}
	if req.Page, err = pageOpt(s, opts); err != nil {
		return nil, err
	}
	switch len(pos) {
	case 0:
	case 1:
		if n, ok := state.ParseID(pos[0]); ok && strings.HasPrefix(strings.ToUpper(pos[0]), "T-") {
			req.Ticket = state.FormatID(n)
		} else {
			req.User = state.NormName(pos[0])
		}
	default:
		return nil, usageErr(s, "只能查询一个工单或用户 one ticket or user at a time")
	}
	return req, nil
}

// Names lists every command name and alias, sorted.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.index))
	for n := range r.index {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func parseVersion(s *Spec, a []string) (Request, error) {
	if len(a) == 0 || (a[0] != "resolve" && a[0] != "list") {
		return nil, usageErr(s, "需要 resolve 或 list · version needs resolve or list")
	}
	allowed := map[string][]string{"resolve": {"platform", "section", "gray_version", "prod_version"}, "list": {"platform", "online", "page"}}[a[0]]
	pos, opts, err := parseOpts(s, a[1:], allowed...)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usageErr(s, "多余的参数 unexpected %q", pos[0])
	}
	if opts["platform"] == "" {
		return nil, usageErr(s, "需要 platform · which platform?")
	}
	return Version{Op: a[0], Args: opts}, nil
}

func parseEdit(s *Spec, a []string) (Request, error) {
	if len(a) == 0 {
		return nil, usageErr(s, "需要工单号 which ticket?")
	}
	id, ver, err := ticketRef(s, a[0])
	if err != nil {
		return nil, err
	}
	req, err := parseNew(s, append([]string{"edit"}, a[1:]...))
	if err != nil {
		return nil, err
	}
	fields := req.(New).Fields
	if len(fields) == 0 {
		return nil, usageErr(s, "没有要修改的字段 · nothing to change: give key=value pairs")
	}
	return Edit{Ticket: id, Version: ver, Fields: fields}, nil
}

func parseCluster(s *Spec, a []string) (Request, error) {
	if len(a) == 1 && a[0] != "show" && a[0] != "list" {
		a = []string{"show", a[0]} // "/ops cluster prod-sh-01" reads as show
	}
	if len(a) == 0 {
		return nil, usageErr(s, "需要 show 或 list · cluster needs show NAME or list")
	}
	switch a[0] {
	case "show":
		if len(a) != 2 {
			return nil, usageErr(s, "需要集群名 cluster show takes one cluster name")
		}
		return Cluster{Op: "show", Name: a[1]}, nil
	case "list":
		pos, opts, err := parseOpts(s, a[1:], "env")
		if err != nil {
			return nil, err
		}
		if len(pos) > 0 {
			return nil, usageErr(s, "多余的参数 unexpected %q", pos[0])
		}
		return Cluster{Op: "list", Env: opts["env"]}, nil
	}
	return nil, usageErr(s, "未知操作 %q · cluster takes show or list%s", a[0], DidYouMean(a[0], []string{"show", "list"}))
}

func parseFreeze(s *Spec, a []string) (Request, error) {
	if s.Name == "freeze" && len(a) == 1 && a[0] == "list" {
		return Freeze{Op: "list"}, nil
	}
	if s.Name == "unfreeze" {
		pos, opts, err := parseOpts(s, a, "env")
		if err != nil {
			return nil, err
		}
		switch {
		case len(pos) == 1 && opts["env"] == "" && strings.HasPrefix(strings.ToUpper(pos[0]), "F-"):
			return Freeze{Op: "lift", ID: strings.ToUpper(pos[0])}, nil
		case len(pos) == 0 && opts["env"] != "":
			return Freeze{Op: "lift", Env: opts["env"]}, nil
		}
		return nil, usageErr(s, "需要冻结编号或 env · which freeze? give its id (F-3) or env=")
	}
	pos, opts, err := parseOpts(s, a, "env", "flows", "flow", "resource", "resources", "from", "until", "every", "tz", "reason", "except", "channel")
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usageErr(s, "多余的参数 unexpected %q: write key=value", pos[0])
	}
	f := Freeze{Op: "set", Envs: list(opts["env"]), Flows: list(opts["flows"] + "," + opts["flow"]),
		Resources: list(opts["resource"] + "," + opts["resources"]), From: opts["from"], Until: opts["until"], Every: opts["every"],
		TZ: opts["tz"], Reason: strings.TrimSpace(opts["reason"]), Except: list(opts["except"]), Channel: opts["channel"]}
	if len(f.Envs)+len(f.Flows)+len(f.Resources) == 0 {
		return nil, usageErr(s, "需要 env、flows 或 resource · a freeze covers env=, flows= or resource=")
	}
	if (f.Until == "" && f.Every == "") || f.Reason == "" {
		return nil, usageErr(s, "需要 until（或 every）和 reason · a freeze needs until= (a date) or every= (a weekly window), and reason=")
	}
	if len(f.Envs) == 1 {
		f.Env = f.Envs[0]
	}
	return f, nil
}

// list splits a comma-separated option, dropping empty items.
func list(v string) []string {
	var out []string
	for _, x := range strings.Split(v, ",") {
		if x = strings.TrimSpace(x); x != "" && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func parseMilestone(s *Spec, a []string) (Request, error) {
	if len(a) == 0 {
		return Milestone{Op: "list"}, nil
	}
	op := strings.ToLower(a[0])
	switch op {
	case "list", "ls":
		if len(a) > 2 {
			return nil, usageErr(s, "milestone list 最多一个版本 takes at most one version")
		}
		m := Milestone{Op: "list"}
		if len(a) == 2 {
			m.Version = a[1]
		}
		return m, nil
	case "add", "remove", "rm":
		if op == "rm" {
			op = "remove"
		}
		allowed := []string{"date", "name", "kind", "env", "flows", "until", "except", "channel"}
		if op == "remove" {
			allowed = allowed[:2]
		}
		pos, opts, err := parseOpts(s, a[1:], allowed...)
		if err != nil {
			return nil, err
		}
		if len(pos) != 1 {
			return nil, usageErr(s, "需要一个版本号 milestone %s needs one version, e.g. 5.9", op)
		}
		m := Milestone{Op: op, Version: pos[0], Date: opts["date"], Name: strings.TrimSpace(opts["name"]), Kind: strings.ToLower(opts["kind"]),
			Envs: list(opts["env"]), Flows: list(opts["flows"]), Until: opts["until"], Except: list(opts["except"]), Channel: opts["channel"]}
		if m.Date == "" || m.Name == "" {
			return nil, usageErr(s, "需要 date 和 name · a milestone needs date= and name=")
		}
		if m.Kind != "" && !slices.Contains(MilestoneKinds, m.Kind) {
			return nil, usageErr(s, "kind=%q 无效 · kind is one of %s%s", m.Kind, strings.Join(MilestoneKinds, ", "), DidYouMean(m.Kind, MilestoneKinds))
		}
		return m, nil
	}
	return nil, usageErr(s, "未知操作 %q · milestone takes add, list or remove%s", a[0], DidYouMean(a[0], []string{"add", "list", "remove"}))
}

// MilestoneKinds are the kinds of release milestones.
var MilestoneKinds = []string{"requirements_freeze", "code_freeze", "package", "external_test"}

func parseAway(s *Spec, a []string) (Request, error) {
	if len(a) == 1 && (a[0] == "end" || a[0] == "back" || a[0] == "list") {
		if a[0] == "list" {
			return Away{Op: "list"}, nil
		}
		return Away{Op: "end"}, nil
	}
	pos, opts, err := parseOpts(s, a, "until", "delegate")
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usageErr(s, "多余的参数 unexpected %q: write key=value", pos[0])
	}
	if opts["until"] == "" || opts["delegate"] == "" {
		return nil, usageErr(s, "需要 until 和 delegate · away needs until= (a date) and delegate= (who approves for you)")
	}
	return Away{Op: "set", Until: opts["until"], Delegate: state.NormName(opts["delegate"])}, nil
}

func parseDuty(s *Spec, a []string) (Request, error) {
	if len(a) == 0 {
		return Duty{Op: "show"}, nil
	}
	switch op := strings.ToLower(a[0]); op {
	case "show", "list":
		if len(a) > 2 {
			return nil, usageErr(s, "duty show 最多一个角色 takes at most one role")
		}
		d := Duty{Op: "show"}
		if len(a) == 2 {
			d.Role = state.NormName(a[1])
		}
		return d, nil
	case "clear":
		if len(a) != 2 {
			return nil, usageErr(s, "需要一个角色 duty clear takes one role")
		}
		return Duty{Op: "clear", Role: state.NormName(a[1])}, nil
	case "set":
		if len(a) != 4 {
			return nil, usageErr(s, "需要角色、人员和周期 duty set needs a role, people (comma-separated) and daily or weekly")
		}
		every := strings.ToLower(a[3])
		if every != "daily" && every != "weekly" {
			return nil, usageErr(s, "周期 %q 无效 · the rotation is daily or weekly%s", a[3], DidYouMean(every, []string{"daily", "weekly"}))
		}
		var people []string
		for _, p := range list(a[2]) {
			people = append(people, state.NormName(p))
		}
		if len(people) == 0 {
			return nil, usageErr(s, "需要值班人员 who is on the rotation?")
		}
		return Duty{Op: "set", Role: state.NormName(a[1]), People: people, Every: every}, nil
	default:
		return nil, usageErr(s, "未知操作 %q · duty takes set, show or clear%s", a[0], DidYouMean(op, []string{"set", "show", "clear"}))
	}
}
