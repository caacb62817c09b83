package bot

import (
	"context"
	"opsbot/present"
	"os"

	"opsbot/bot/slack"
	"opsbot/integrations/redis"
	"opsbot/templates"
)

func slackInput(in slack.Input) Incoming {
	return Incoming{Platform: "slack", UserID: in.UserID, Name: in.Name, Email: in.Email, Text: in.Text, Click: in.Click, Key: in.Key}
}

func newSlack(b *Bot) *slack.Transport {
	cfg := b.cfg.Slack
	var pace slack.Pacer = NewLocalLimiter(cfg.PerChannelPerMinute, 1)
	if b.redis != nil {
		pace = redis.NewLimiter(b.redis, cfg.PerChannelPerMinute, 1, pace, b.log)
	}
	return slack.New(slack.Config{
		Mode: cfg.Mode, Listen: cfg.Listen, APIURL: cfg.APIURL, Now: b.now, Channels: b.cfg.SlackChannels(), Timeouts: b.timeouts(),
		BotToken: os.Getenv(cfg.BotTokenEnv), SigningSecret: os.Getenv(cfg.SigningSecretEnv), AppToken: os.Getenv(cfg.AppTokenEnv),
	}, slack.Deps{
		Handle:  func(ctx context.Context, in slack.Input) []templates.Message { return b.Handle(ctx, slackInput(in)) },
		Command: b.reg.Command,
		Act:     b.reg.DecodeAct,
		Form: func(flow string) (templates.Form, bool) {
			f, ok := b.engine.Flow(flow)
			if !ok {
				return templates.Form{}, false
			}
			return present.Form(f), true
		},
		Submit: func(ctx context.Context, in slack.Input, flow string, fields map[string]string) ([]templates.Message, map[string]string) {
			return b.Submit(ctx, slackInput(in), flow, fields)
		},
		Mention: func(name string) string {
			if u, ok := b.dir.User(name); ok && u.IDs["slack"] != "" && u.Name == name {
				return "<@" + u.IDs["slack"] + ">"
			}
			return ""
		},
		Cards:  platformStore{b.store, "slack", b.replica},
		Inbox:  platformStore{b.store, "slack", b.replica},
		Pace:   pace,
		Refuse: b.refusals.Refuse,
		Log:    b.log,
	})
}
