package bot

import (
	"context"
	"fmt"
	"os"

	"opsbot/integrations/cleanup"
	"opsbot/state"
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
				ct.Kind, ct.Root, ct.Globs, ct.OlderThan = cleanup.KindLogs, cfg.Resolve(t.Logs.Root), t.Logs.Globs, t.Logs.OlderThan.D()
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
			if cp.From, err = ParseDay(p.From, cfg.ZoneOrUTC()); err != nil {
				return nil, fmt.Errorf("cleanup.protected %s: from %q: %w", p.Env, p.From, err)
			}
		}
		if p.Until != "" {
			if cp.Until, err = ParseDay(p.Until, cfg.ZoneOrUTC()); err != nil {
				return nil, fmt.Errorf("cleanup.protected %s: until %q: %w", p.Env, p.Until, err)
			}
		}
		prot = append(prot, cp)
	}
	return cleanup.New(cleanup.Config{Zone: cfg.ZoneOrUTC(), Envs: envs, Protected: prot, BackupDir: cfg.Resolve(cc.BackupDir),
		ChangeThreshold: cc.ChangeThreshold, Batch: cc.RedisBatch, Now: b.now,
		Freezes: func(ctx context.Context) ([]state.Freeze, error) { return b.store.Freezes(ctx) }}), nil
}
