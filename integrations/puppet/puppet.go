// Package puppet is the executor of the Puppet batch release: it checks
// the temporary branch (diff against uat, Puppetfile), releases a batch
// through merge requests it creates and merges (temporary branch -> uat ->
// production -> the batch's zones), reverts a batch's merges in reverse
// order, and after a cancel opens the sync merge requests and deletes the
// temporary branch. Every step is idempotent: a target that already
// contains its source is not merged again.
package puppet

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"opsbot/flows"
	"opsbot/integrations/gitlab"
	"opsbot/state"
)

// Config configures the executor.
type Config struct {
	Client *gitlab.Client
	// BranchField names the ticket field holding the temporary branch.
	BranchField string
	// Path is the branch chain before the zones: uat, production.
	Path []string
	// MaxConcurrent bounds the GitLab calls made at once for a batch's zones.
	MaxConcurrent int
}

// Executor runs release steps against GitLab.
type Executor struct{ cfg Config }

// New returns the executor.
func New(cfg Config) *Executor {
	if cfg.BranchField == "" {
		cfg.BranchField = "branch"
	}
	if len(cfg.Path) == 0 {
		cfg.Path = []string{"uat", "production"}
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 4
	}
	return &Executor{cfg: cfg}
}

// Run implements flows.Executor.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	switch in.Kind {
	case state.JobRelease, state.JobRevert:
		i, err := strconv.Atoi(in.Params["batch"])
		if err != nil || i < 0 || i >= len(in.Ticket.Batches) {
			return flows.ExecResult{ExitCode: -1, Err: errors.New("no such batch")}
		}
		b := in.Ticket.Batches[i]
		if in.Kind == state.JobRelease {
			return x.release(ctx, in.Ticket, i, b)
		}
		return x.revert(ctx, b, in.Undo)
	case state.JobCleanup:
		return x.cleanup(ctx, in.Ticket)
	default:
		return x.check(ctx, in.Ticket)
	}
}

func (x *Executor) branch(t state.Ticket) string { return t.Fields[x.cfg.BranchField] }

// fail ends a batch's run: the note says what went wrong and the next
// safe step; the files of a conflict are named; the merges made so far
// are registered for the revert.
func fail(b state.Batch, format string, a ...any) flows.ExecResult {
	b.Note = fmt.Sprintf(format, a...)
	var err error = errors.New(b.Note)
	var files []string
	for _, s := range b.Steps {
		if s.Result == "conflict" || s.Result == "revert_failed" {
			files = append(files, s.Files...)
		}
	}
	if len(files) > 0 {
		err = &flows.ConflictError{Files: files, Err: err}
	}
	return flows.ExecResult{ExitCode: 1, Err: err, Batch: &b, Undo: undoOf(b)}
}

// undoOf registers each merge of the batch, in the order made, with what
// its revert needs.
func undoOf(b state.Batch) []state.UndoStep {
	var out []state.UndoStep
	for _, s := range b.Steps {
		if s.Result == "merged" && s.MergeSHA != "" {
			out = append(out, state.UndoStep{What: fmt.Sprintf("revert !%d %s -> %s", s.MR, s.Source, s.Target),
				Values: map[string]string{"target": s.Target, "merge_sha": s.MergeSHA, "mr": strconv.FormatInt(s.MR, 10)}})
		}
	}
	return out
}

// release merges the batch's steps: the path (sequentially) for the first
// batch, then the zones (at most MaxConcurrent at once). A conflict stops
// the path; nothing past it is merged.
func (x *Executor) release(ctx context.Context, t state.Ticket, i int, b state.Batch) flows.ExecResult {
	title := t.Title
	source := x.branch(t)
	last := x.cfg.Path[len(x.cfg.Path)-1]
	done := map[string]state.Step{}
	for _, s := range b.Steps {
		done[s.Target] = s
	}
	// The real incident: a branch the batch merges into lacks reverts the
	// branch before it has (not synced after an earlier rollback). Refuse
	// before anything is merged, naming each such branch and its sync MR.
	if msg, err := x.unsynced(ctx, t, b, done); err != nil {
		return fail(b, "检查分支同步失败 · could not check that the branches are synced: %v", err)
	} else if msg != "" {
		return fail(b, "%s", msg)
	}
	var steps []state.Step
	var zones []string
	for _, target := range b.Targets {
		if slices.Contains(x.cfg.Path, target) {
			st := x.merge(ctx, done, source, target, title)
			steps = append(steps, st)
			source = target
			if !succeeded(st) {
				b.Steps = steps
				return fail(b, "%s 合并到 %s 失败，后续未合并；下一步：解决冲突后回滚本批次再取消 · merging %s into %s failed; nothing after it was merged. Next safe step: roll this batch back (or fix the branch), then cancel",
					st.Source, st.Target, st.Source, st.Target)
			}
			continue
		}
		zones = append(zones, target)
	}
	results := make([]state.Step, len(zones))
	sem := make(chan struct{}, x.cfg.MaxConcurrent)
	var wg sync.WaitGroup
	for k, z := range zones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			results[k] = x.merge(ctx, done, last, z, title)
		}()
	}
	wg.Wait()
	steps = append(steps, results...)
	b.Steps = steps
	var bad []string
	for _, s := range results {
		if !succeeded(s) {
			bad = append(bad, s.Target)
		}
	}
	if len(bad) > 0 {
		return fail(b, "%s 合并失败；下一步：回滚本批次 · merging into %s failed. Next safe step: roll this batch back", strings.Join(bad, ", "), strings.Join(bad, ", "))
	}
	return flows.ExecResult{OK: true, Output: fmt.Sprintf("batch %s: %d merges", b.Name, len(steps)), Batch: &b, Undo: undoOf(b)}
}

// unsynced checks, before a batch merges anything, that every branch it
// merges into contains what the branch it merges from had before this
// release: uat's commits in production, production's in each zone. What
// this release brought is left out: a branch it already merged into is
// compared as it was just before that merge (the merge's first parent).
// It returns a refusal naming each unsynced branch with its open sync
// merge request, or "" when every branch is synced.
func (x *Executor) unsynced(ctx context.Context, t state.Ticket, b state.Batch, done map[string]state.Step) (string, error) {
	last := x.cfg.Path[len(x.cfg.Path)-1]
	// What each source branch is compared as, looked up once per source:
	// "" means the pair is not checked.
	refs := map[string]string{}
	refOf := func(src string) (string, error) {
		if r, ok := refs[src]; ok {
			return r, nil
		}
		ref := src
		if st, ok := releaseStep(t, src); ok {
			ref = ""
			if st.Result == "merged" && st.MergeSHA != "" {
				ref = st.MergeSHA + "^1"
			}
		} else if n, err := x.cfg.Client.Ahead(ctx, src, x.branch(t)); err != nil {
			return "", err
		} else if n == 0 {
			// src has this release, but no recorded merge says where it
			// began (a restart between the merge and its record): the
			// check was made before that merge.
			ref = ""
		}
		refs[src] = ref
		return ref, nil
	}
	type pair struct{ src, target, ref string }
	var pairs []pair
	for _, target := range b.Targets {
		if s, ok := done[target]; ok && succeeded(s) {
			continue // resumed: merged before
		}
		src := last
		if k := slices.Index(x.cfg.Path, target); k == 0 {
			continue // merged from the release branch itself
		} else if k > 0 {
			src = x.cfg.Path[k-1]
		}
		ref, err := refOf(src)
		if err != nil {
			return "", err
		}
		if ref != "" {
			pairs = append(pairs, pair{src, target, ref})
		}
	}
	bad := make([]string, len(pairs))
	errs := make([]error, len(pairs))
	check := func(k int) {
		p := pairs[k]
		n, err := x.cfg.Client.Ahead(ctx, p.target, p.ref)
		if err != nil || n == 0 {
			errs[k] = err
			return
		}
		mr := "没有打开的同步 MR · no sync merge request is open: merge " + p.src + " into " + p.target
		if m, err := x.cfg.Client.FindMR(ctx, p.src, p.target); err == nil && m != nil && m.State == "opened" {
			mr = fmt.Sprintf("同步 sync MR !%d %s -> %s (%s)", m.IID, p.src, p.target, m.WebURL)
		}
		bad[k] = fmt.Sprintf("%s 缺少 %s 的 %d 个提交 · %s lacks %d commit(s) of %s: %s", p.target, p.src, n, p.target, n, p.src, mr)
	}
	// The path in turn, then the zones side by side, as they are merged.
	sem := make(chan struct{}, x.cfg.MaxConcurrent)
	var wg sync.WaitGroup
	for k, p := range pairs {
		if slices.Contains(x.cfg.Path, p.target) {
			check(k)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			check(k)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	bad = slices.DeleteFunc(bad, func(s string) bool { return s == "" })
	if len(bad) == 0 {
		return "", nil
	}
	return "发布前这些分支未同步（上次回滚后？）· before this batch merges anything, these branches must be synced (not synced after an earlier rollback?):\n" +
		strings.Join(bad, "\n") + "\n什么都没有合并：合并同步 MR 后再发布本批次 · nothing was merged: merge the sync merge requests, then release this batch again", nil
}

// releaseStep finds the step of any batch that merged the release into
// branch.
func releaseStep(t state.Ticket, branch string) (state.Step, bool) {
	for _, b := range t.Batches {
		for _, s := range b.Steps {
			if s.Target == branch {
				return s, true
			}
		}
	}
	return state.Step{}, false
}

// merge merges source into target unless target already contains it
// (after a restart, the merge made before it); an open merge request is
// reused. Result is "merged", "already" (nothing to merge, nothing to
// revert), "conflict" or "failed".
func (x *Executor) merge(ctx context.Context, done map[string]state.Step, source, target, title string) state.Step {
	st := state.Step{Source: source, Target: target}
	if prev, ok := done[target]; ok && (prev.Result == "merged" || prev.Result == "already") {
		return prev
	}
	n, err := x.cfg.Client.Ahead(ctx, target, source)
	if err != nil {
		st.Result, st.Error = "failed", err.Error()
		return st
	}
	if n == 0 {
		mr, err := x.cfg.Client.FindMR(ctx, source, target)
		if err == nil && mr != nil && mr.State == "merged" {
			st.Result, st.MR, st.MergeSHA = "merged", mr.IID, mr.MergeCommitSHA
		} else {
			st.Result = "already"
		}
		return st
	}
	mr, err := x.cfg.Client.EnsureMR(ctx, source, target, fmt.Sprintf("%s: %s -> %s", title, source, target))
	if err != nil {
		st.Result, st.Error = "failed", err.Error()
		return st
	}
	st.MR = mr.IID
	merged, err := x.cfg.Client.Merge(ctx, mr.IID)
	var ce *gitlab.ConflictError
	switch {
	case errors.As(err, &ce):
		st.Result, st.Files, st.Error = "conflict", ce.Files, "冲突 conflict"
	case err != nil:
		st.Result, st.Error = "failed", err.Error()
	default:
		st.Result, st.MergeSHA = "merged", merged.MergeCommitSHA
	}
	return st
}

func succeeded(s state.Step) bool { return s.Result == "merged" || s.Result == "already" }

// revert reverts the merges the batch's release registered, newest first
// (zones, then production, then uat), one recorded result per merge,
// stopping at the first that fails so nothing below it is touched. A batch
// released before merges were registered is reverted from its steps.
func (x *Executor) revert(ctx context.Context, b state.Batch, undo []state.UndoStep) flows.ExecResult {
	var order []int
	for _, u := range undo {
		k := slices.IndexFunc(b.Steps, func(s state.Step) bool {
			return s.Target == u.Values["target"] && s.MergeSHA == u.Values["merge_sha"]
		})
		if k >= 0 && !slices.Contains(order, k) {
			order = append(order, k)
		}
	}
	if len(undo) == 0 {
		for k := len(b.Steps) - 1; k >= 0; k-- {
			order = append(order, k)
		}
	}
	// Every merge of the batch counts, also those after a failure.
	reverted, total := 0, 0
	for _, k := range order {
		if r := b.Steps[k].Result; r == "reverted" || r == "merged" || r == "revert_failed" {
			total++
		}
	}
	for _, k := range order {
		s := &b.Steps[k]
		if s.Result == "reverted" {
			reverted++
			continue
		}
		if s.Result != "merged" && s.Result != "revert_failed" {
			continue
		}
		if x.alreadyReverted(ctx, *s) {
			// Reverted before a restart: the files are as before the merge.
			s.Result, s.Error = "reverted", ""
			reverted++
			continue
		}
		sha, err := x.cfg.Client.Revert(ctx, s.MergeSHA, s.Target)
		var ce *gitlab.ConflictError
		if err != nil {
			s.Result, s.Error = "revert_failed", err.Error()
			if errors.As(err, &ce) {
				s.Files = ce.Files
			}
			what := "全部失败 nothing was reverted"
			if reverted > 0 {
				what = fmt.Sprintf("部分回滚 partial: %d of %d reverted", reverted, total)
			}
			return fail(b, "%s 上的回滚失败（%s）；下一步：手工检查 %s 的这些文件后重试回滚 · reverting on %s failed (%s). Next safe step: check %v on %s by hand, then roll back again",
				s.Target, what, s.Target, s.Target, what, s.Files, s.Target)
		}
		s.Result, s.Revert, s.Error = "reverted", sha, ""
		reverted++
	}
	return flows.ExecResult{OK: true, Output: fmt.Sprintf("batch %s: %d of %d merges reverted", b.Name, reverted, total), Batch: &b}
}

// alreadyReverted reports whether every file the merge changed is on the
// target as it was before the merge, which makes a resumed rollback skip
// the merges it already reverted.
func (x *Executor) alreadyReverted(ctx context.Context, s state.Step) bool {
	files, err := x.cfg.Client.Changed(ctx, s.MergeSHA+"^1", s.MergeSHA)
	if err != nil || len(files) == 0 {
		return false
	}
	for _, f := range files {
		before, errB := x.cfg.Client.File(ctx, f, s.MergeSHA+"^1")
		now, errN := x.cfg.Client.File(ctx, f, s.Target)
		if (errB == nil) != (errN == nil) || string(before) != string(now) {
			return false
		}
	}
	return true
}

// cleanup runs after a cancel: after any rollback it opens the sync merge
// requests (uat -> production, production -> each released zone) so the
// reverts reach every branch; it deletes the temporary branch.
func (x *Executor) cleanup(ctx context.Context, t state.Ticket) flows.ExecResult {
	var lines []string
	rolled := slices.ContainsFunc(t.Batches, func(b state.Batch) bool { return b.State == state.BatchRolledBack })
	if rolled {
		var zones []string
		for _, b := range t.Batches {
			for _, s := range b.Steps {
				if !slices.Contains(x.cfg.Path, s.Target) && s.Result == "reverted" {
					zones = append(zones, s.Target)
				}
			}
		}
		pairs := [][2]string{}
		for k := 0; k+1 < len(x.cfg.Path); k++ {
			pairs = append(pairs, [2]string{x.cfg.Path[k], x.cfg.Path[k+1]})
		}
		for _, z := range zones {
			pairs = append(pairs, [2]string{x.cfg.Path[len(x.cfg.Path)-1], z})
		}
		for _, p := range pairs {
			n, err := x.cfg.Client.Ahead(ctx, p[1], p[0])
			if err != nil {
				return flows.ExecResult{ExitCode: 1, Err: err, Output: strings.Join(lines, "\n")}
			}
			if n == 0 {
				lines = append(lines, fmt.Sprintf("%s 已包含 %s · %s already has %s", p[1], p[0], p[1], p[0]))
				continue
			}
			mr, err := x.cfg.Client.EnsureMR(ctx, p[0], p[1], fmt.Sprintf("%s: sync %s -> %s after rollback", t.Title, p[0], p[1]))
			if err != nil {
				return flows.ExecResult{ExitCode: 1, Err: err, Output: strings.Join(lines, "\n")}
			}
			lines = append(lines, fmt.Sprintf("同步 sync MR !%d %s -> %s (%s)", mr.IID, p[0], p[1], mr.WebURL))
		}
	}
	if br := x.branch(t); br != "" {
		if err := x.cfg.Client.DeleteBranch(ctx, br); err != nil {
			return flows.ExecResult{ExitCode: 1, Err: err, Output: strings.Join(lines, "\n")}
		}
		lines = append(lines, "已删除临时分支 deleted the temporary branch "+br)
	}
	return flows.ExecResult{OK: true, Output: strings.Join(lines, "\n")}
}

// check shows the diff between the temporary branch and uat and checks
// its Puppetfile, once per head of the branch: a head already checked
// gives the same answer without asking GitLab again.
func (x *Executor) check(ctx context.Context, t state.Ticket) flows.ExecResult {
	br := x.branch(t)
	head, err := x.cfg.Client.Head(ctx, br)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(err)}
	}
	if head == "" {
		return flows.ExecResult{ExitCode: 1, Err: fmt.Errorf("临时分支 %s 不存在 · branch %s does not exist", br, br)}
	}
	if t.Outputs["checked_head"] == head && t.Outputs["check_failed"] != "" {
		return flows.ExecResult{ExitCode: 1, Err: errors.New("分支未变化，仍不通过 · the branch has not moved since the failed check: " + t.Outputs["check_failed"]),
			Set: map[string]string{"checked_head": head}}
	}
	diffs, err := x.cfg.Client.Compare(ctx, x.cfg.Path[0], br)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(err)}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "diff %s...%s @ %.8s: %d files\n", x.cfg.Path[0], br, head, len(diffs))
	for k, d := range diffs {
		if k == 30 {
			fmt.Fprintf(&b, "… %d more files\n", len(diffs)-30)
			break
		}
		add, del := countLines(d.Patch)
		fmt.Fprintf(&b, "%s +%d -%d\n", d.Path, add, del)
	}
	problems := []string{}
	if body, err := x.cfg.Client.File(ctx, "Puppetfile", head); err == nil {
		problems = CheckPuppetfile(string(body))
	}
	set := map[string]string{"checked_head": head, "check_failed": ""}
	if len(problems) > 0 {
		set["check_failed"] = strings.Join(problems, "; ")
		b.WriteString("Puppetfile:\n  " + strings.Join(problems, "\n  "))
		return flows.ExecResult{ExitCode: 1, Err: &flows.UserError{Code: "puppetfile", Message: "Puppetfile 检查未通过 · Puppetfile check failed",
			Hint: "在分支上修正 Puppetfile 后推送，再重试 · fix the Puppetfile on the branch, push, then retry"}, Output: b.String(), Set: set}
	}
	b.WriteString("Puppetfile OK")
	return flows.ExecResult{OK: true, Output: b.String(), Set: set}
}

func countLines(patch string) (add, del int) {
	for _, l := range strings.Split(patch, "\n") {
		switch {
		case strings.HasPrefix(l, "+") && !strings.HasPrefix(l, "+++"):
			add++
		case strings.HasPrefix(l, "-") && !strings.HasPrefix(l, "---"):
			del++
		}
	}
	return add, del
}

var (
	modLine = regexp.MustCompile(`^mod\s+['"]([\w/-]+)['"]\s*(,.*)?$`)
	sha40   = regexp.MustCompile(`^[0-9a-f]{40}$`)
	optRe   = regexp.MustCompile(`:(\w+)\s*=>\s*['"]([^'"]*)['"]`)
)

// CheckPuppetfile checks each `mod` entry: well-formed, and a :git module
// pinned by a 40-hex :commit, a :tag or a :branch.
func CheckPuppetfile(body string) []string {
	var problems []string
	lines := strings.Split(body, "\n")
	for n := 0; n < len(lines); n++ {
		line := strings.TrimSpace(lines[n])
		start := n + 1
		for strings.HasSuffix(line, ",") && n+1 < len(lines) { // an entry continued on the next lines
			n++
			line += " " + strings.TrimSpace(lines[n])
		}
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "forge ") || strings.HasPrefix(line, "moduledir ") {
			continue
		}
		m := modLine.FindStringSubmatch(line)
		if m == nil {
			problems = append(problems, fmt.Sprintf("line %d: not a mod entry: %q", start, line))
			continue
		}
		opts := map[string]string{}
		for _, o := range optRe.FindAllStringSubmatch(m[2], -1) {
			opts[o[1]] = o[2]
		}
		if _, git := opts["git"]; !git {
			continue
		}
		switch {
		case opts["commit"] != "" && !sha40.MatchString(opts["commit"]):
			problems = append(problems, fmt.Sprintf("line %d: mod %s: :commit %q is not a 40-hex sha", start, m[1], opts["commit"]))
		case opts["commit"] == "" && opts["tag"] == "" && opts["branch"] == "":
			problems = append(problems, fmt.Sprintf("line %d: mod %s: a :git module needs :commit, :tag or :branch", start, m[1]))
		}
	}
	return problems
}
