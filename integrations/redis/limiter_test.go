package redis_test

import (
	"context"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/integrations/redis"
	"opsbot/integrations/redis/redistest"
)

func TestLimiterSharesBudgetThroughRedisAndFallsBack(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	client := redis.NewClient(redis.Options{Addr: srv.Addr})
	defer client.Close()
	// Two replicas share one budget of 3 per minute through Redis.
	a := redis.NewLimiter(client, 3, 3, bot.NewLocalLimiter(3, 3), nil)
	b := redis.NewLimiter(client, 3, 3, bot.NewLocalLimiter(3, 3), nil)
	allowed := 0
	for i := 0; i < 3; i++ {
		for _, l := range []*redis.Limiter{a, b} {
			if ok, _ := l.Allow(ctx, "alice"); ok {
				allowed++
			}
		}
	}
	if allowed != 3 {
		t.Fatalf("two replicas allowed %d commands, want the shared 3", allowed)
	}
	if ok, _ := a.Allow(ctx, "bob"); !ok {
		t.Fatalf("bob limited by alice's budget")
	}
	if n, err := client.Exists(ctx, "rate:opsbot:rl:alice").Result(); err != nil || n != 1 {
		t.Fatalf("limiter key not in redis: %d %v", n, err)
	}

	srv.Stop()
	a.SetProbeInterval(50 * time.Millisecond)
	ok, _ := a.Allow(ctx, "carol")
	if !ok || !a.Down() {
		t.Fatalf("with redis down: allowed=%v down=%v; want the local fallback", ok, a.Down())
	}

	srv.Restart()
	client.FlushAll(ctx) // a fresh server; make sure we look at new keys only
	time.Sleep(60 * time.Millisecond)
	if ok, _ := a.Allow(ctx, "carol"); !ok {
		t.Fatal("carol refused after redis came back")
	}
	if a.Down() {
		t.Fatal("limiter did not return to redis")
	}
	if n, _ := client.Exists(ctx, "rate:opsbot:rl:carol").Result(); n != 1 {
		t.Fatal("limiter not writing to redis after reconnect")
	}
}
