package zookeeper

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"opsbot/flows"
	"opsbot/state"
)

// ExecConfig configures the publishing executor.
type ExecConfig struct {
	// Ensembles by name: "review" and "production".
	Ensembles map[string]*Store
	// CDN is the package URL layout the version service hands to clients,
	// e.g. "https://cdn.example.com/game/{platform}/{version}/"; a publish
	// whose URL does not start with it is refused before any write.
	CDN string
	// Platforms are every platform, for platform=all.
	Platforms []string
}

// Executor publishes version records. Stage params: "op" (check, review,
// cancel_review, prod, gray, gray_end), "ensemble" (review or
// production) and "kind" (the record kind a check is for).
type Executor struct{ cfg ExecConfig }

// NewExecutor returns the executor.
func NewExecutor(cfg ExecConfig) *Executor { return &Executor{cfg: cfg} }

func field(in flows.ExecInput, k string) string { return strings.TrimSpace(in.Ticket.Fields[k]) }

// platforms expands the platform field ("all" is every configured one).
func (x *Executor) platforms(in flows.ExecInput) []string {
	p := field(in, "platform")
	if p == "all" {
		return x.cfg.Platforms
	}
	var out []string
	for _, s := range strings.Split(p, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// record builds the record a publish ticket describes; the compatible
// list is computed from the history unless the ticket names one, and
// "{platform}" in the URL stands for each platform of the ticket.
func (x *Executor) record(in flows.ExecInput, platform, kind string, recs []Record) (Record, error) {
	v, err := ParseVersion(field(in, "version"))
	if err != nil || v <= 0 {
		return Record{}, fmt.Errorf("version %q is not a number", field(in, "version"))
	}
	min, _ := ParseVersion(field(in, "min_updatable"))
	rec := Record{Version: v, Kind: kind, ReleaseType: field(in, "release_type"), MinUpdatable: min, Force: field(in, "force") == "true",
		URL: strings.ReplaceAll(field(in, "url"), "{platform}", platform), Platform: platform, Who: in.Ticket.Requester, When: in.Ticket.Updated.UTC().Truncate(time.Second)}
	if rec.ReleaseType == "" {
		rec.ReleaseType = "online"
	}
	if list := field(in, "compatible"); list != "" {
		for _, s := range strings.Split(list, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return rec, fmt.Errorf("compatible: %q is not a version", s)
			}
			rec.Compatible = append(rec.Compatible, n)
		}
		slices.Sort(rec.Compatible)
	} else {
		rec.Compatible = Compatible(recs, min, v)
	}
	if x.cfg.CDN != "" {
		want := strings.NewReplacer("{platform}", platform, "{version}", strconv.Itoa(v)).Replace(x.cfg.CDN)
		if !strings.HasPrefix(rec.URL, want) {
			return rec, fmt.Errorf("包地址不在版本服务的 CDN 目录下 · url %q is not under the CDN directory the version service hands out: %s", rec.URL, want)
		}
	}
	return rec, nil
}

// Validate implements flows.Validator for the game flows ("game"): it
// fills the computed field "reach" with which live versions can reach the
// version the ticket publishes, per ensemble and platform, as ZooKeeper
// has it now, so the card shows it from submission on (and the engine
// looks it up again while the ticket waits: Flow.Refresh). It refuses
// nothing: the flow's check step does, and the write checks again.
func (x *Executor) Validate(ctx context.Context, in flows.Validation) (map[string]string, error) {
	out := maps.Clone(in.Fields)
	if in.Flow.Field("reach") == nil {
		return out, nil
	}
	var params map[string]string
	for _, st := range in.Flow.Stages {
		if st.Executor == "zookeeper" && st.Params["op"] == "check" {
			params = st.Params
			break
		}
	}
	st := x.cfg.Ensembles[params["ensemble"]]
	if st == nil {
		return out, nil
	}
	ei := flows.ExecInput{Ticket: state.Ticket{Fields: in.Fields, Requester: in.Actor}, Params: params}
	var lines []string
	for _, platform := range x.platforms(ei) {
		if err := CheckPlatform(platform); err != nil {
			return nil, &flows.UserError{Code: "bad_fields", Message: err.Error(), Hint: "例 e.g. platform=android", Fields: map[string]string{"platform": err.Error()}}
		}
		// A version already in the history with another package is
		// refused here, before a ticket number is taken.
		if recs, err := st.Records(platform); err == nil {
			rec, err := x.record(ei, platform, params["kind"], recs)
			if err != nil {
				// A package outside the CDN layout, a bad compatible list.
				return nil, &flows.UserError{Code: "bad_fields", Message: platform + ": " + err.Error(),
					Hint:   "例 e.g. url=" + strings.NewReplacer("{platform}", platform, "{version}", field(ei, "version")).Replace(x.cfg.CDN) + "game.zip",
					Fields: map[string]string{"url": err.Error()}}
			}
			if err := CheckRepublish(recs, rec); err != nil {
				return nil, &flows.UserError{Code: "republish", Message: st.Name + "/" + platform + ": " + err.Error(),
					Hint: fmt.Sprintf("/ops version list platform=%s", platform), Fields: map[string]string{"version": err.Error()}}
			}
		}
		lines = append(lines, x.reachLine(ei, st, platform))
	}
	out["reach"] = strings.Join(lines, "; ")
	return out, nil
}

// reachLine says, for one platform of one ensemble, which live versions
// can update to the ticket's version ("production/android: 1146 -> 1148 ✓").
func (x *Executor) reachLine(in flows.ExecInput, st *Store, platform string) string {
	where := st.Name + "/" + platform
	p, _, err := st.Pointers(platform)
	if err != nil {
		return where + ": 读不到 ZooKeeper · cannot read ZooKeeper: " + err.Error()
	}
	recs, err := st.Records(platform)
	if err != nil {
		return where + ": 读不到版本历史 · cannot read the history: " + err.Error()
	}
	rec, err := x.record(in, platform, in.Params["kind"], recs)
	if err != nil {
		return where + ": " + err.Error()
	}
	lines, _ := Reach(p, rec)
	if len(lines) == 0 {
		return fmt.Sprintf("%s: 没有更低的在线版本 · no live version below %d", where, rec.Version)
	}
	return where + ": " + strings.Join(lines, ", ")
}

// Run implements flows.Executor.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	if in.Kind == state.JobUndo {
		return x.rollback(ctx, in)
	}
	op := in.Params["op"]
	var out []string
	var undo []state.UndoStep
	for _, name := range []string{in.Params["ensemble"]} {
		st := x.cfg.Ensembles[name]
		if st == nil {
			continue
		}
		for _, platform := range x.platforms(in) {
			status, err := st.Status(platform)
			if err != nil {
				return flows.ExecResult{ExitCode: -1, Err: err, Output: strings.Join(out, "\n")}
			}
			if status == "stopped" {
				out = append(out, fmt.Sprintf("%s/%s: 已停服，跳过 stopped, skipped", name, platform))
				continue
			}
			line, prev, err := x.apply(ctx, in, op, st, platform)
			if err != nil {
				return flows.ExecResult{ExitCode: 1, Err: err, Output: strings.Join(append(out, line), "\n"), Undo: undo}
			}
			out = append(out, line)
			if prev != "" {
				// Registered as soon as it is made: a failure on the next
				// platform still leaves this one to be put back.
				undo = append(undo, state.UndoStep{What: "restore " + name + "/" + platform + " pointers",
					Values: map[string]string{"ensemble": name, "platform": platform, "pointers": prev}})
			}
		}
	}
	return flows.ExecResult{OK: true, Output: strings.Join(out, "\n"), Undo: undo}
}

// rollback puts back the pointers each publish replaced, newest first, as
// the publishes registered them. A ticket published before undo steps were
// registered keeps its pointers in the ticket's outputs ("prev.<ensemble>.
// <platform>"), which are used instead.
func (x *Executor) rollback(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	steps := slices.DeleteFunc(slices.Clone(in.Undo), func(u state.UndoStep) bool { return u.Values["pointers"] == "" })
	if len(steps) == 0 {
		for _, name := range []string{"production", "review"} {
			for _, platform := range x.platforms(in) {
				if raw := in.Ticket.Outputs["prev."+name+"."+platform]; raw != "" {
					steps = append(steps, state.UndoStep{Values: map[string]string{"ensemble": name, "platform": platform, "pointers": raw}})
				}
			}
		}
	}
	var out []string
	for _, u := range steps {
		name, platform := u.Values["ensemble"], u.Values["platform"]
		where := name + "/" + platform
		st := x.cfg.Ensembles[name]
		if st == nil {
			return flows.ExecResult{ExitCode: 1, Err: fmt.Errorf("回滚需要集群 %s · the rollback needs ensemble %s, which is not configured", name, name), Output: strings.Join(out, "\n")}
		}
		status, err := st.Status(platform)
		if err != nil {
			return flows.ExecResult{ExitCode: -1, Err: err, Output: strings.Join(out, "\n")}
		}
		if status == "stopped" {
			out = append(out, where+": 已停服，跳过 stopped, skipped")
			continue
		}
		var prev Pointers
		if err := json.Unmarshal([]byte(u.Values["pointers"]), &prev); err != nil {
			return flows.ExecResult{ExitCode: 1, Err: fmt.Errorf("%s: recorded pointers: %w", where, err), Output: strings.Join(out, "\n")}
		}
		before, after, err := st.Change(ctx, platform, nil, func(Pointers, []Record) (Pointers, error) { return prev, nil })
		if err != nil {
			return flows.ExecResult{ExitCode: 1, Err: err, Output: strings.Join(append(out, where+": "+err.Error()), "\n")}
		}
		out = append(out, fmt.Sprintf("%s: prod %d gray %d review %d -> prod %d gray %d review %d", where, before.Prod, before.Gray, before.Review,
			after.Prod, after.Gray, after.Review))
	}
	if len(out) == 0 {
		out = append(out, "无需回滚 nothing to restore")
	}
	return flows.ExecResult{OK: true, Output: strings.Join(out, "\n")}
}

// apply runs one op on one platform of one ensemble and returns a line
// for the card and the pointers before it (JSON).
func (x *Executor) apply(ctx context.Context, in flows.ExecInput, op string, st *Store, platform string) (string, string, error) {
	where := st.Name + "/" + platform
	if op == "check" {
		p, _, err := st.Pointers(platform)
		if err != nil {
			return where, "", err
		}
		recs, err := st.Records(platform)
		if err != nil {
			return where, "", err
		}
		rec, err := x.record(in, platform, in.Params["kind"], recs)
		if err != nil {
			return where + ": " + err.Error(), "", err
		}
		lines, _ := Reach(p, rec)
		line := fmt.Sprintf("%s: %d compatible %v; live: %s", where, rec.Version, rec.Compatible, strings.Join(lines, ", "))
		if err := CheckRepublish(recs, rec); err != nil {
			return where + ": " + err.Error(), "", err
		}
		return line, "", CheckPublish(p, rec)
	}
	var rec *Record
	var change func(Pointers, []Record) (Pointers, error)
	switch op {
	case "review", "prod", "gray":
		kind := map[string]string{"review": "review", "prod": "base", "gray": "gray"}[op]
		change = func(p Pointers, recs []Record) (Pointers, error) {
			r, err := x.record(in, platform, kind, recs)
			if err != nil {
				return p, err
			}
			// Checked again against the history and pointers as they are now.
			if err := CheckRepublish(recs, r); err != nil {
				return p, err
			}
			if op != "review" {
				if err := CheckPublish(p, r); err != nil {
					return p, err
				}
			}
			switch op {
			case "review":
				p.Review = r.Version
			case "prod":
				p.Prod = r.Version
				if field(in, "end_gray") == "true" {
					p.Gray = 0
				}
			case "gray":
				p.Gray = r.Version
			}
			return p, nil
		}
		// The record goes in the same transaction as the pointers.
		recs, err := st.Records(platform)
		if err != nil {
			return where, "", err
		}
		r, err := x.record(in, platform, kind, recs)
		if err != nil {
			return where + ": " + err.Error(), "", err
		}
		rec = &r
	case "cancel_review":
		change = func(p Pointers, _ []Record) (Pointers, error) { p.Review = 0; return p, nil }
	case "gray_end":
		change = func(p Pointers, recs []Record) (Pointers, error) {
			if p.Gray == 0 {
				return p, nil
			}
			for _, r := range recs {
				if r.Version == p.Prod && p.Gray < p.Prod && !slices.Contains(r.Compatible, p.Gray) {
					return p, fmt.Errorf("结束灰度会让 %d 无法更新到 %d · ending gray would strand %d: it is not in %d's compatible list", p.Gray, p.Prod, p.Gray, p.Prod)
				}
			}
			p.Gray = 0
			return p, nil
		}
	default:
		return where, "", fmt.Errorf("unknown op %q", op)
	}
	prev, next, err := st.Change(ctx, platform, rec, change)
	if err != nil {
		return where + ": " + err.Error(), "", err
	}
	before, _ := json.Marshal(prev)
	return fmt.Sprintf("%s: prod %d gray %d review %d -> prod %d gray %d review %d", where, prev.Prod, prev.Gray, prev.Review,
		next.Prod, next.Gray, next.Review), string(before), nil
}
