package redis_test

import (
	"testing"
	"time"

	"opsbot/integrations/redis"
	"opsbot/integrations/redis/redistest"
)

func TestCacheSharesTokensAndExpires(t *testing.T) {
	srv := redistest.Start(t)
	client := redis.NewClient(redis.Options{Addr: srv.Addr})
	defer client.Close()
	a, b := redis.NewCache(client, "opsbot:wecom:"), redis.NewCache(client, "opsbot:wecom:")
	if err := a.Set("gowechat_work__access_token_ww1_1", "tok-1", 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := b.Get("gowechat_work__access_token_ww1_1"); got != "tok-1" || !b.IsExist("gowechat_work__access_token_ww1_1") {
		t.Fatalf("second replica sees %v", got)
	}
	if err := b.Delete("gowechat_work__access_token_ww1_1"); err != nil || a.Get("gowechat_work__access_token_ww1_1") != nil {
		t.Fatal("a dropped token is still cached")
	}
	a.Set("k", "v", 100*time.Millisecond)
	time.Sleep(250 * time.Millisecond)
	if a.Get("k") != nil {
		t.Fatal("cached value outlived its timeout")
	}
	srv.Stop()
	if a.Get("k") != nil || a.IsExist("k") {
		t.Fatal("an unreachable redis must read as a miss")
	}
}
