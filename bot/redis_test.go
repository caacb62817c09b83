package bot_test

import (
	"fmt"
	"strings"
	"testing"

	"opsbot/bot/bottest"
	"opsbot/integrations/redis"
	"opsbot/integrations/redis/redistest"
)

func TestRateLimitRefusesWithAClearMessage(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML("rate_limit: {per_minute: 2, burst: 2}"))
	k.Say("alice", "/ops help")
	k.Say("alice", "/ops help")
	r := k.Say("alice", "/ops help")
	mustContain(t, bottest.Title(r), "too many commands: try again in")
	// Another user has their own budget.
	mustContain(t, bottest.Title(k.Say("bob", "/ops help")), "opsbot 帮助 Help")
}

func TestRedisStoppedMidTestCommandsStillServed(t *testing.T) {
	srv := redistest.Start(t)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("redis: {addr: %q}\nrate_limit: {per_minute: 1000, burst: 100}", srv.Addr)))
	lim := k.Bot.Limiter().(*redis.Limiter)
	lim.SetProbeInterval(0)
	mustContain(t, bottest.Title(k.Say("alice", "/ops help")), "Help")
	if lim.Down() {
		t.Fatal("limiter down with redis up")
	}
	srv.Stop()
	r := k.Say("alice", goliveNew)
	mustContain(t, bottest.Title(r), "T-1 submitted")
	if !lim.Down() {
		t.Fatal("limiter did not notice redis is down")
	}
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-1")), "T-1 approve")
	if !strings.Contains(k.LogText(), "redis unreachable") {
		t.Fatal("redis outage not logged")
	}
	srv.Restart()
	mustContain(t, bottest.Title(k.Say("alice", "/ops show T-1")), "T-1")
	if lim.Down() {
		t.Fatal("limiter did not reconnect to redis")
	}
}

func TestBotStartsWithRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop()
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf("redis: {addr: %q}", srv.Addr)))
	mustContain(t, bottest.Title(k.Say("alice", goliveNew)), "T-1 submitted")
}
