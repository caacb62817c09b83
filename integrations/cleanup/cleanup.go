// Package cleanup is the data cleanup (清档) executor: per environment, the
// configured targets (Mongo databases or collections, Redis databases or
// key patterns, log directories with globs and an age filter) are counted
// in a dry run, backed up, wiped and restored. Target names come from the
// configuration only: a ticket names targets, never a database, pattern or
// path. Environments can be protected (refused, or two approvers with the
// environment typed to confirm) and frozen.
package cleanup

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	goredis "github.com/redis/go-redis/v9"

	"opsbot/flows"
	"opsbot/state"
)

// Target kinds.
const (
	KindMongo = "mongo"
	KindRedis = "redis"
	KindLogs  = "logs"
)

// Target is one named thing to wipe in an environment.
type Target struct {
	Name string
	Kind string
	// Mongo: a database, and optionally some of its collections (all of
	// them when empty).
	Database    string
	Collections []string
	// Redis: a database number and key patterns (every key when empty).
	DB       int
	Patterns []string
	// Logs: a root directory, globs inside it (a glob without "/" matches
	// a file name at any depth) and an age filter.
	Root      string
	Globs     []string
	OlderThan time.Duration
}

// Describe says what the target covers, for cards and errors.
func (t Target) Describe() string {
	switch t.Kind {
	case KindMongo:
		if len(t.Collections) == 0 {
			return fmt.Sprintf("mongo %s.*", t.Database)
		}
		return fmt.Sprintf("mongo %s.{%s}", t.Database, strings.Join(t.Collections, ","))
	case KindRedis:
		p := "*"
		if len(t.Patterns) > 0 {
			p = strings.Join(t.Patterns, " ")
		}
		return fmt.Sprintf("redis db%d %s", t.DB, p)
	}
	s := fmt.Sprintf("logs %s/{%s}", t.Root, strings.Join(t.Globs, ","))
	if t.OlderThan > 0 {
		s += " older than " + t.OlderThan.String()
	}
	return s
}

// Env is one environment's connections and targets.
type Env struct {
	Name     string
	Backup   bool // a backup is always taken before the wipe
	MongoURI string
	Redis    RedisConn
	Targets  []Target
}

// RedisConn is how to reach an environment's Redis.
type RedisConn struct {
	Addr     string
	Password string
}

// Target finds a target by name.
func (e Env) Target(name string) (Target, bool) {
	for _, t := range e.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return Target{}, false
}

// Names lists the environment's target names.
func (e Env) Names() []string {
	var out []string
	for _, t := range e.Targets {
		out = append(out, t.Name)
	}
	return out
}

// Protection modes.
const (
	ModeRefuse       = "refuse"
	ModeTwoApprovers = "two_approvers"
)

// Protection protects an environment, always or between two dates.
type Protection struct {
	Env    string
	Mode   string
	From   time.Time // zero: no start
	Until  time.Time // zero: no end
	Reason string
}

// Active reports whether the protection applies at now.
func (p Protection) Active(now time.Time) bool {
	return (p.From.IsZero() || !now.Before(p.From)) && (p.Until.IsZero() || now.Before(p.Until))
}

// Config configures the executor.
type Config struct {
	// Zone is the time zone people read times in (nil: UTC).
	Zone      *time.Location
	Envs      map[string]Env
	Protected []Protection
	// BackupDir holds the backups: BackupDir/<ticket>/<plan>/<target>/.
	BackupDir string
	// ChangeThreshold is how much a target may have changed (as a share of
	// the dry run's count) before the wipe stops and asks again.
	ChangeThreshold float64
	// Batch is the SCAN COUNT and UNLINK batch size for Redis.
	Batch int
	// Freezes reads the /ops freeze records.
	Freezes func(ctx context.Context) ([]state.Freeze, error)
	Now     func() time.Time
}

// Executor is the "cleanup" executor.
type Executor struct {
	cfg Config

	mu     sync.Mutex
	mongos map[string]*mongo.Client
	redis  map[string]*goredis.Client
}

// New returns the executor.
func New(cfg Config) *Executor {
	if cfg.ChangeThreshold <= 0 {
		cfg.ChangeThreshold = 0.2
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Executor{cfg: cfg, mongos: map[string]*mongo.Client{}, redis: map[string]*goredis.Client{}}
}

// Close disconnects the clients.
func (x *Executor) Close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, c := range x.mongos {
		_ = c.Disconnect(context.Background())
	}
	for _, c := range x.redis {
		_ = c.Close()
	}
}

func (x *Executor) mongoClient(env Env) (*mongo.Client, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if c := x.mongos[env.Name]; c != nil {
		return c, nil
	}
	if env.MongoURI == "" {
		return nil, fmt.Errorf("env %s has Mongo targets but no Mongo URI (cleanup.envs.%s.mongo_uri_env)", env.Name, env.Name)
	}
	c, err := mongo.Connect(options.Client().ApplyURI(env.MongoURI).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return nil, err
	}
	x.mongos[env.Name] = c
	return c, nil
}

func (x *Executor) redisClient(env Env, db int) *goredis.Client {
	x.mu.Lock()
	defer x.mu.Unlock()
	key := fmt.Sprintf("%s/%d", env.Name, db)
	if c := x.redis[key]; c != nil {
		return c
	}
	c := goredis.NewClient(&goredis.Options{Addr: env.Redis.Addr, Password: env.Redis.Password, DB: db})
	x.redis[key] = c
	return c
}

// Count is what a dry run found for one item of a target.
type Count struct {
	What  string `json:"what"`
	N     int64  `json:"n"`
	Bytes int64  `json:"bytes,omitempty"`
}

// TargetPlan is a target's dry run.
type TargetPlan struct {
	Target string  `json:"target"`
	Kind   string  `json:"kind"`
	Items  []Count `json:"items"`
}

func unit(kind string) string {
	switch kind {
	case KindMongo:
		return "docs"
	case KindRedis:
		return "keys"
	}
	return "files"
}

// Line describes a target's plan in one line.
func (p TargetPlan) Line() string {
	var parts []string
	for _, c := range p.Items {
		s := fmt.Sprintf("%s %d %s", c.What, c.N, unit(p.Kind))
		if p.Kind == KindLogs {
			s += fmt.Sprintf(" (%s)", humanBytes(c.Bytes))
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing")
	}
	return p.Target + ": " + strings.Join(parts, ", ")
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Env returns an environment's configuration.
func (x *Executor) Env(name string) (Env, bool) {
	e, ok := x.cfg.Envs[name]
	return e, ok
}

// Envs lists the configured environments.
func (x *Executor) Envs() []string {
	var out []string
	for k := range x.cfg.Envs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Guard says how an environment is protected now: refused (with why),
// or needing two approvers, or free.
type Guard struct {
	Refused string
	Two     bool
	Reason  string
}

// cleanupFlow is what freezes match a cleanup by: its flow name and env.
var cleanupFlow = &flows.Flow{Name: "cleanup"}

// Guard checks the configured protections of env and, for a ticket about
// to wipe, the freezes over it (a ticket let through a freeze as an
// approved exception passes it). At submission t is nil: the engine has
// checked the freezes, exceptions included.
func (x *Executor) Guard(ctx context.Context, env string, t *state.Ticket) (Guard, error) {
	now := x.cfg.Now()
	if x.cfg.Freezes != nil && t != nil {
		fs, err := x.cfg.Freezes(ctx)
		if err != nil {
			return Guard{}, err
		}
		tk := *t
		tk.Fields = map[string]string{"env": env}
		if f, end, ok := flows.Frozen(state.Calendar{Freezes: fs}, cleanupFlow, tk, now); ok {
			return Guard{Refused: fmt.Sprintf("%s 已冻结至 %s（%s，由 %s 设置）· %s is frozen until %s: %s (set by %s). Cleanup is refused; /ops unfreeze %s lifts it",
				env, x.day(end), f.Reason, f.By, env, x.day(end), f.Reason, f.By, f.ID)}, nil
		}
	}
	var g Guard
	for _, p := range x.cfg.Protected {
		if p.Env != env || !p.Active(now) {
			continue
		}
		window := ""
		if !p.Until.IsZero() {
			window = " until " + x.day(p.Until)
		}
		if p.Mode == ModeRefuse {
			return Guard{Refused: fmt.Sprintf("%s 是受保护环境，禁止清档 · %s is protected%s (%s): cleanup is refused", env, env, window, p.Reason)}, nil
		}
		g.Two, g.Reason = true, fmt.Sprintf("%s is protected%s (%s)", env, window, p.Reason)
	}
	return g, nil
}

// day shows a time in the configured zone, with the zone named.
func (x *Executor) day(t time.Time) string {
	loc := x.cfg.Zone
	if loc == nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

// Run implements flows.Executor.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	f := in.Ticket.Fields
	env, ok := x.cfg.Envs[f["env"]]
	if !ok {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("env %s is not configured for cleanup", f["env"])}
	}
	var targets []Target
	for _, name := range splitList(f["targets"]) {
		t, ok := env.Target(name)
		if !ok {
			return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("target %s is not configured in env %s", name, env.Name)}
		}
		targets = append(targets, t)
	}
	if in.Kind == "undo" {
		return x.restore(ctx, in, env)
	}
	switch in.Params["op"] {
	case "dry_run":
		return x.dryRun(ctx, in, env, targets)
	case "backup":
		return x.backup(ctx, in, env, targets)
	case "wipe":
		return x.wipe(ctx, in, env, targets)
	}
	return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("cleanup executor: unknown op %q (dry_run, backup or wipe)", in.Params["op"])}
}

// writeBackup creates path (never over an existing file), lets write fill
// it through a buffer, and syncs it to disk before closing it.
func writeBackup(path string, write func(w io.Writer) error) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, step := range []func() error{func() error { return write(w) }, w.Flush, f.Sync} {
		if err := step(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// backend does the four operations on one kind of target.
type backend interface {
	count(ctx context.Context, t Target) ([]Count, error)
	wipe(ctx context.Context, t Target) ([]Count, error)
	backup(ctx context.Context, t Target, dir string) (int64, error)
	restore(ctx context.Context, t Target, dir string) (int64, error)
}

func (x *Executor) backend(env Env, t Target) backend {
	switch t.Kind {
	case KindMongo:
		return mongoBackend{x, env}
	case KindRedis:
		return redisBackend{x, env}
	}
	return logsBackend{now: x.cfg.Now()}
}

func total(counts []Count) int64 {
	var n int64
	for _, c := range counts {
		n += c.N
	}
	return n
}

// count counts one target.
func (x *Executor) count(ctx context.Context, env Env, t Target) (TargetPlan, error) {
	items, err := x.backend(env, t).count(ctx, t)
	return TargetPlan{Target: t.Name, Kind: t.Kind, Items: items}, err
}

func (x *Executor) dryRun(ctx context.Context, in flows.ExecInput, env Env, targets []Target) flows.ExecResult {
	var plans []TargetPlan
	var lines []string
	for _, t := range targets {
		p, err := x.count(ctx, env, t)
		if err != nil {
			return flows.ExecResult{ExitCode: -1, Err: flows.Transient(fmt.Errorf("试运行失败 dry run of %s (%s): %w", t.Name, t.Describe(), err))}
		}
		plans = append(plans, p)
		lines = append(lines, p.Line())
	}
	raw, _ := json.Marshal(plans)
	planID := fmt.Sprintf("p%d", x.cfg.Now().UnixMilli())
	return flows.ExecResult{OK: true, Output: "试运行 dry run:\n" + strings.Join(lines, "\n"),
		Set: map[string]string{"plan": strings.Join(lines, "\n"), "plan_json": string(raw), "plan_id": planID, "wiped": "", "backed_up": ""}}
}

func planOf(t state.Ticket) (map[string]TargetPlan, error) {
	var plans []TargetPlan
	if err := json.Unmarshal([]byte(t.Outputs["plan_json"]), &plans); err != nil {
		return nil, fmt.Errorf("the ticket has no dry run plan: %w", err)
	}
	out := map[string]TargetPlan{}
	for _, p := range plans {
		out[p.Target] = p
	}
	return out, nil
}

// changed compares a recount with the plan; it returns what moved beyond
// the threshold, one line per target.
func (x *Executor) changed(planned, now TargetPlan) string {
	p, n := total(planned.Items), total(now.Items)
	if p == n {
		return ""
	}
	var share float64
	if p == 0 {
		share = math.Inf(1)
	} else {
		share = math.Abs(float64(n-p)) / float64(p)
	}
	if share <= x.cfg.ChangeThreshold {
		return ""
	}
	pct := "new"
	if !math.IsInf(share, 1) {
		pct = fmt.Sprintf("%+.0f%%", float64(n-p)*100/float64(p))
	}
	return fmt.Sprintf("%s: %d → %d %s (%s)", planned.Target, p, n, unit(planned.Kind), pct)
}

func (x *Executor) backupDir(in flows.ExecInput) string {
	return filepath.Join(x.cfg.BackupDir, in.Ticket.ID, in.Ticket.Outputs["plan_id"])
}

func (x *Executor) backup(ctx context.Context, in flows.ExecInput, env Env, targets []Target) flows.ExecResult {
	done := splitList(in.Ticket.Outputs["backed_up"])
	dir := x.backupDir(in)
	var lines, failed []string
	var audit []flows.AuditLine
	for _, t := range targets {
		if slices.Contains(done, t.Name) {
			lines = append(lines, fmt.Sprintf("%s: 已备份 backed up before", t.Name))
			continue
		}
		// A backup interrupted earlier is started again from nothing.
		tdir := filepath.Join(dir, t.Name)
		err := os.RemoveAll(tdir)
		if err == nil {
			err = os.MkdirAll(tdir, 0o700)
		}
		var n int64
		if err == nil {
			n, err = x.backend(env, t).backup(ctx, t, tdir)
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", t.Name, err))
			lines = append(lines, fmt.Sprintf("❌ %s: 备份失败 backup failed: %v", t.Name, err))
			audit = append(audit, flows.AuditLine{Text: fmt.Sprintf("backup %s: %v", t.Name, err), Failed: true})
			continue
		}
		done = append(done, t.Name)
		line := fmt.Sprintf("%s: 已备份 backed up %d %s to %s", t.Name, n, unit(t.Kind), tdir)
		lines = append(lines, line)
		audit = append(audit, flows.AuditLine{Text: "backup " + line})
	}
	backups := splitList(in.Ticket.Outputs["backups"])
	if !slices.Contains(backups, dir) && len(done) > 0 {
		backups = append(backups, dir)
	}
	res := flows.ExecResult{OK: len(failed) == 0, Output: strings.Join(lines, "\n"), Audit: audit,
		Set: map[string]string{"backed_up": strings.Join(done, ","), "backups": strings.Join(backups, ",")}}
	if len(failed) > 0 {
		res.ExitCode = 1
		res.Err = fmt.Errorf("%d 个目标备份失败，重试只处理失败的目标 · %d target(s) failed to back up (a retry does only those): %s",
			len(failed), len(failed), strings.Join(failed, "; "))
	}
	return res
}

func (x *Executor) wipe(ctx context.Context, in flows.ExecInput, env Env, targets []Target) flows.ExecResult {
	// A freeze or protection that began after approval still stops it.
	g, err := x.Guard(ctx, env.Name, &in.Ticket)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(err)}
	}
	if g.Refused != "" {
		return flows.ExecResult{ExitCode: -1, Err: errors.New(g.Refused)}
	}
	plan, err := planOf(in.Ticket)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: err}
	}
	done := splitList(in.Ticket.Outputs["wiped"])
	var todo []Target
	var moved []string
	for _, t := range targets {
		if slices.Contains(done, t.Name) {
			continue
		}
		now, err := x.count(ctx, env, t)
		if err != nil {
			return flows.ExecResult{ExitCode: -1, Err: flows.Transient(fmt.Errorf("recount of %s: %w", t.Name, err))}
		}
		if c := x.changed(plan[t.Name], now); c != "" {
			moved = append(moved, c)
		}
		todo = append(todo, t)
	}
	if len(moved) > 0 {
		return flows.ExecResult{Redo: true, ExitCode: 1, Output: strings.Join(moved, "\n"),
			Err: fmt.Errorf("数据在试运行后变化超过 %.0f%%，已停止清档并重新试运行、重新审批 · changed by more than %.0f%% since the dry run, so nothing was wiped; a new dry run and approval follow: %s",
				x.cfg.ChangeThreshold*100, x.cfg.ChangeThreshold*100, strings.Join(moved, "; ")),
			Audit: []flows.AuditLine{{Text: "wipe stopped, plan out of date: " + strings.Join(moved, "; "), Failed: true}}}
	}
	var lines, failed []string
	var audit []flows.AuditLine
	for _, t := range todo {
		items, err := x.backend(env, t).wipe(ctx, t)
		p := TargetPlan{Target: t.Name, Kind: t.Kind, Items: items}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", t.Name, err))
			lines = append(lines, fmt.Sprintf("❌ %s 失败 failed after deleting %s", t.Name, strings.TrimPrefix(p.Line(), t.Name+": ")))
			audit = append(audit, flows.AuditLine{Text: fmt.Sprintf("wipe %s failed: %v; deleted %s", t.Name, err, p.Line()), Failed: true})
			continue
		}
		done = append(done, t.Name)
		lines = append(lines, "🧹 已删除 deleted "+p.Line())
		audit = append(audit, flows.AuditLine{Text: "wipe " + p.Line()})
	}
	res := flows.ExecResult{OK: len(failed) == 0, Output: strings.Join(lines, "\n"), Audit: audit,
		Set: map[string]string{"wiped": strings.Join(done, ",")}}
	if len(failed) > 0 {
		res.ExitCode = 1
		res.Err = fmt.Errorf("%d 个目标清理失败，重试只处理失败的目标 · %d target(s) failed (a retry does only those): %s",
			len(failed), len(failed), strings.Join(failed, "; "))
	}
	return res
}

func (x *Executor) restore(ctx context.Context, in flows.ExecInput, env Env) flows.ExecResult {
	backups := splitList(in.Ticket.Outputs["backups"])
	if len(backups) == 0 {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s 没有备份，无法恢复 · no backup was taken for %s: nothing to restore", in.Ticket.ID, in.Ticket.ID)}
	}
	var lines, failed []string
	var audit []flows.AuditLine
	for _, dir := range backups { // oldest first: newer backups win
		entries, err := os.ReadDir(dir)
		if err != nil {
			failed = append(failed, err.Error())
			continue
		}
		for _, e := range entries {
			t, ok := env.Target(e.Name())
			if !ok || !e.IsDir() {
				continue
			}
			tdir := filepath.Join(dir, e.Name())
			n, err := x.backend(env, t).restore(ctx, t, tdir)
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s: %v", t.Name, err))
				audit = append(audit, flows.AuditLine{Text: fmt.Sprintf("restore %s from %s: %v", t.Name, tdir, err), Failed: true})
				continue
			}
			line := fmt.Sprintf("%s: 已恢复 restored %d %s from %s", t.Name, n, unit(t.Kind), tdir)
			lines = append(lines, line)
			audit = append(audit, flows.AuditLine{Text: "restore " + line})
		}
	}
	res := flows.ExecResult{OK: len(failed) == 0, Output: strings.Join(lines, "\n"), Audit: audit}
	if len(failed) > 0 {
		res.ExitCode, res.Err = 1, errors.New("恢复失败 restore failed: "+strings.Join(failed, "; "))
	}
	return res
}
