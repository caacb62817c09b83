package bot

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Limiter decides whether a user may run another command now.
type Limiter interface {
	// Allow reports whether key may proceed and, if not, how long to wait.
	Allow(ctx context.Context, key string) (bool, time.Duration)
}

// LocalLimiter is an in-process token bucket per key.
type LocalLimiter struct {
	perMinute, burst int
	mu               sync.Mutex
	buckets          map[string]*rate.Limiter
}

// NewLocalLimiter allows perMinute commands per key with bursts of burst.
func NewLocalLimiter(perMinute, burst int) *LocalLimiter {
	return &LocalLimiter{perMinute: perMinute, burst: burst, buckets: map[string]*rate.Limiter{}}
}

// Allow implements Limiter.
func (l *LocalLimiter) Allow(ctx context.Context, key string) (bool, time.Duration) {
	l.mu.Lock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) > 100000 {
			l.buckets = map[string]*rate.Limiter{} // bound memory; limits restart
		}
		b = rate.NewLimiter(rate.Limit(float64(l.perMinute)/60), l.burst)
		l.buckets[key] = b
	}
	l.mu.Unlock()
	r := b.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return false, d
	}
	return true, 0
}
