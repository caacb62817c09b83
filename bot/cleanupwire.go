package bot

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"opsbot/commands"
	"opsbot/flows"
	"opsbot/integrations/cleanup"
	"opsbot/state"
	"opsbot/templates"
)

// newCleanup builds the cleanup executor from the configuration.
func newCleanup(b *Bot, cfg *Config) (*cleanup.Executor, error) {
	cc := cfg.Cleanup
	envs := map[string]cleanup.Env{}
	for name, e := range cc.Envs {
		env := cleanup.Env{Name: name, Backup: e.Backup, MongoURI: os.Getenv(e.MongoURIEnv),
			Redis: cleanup.RedisConn{Addr: e.Redis.Addr, Password: os.Getenv(e.Redis.PasswordEnv)}}
		for _, t := range e.Targets {
			ct := cleanup.Target{Name: t.Name}
			switch {
			case t.Mongo != nil:
				ct.Kind, ct.Database, ct.Collections = cleanup.KindMongo, t.Mongo.Database, t.Mongo.Collections
			case t.Redis != nil:
				ct.Kind, ct.DB, ct.Patterns = cleanup.KindRedis, t.Redis.DB, t.Redis.Patterns
			case t.Logs != nil:
				ct.Kind, ct.Root, ct.Globs, ct.OlderThan = cleanup.KindLogs, t.Logs.Root, t.Logs.Globs, t.Logs.OlderThan.D()
			default:
				return nil, fmt.Errorf("cleanup.envs.%s: target %s names no mongo, redis or logs", name, t.Name)
			}
			env.Targets = append(env.Targets, ct)
		}
		envs[name] = env
	}
	var prot []cleanup.Protection
	for _, p := range cc.Protected {
		cp := cleanup.Protection{Env: p.Env, Mode: p.Mode, Reason: p.Reason}
		var err error
		if p.From != "" {
			if cp.From, err = ParseDay(p.From); err != nil {
				return nil, fmt.Errorf("cleanup.protected %s: from %q: %w", p.Env, p.From, err)
			}
		}
		if p.Until != "" {
			if cp.Until, err = ParseDay(p.Until); err != nil {
				return nil, fmt.Errorf("cleanup.protected %s: until %q: %w", p.Env, p.Until, err)
			}
		}
		prot = append(prot, cp)
	}
	return cleanup.New(cleanup.Config{Envs: envs, Protected: prot, BackupDir: cfg.Resolve(cc.BackupDir),
		ChangeThreshold: cc.ChangeThreshold, Batch: cc.RedisBatch, Now: b.now,
		Freezes: func(ctx context.Context) ([]state.Freeze, error) { return b.store.Freezes(ctx) }}), nil
}

// freeze answers /ops freeze and /ops unfreeze.
func (b *Bot) freeze(ctx context.Context, u state.User, r commands.Freeze) ([]templates.Message, error) {
	if r.Op == "list" {
		fs, err := b.store.Freezes(ctx)
		if err != nil {
			return nil, err
		}
		var lines []string
		for _, f := range fs {
			state := "生效 active"
			if !b.now().Before(f.Until) {
				state = "已过期 expired"
			}
			lines = append(lines, fmt.Sprintf("%s until %s (%s): %s · by %s", f.Env, f.Until.In(cst).Format("2006-01-02 15:04"), state, f.Reason, f.By))
		}
		if len(lines) == 0 {
			return []templates.Message{info("info", "没有冻结 no freezes", "")}, nil
		}
		return []templates.Message{info("info", fmt.Sprintf("冻结 Freezes: %d", len(lines)), strings.Join(lines, "\n"))}, nil
	}
	roles := append(slices.Clone(b.cfg.Cleanup.FreezeRoles), flows.AdminRole)
	if !b.dir.HasRole(u.Name, roles...) {
		return nil, flows.Userf("not_role_holder", "可操作 can freeze: "+strings.Join(b.dir.Members(roles...), ", "),
			"只有 %s 可以冻结或解冻环境 · only holders of %s can freeze or unfreeze an environment", strings.Join(roles, "/"), strings.Join(roles, ", "))
	}
	if b.cleanup == nil {
		return nil, flows.Userf("not_configured", "", "未配置清档 · data cleanup is not configured (cleanup: in the config)")
	}
	if _, ok := b.cleanup.Env(r.Env); !ok {
		return nil, flows.Userf("bad_fields", "例 e.g. /ops freeze env=tdev until=2026-05-09 reason=...",
			"env %s 不是清档环境 · env %s is not a cleanup environment: one of %s", r.Env, r.Env, strings.Join(b.cleanup.Envs(), ", "))
	}
	if r.Op == "lift" {
		f, ok, err := b.store.DeleteFreeze(ctx, r.Env)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, flows.Userf("not_frozen", "/ops freeze list", "%s 没有冻结 · %s is not frozen", r.Env, r.Env)
		}
		return []templates.Message{info("success", fmt.Sprintf("🔓 已解冻 %s · %s unfrozen (was: %s, until %s)", r.Env, r.Env, f.Reason, f.Until.In(cst).Format("2006-01-02")), "")}, nil
	}
	until, err := ParseDay(r.Until)
	if err != nil {
		return nil, flows.Userf("bad_fields", "例 e.g. until=2026-05-09 or until=\"2026-05-09 20:00\"", "until=%q 不是日期 · until=%q is not a date", r.Until, r.Until)
	}
	if !until.After(b.now()) {
		return nil, flows.Userf("bad_fields", "", "until=%s 已经过去 · until=%s is in the past", r.Until, r.Until)
	}
	f := state.Freeze{Env: r.Env, Until: until, Reason: b.redact.Redact(r.Reason), By: u.Name, At: b.now()}
	if err := b.store.PutFreeze(ctx, f); err != nil {
		return nil, err
	}
	return []templates.Message{info("success", fmt.Sprintf("🧊 已冻结 %s 至 %s · %s frozen until %s: %s", r.Env, until.In(cst).Format("2006-01-02 15:04"), r.Env, until.In(cst).Format("2006-01-02 15:04"), f.Reason),
		"清档将被拒绝 cleanup tickets are refused; /ops unfreeze env="+r.Env)}, nil
}

var cst = time.FixedZone("CST", 8*3600)
