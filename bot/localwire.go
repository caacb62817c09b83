package bot

import (
	"context"

	"opsbot/bot/local"
	"opsbot/state"
	"opsbot/templates"
)

func newLocal(b *Bot) *local.Transport {
	return local.New(local.Config{
		Redact: b.redact.Redact,
		Name: func(s string) (string, error) {
			n := state.NormName(s)
			return n, state.CheckName("user", n)
		},
		Handle: func(ctx context.Context, user, text string, click bool) []templates.Message {
			return b.Handle(ctx, Incoming{Platform: "local", UserID: user, Name: user, Text: text, Click: click})
		},
		Users: func() []local.User {
			var out []local.User
			for _, u := range b.dir.Users() {
				out = append(out, local.User{Name: u.Name, Display: u.Display, Roles: u.Roles})
			}
			return out
		},
	})
}
