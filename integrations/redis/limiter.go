// Package redis holds opsbot's Redis integrations: a shared per-user rate
// limiter on redis_rate that falls back to a local limiter while Redis is
// unreachable and returns to Redis by itself when it is back.
package redis

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"
)

// Options connects to Redis.
type Options struct {
	Addr     string
	Password string
	DB       int
}

// NewClient returns a go-redis client with short timeouts, so that a dead
// Redis costs a command milliseconds, not seconds. It does not connect
// until used, so the bot starts even when Redis is down.
func NewClient(o Options) *goredis.Client {
	return goredis.NewClient(&goredis.Options{
		Addr: o.Addr, Password: o.Password, DB: o.DB,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond,
		MaxRetries: -1, PoolSize: 16,
	})
}

// SetLogger sends go-redis's own messages (dial failures while Redis is
// down, which the limiter already reports once) to log at debug level.
func SetLogger(log *slog.Logger) { goredis.SetLogger(logAdapter{log}) }

type logAdapter struct{ log *slog.Logger }

func (a logAdapter) Printf(ctx context.Context, format string, v ...any) {
	a.log.Debug("go-redis: " + fmt.Sprintf(format, v...))
}

// Fallback is the limiter used while Redis is unreachable.
type Fallback interface {
	Allow(ctx context.Context, key string) (bool, time.Duration)
}

// Limiter is a per-key rate limiter shared by every bot replica through
// Redis.
type Limiter struct {
	rl       *redis_rate.Limiter
	limit    redis_rate.Limit
	fallback Fallback
	log      *slog.Logger
	// After a failure, Redis is skipped until retryAt, then tried again.
	mu      sync.Mutex
	down    bool
	retryAt time.Time
	probe   time.Duration
}

// NewLimiter allows perMinute commands per key with bursts of burst.
func NewLimiter(client *goredis.Client, perMinute, burst int, fallback Fallback, log *slog.Logger) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Limiter{rl: redis_rate.NewLimiter(client), fallback: fallback, log: log, probe: time.Second,
		limit: redis_rate.Limit{Rate: perMinute, Burst: burst, Period: time.Minute}}
}

// Allow implements the bot's Limiter: Redis when it answers, the local
// fallback otherwise.
func (l *Limiter) Allow(ctx context.Context, key string) (bool, time.Duration) {
	l.mu.Lock()
	skip := l.down && time.Now().Before(l.retryAt)
	l.mu.Unlock()
	if !skip {
		res, err := l.rl.Allow(ctx, "opsbot:rl:"+key, l.limit)
		l.mu.Lock()
		if err != nil {
			if !l.down {
				l.log.Warn("redis unreachable: rate limiting locally until it is back", "err", err)
			}
			l.down, l.retryAt = true, time.Now().Add(l.probe)
		} else if l.down {
			l.down = false
			l.log.Info("redis is back: rate limiting through redis again")
		}
		l.mu.Unlock()
		if err == nil {
			return res.Allowed > 0, res.RetryAfter
		}
	}
	return l.fallback.Allow(ctx, key)
}

// Down reports whether the limiter is on its fallback now.
func (l *Limiter) Down() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down
}

// SetProbeInterval sets how long Redis is skipped after a failure.
func (l *Limiter) SetProbeInterval(d time.Duration) { l.probe = d }
