package bot

import (
	"context"
	"os"

	"github.com/silenceper/wechat/v2/cache"

	"opsbot/bot/wecom"
	"opsbot/integrations/redis"
	"opsbot/templates"
)

func newWeCom(b *Bot) *wecom.Transport {
	cfg := b.cfg.WeCom
	var pace wecom.Pacer = NewLocalLimiter(cfg.PerUserPerMinute, 1)
	var tokens cache.Cache = cache.NewMemory()
	if b.redis != nil {
		pace = redis.NewLimiter(b.redis, cfg.PerUserPerMinute, 1, pace, b.log)
		tokens = redis.NewCache(b.redis, "opsbot:wecom:")
	}
	var robots []wecom.Robot
	for _, r := range cfg.Robots {
		robots = append(robots, wecom.Robot{Flow: r.Flow, Env: r.Env, Key: os.Getenv(r.KeyEnv)})
	}
	return wecom.New(wecom.Config{
		Listen: cfg.Listen, CorpID: cfg.CorpID, AgentID: cfg.AgentID, Secret: os.Getenv(cfg.SecretEnv),
		Token: os.Getenv(cfg.TokenEnv), EncodingAESKey: os.Getenv(cfg.AESKeyEnv), Robots: robots, Cache: tokens, Now: b.now, Timeouts: b.timeouts(),
		ChannelRobots: b.cfg.WeComChannelRobots(),
	}, wecom.Deps{
		Handle: func(ctx context.Context, in wecom.Input) []templates.Message {
			return b.Handle(ctx, Incoming{Platform: "wecom", UserID: in.UserID, Text: in.Text, Click: in.Click, Key: in.Key})
		},
		Act:   b.reg.DecodeAct,
		Cards: platformStore{b.store, "wecom", b.replica},
		Inbox: platformStore{b.store, "wecom", b.replica},
		Scope: func(ctx context.Context, ticket string) (string, string, error) {
			t, err := b.store.Get(ctx, ticket)
			return t.Flow, t.Fields["env"], err
		},
		Pace:   pace,
		Refuse: b.refusals.Refuse,
		Log:    b.log,
	})
}
