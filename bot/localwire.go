package bot

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"opsbot/bot/endpoint"
	"opsbot/bot/local"
	"opsbot/commands"
	"opsbot/present"
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
		Handle: func(ctx context.Context, in local.Input) []templates.Message {
			return b.Handle(ctx, Incoming{Platform: "local", UserID: in.User, Name: in.User, Text: in.Text, Click: in.Click, Key: in.Key})
		},
		Users: func() []local.User {
			var out []local.User
			for _, u := range b.dir.Users() {
				out = append(out, local.User{Name: u.Name, Display: u.Display, Roles: u.Roles})
			}
			return out
		},
		History:  b.chatHistory(),
		Waiting:  b.Waiting,
		Channels: b.channelNames,
		Buttons:  b.buttonsFor,
		MaxText:  commands.MaxInput,
		Warn:     func(msg string, err error) { b.log.Warn(msg, "err", err) },
		Refuse: func(ctx context.Context, remote, action, class, reason string) {
			b.refusals.Refuse(ctx, endpoint.Refusal{Platform: "local", Remote: remote, Action: action, Class: class, Reason: reason})
		},
	})
}

// buttonsFor are the buttons user may press on the ticket now.
func (b *Bot) buttonsFor(ctx context.Context, user, id string) ([]templates.Button, bool) {
	t, err := b.store.Get(ctx, id)
	if err != nil {
		return nil, false
	}
	f, ok := b.engine.Flow(t.Flow)
	if !ok {
		return nil, false
	}
	return present.ButtonsFor(t, b.engine.OffersFor(f, t, user)), true
}

// channelNames are the team channels the configuration names.
func (b *Bot) channelNames() []string {
	var out []string
	for name := range b.cfg.Channels {
		out = append(out, name)
	}
	if w := b.cfg.Clusters.WarnChannel; w != "" {
		out = append(out, w)
	}
	return out
}

// chatHistory keeps the local chat's pages across restarts in the state
// file. With replicas (etcd) each process's local page is its own, so it
// is kept in memory only: the local chat is a development transport, and
// replicas serve people through Slack or WeCom.
func (b *Bot) chatHistory() local.History {
	if b.store.Backend() != "bbolt" {
		return nil
	}
	return chatHistory{b.store, b.log}
}

// chatHistory keeps the local chat's inboxes in the state file.
type chatHistory struct {
	store *state.Store
	log   *slog.Logger
}

func (h chatHistory) Load(ctx context.Context) ([]local.Stored, error) {
	recs, lost, err := h.store.ChatLog(ctx)
	if err != nil {
		return nil, err
	}
	if lost > 0 {
		h.log.Warn("local chat history sealed with another state key was skipped", "entries", lost)
	}
	out := make([]local.Stored, 0, len(recs))
	for _, r := range recs {
		var e local.Entry
		if err := json.Unmarshal(r.Data, &e); err != nil {
			return nil, fmt.Errorf("chat history entry %d of %s: %w", r.ID, r.Box, err)
		}
		out = append(out, local.Stored{Box: r.Box, Entry: e})
	}
	return out, nil
}

func (h chatHistory) Save(ctx context.Context, put, drop []local.Stored) error {
	recs := make([]state.ChatRecord, len(put))
	for i, s := range put {
		data, err := json.Marshal(s.Entry)
		if err != nil {
			return err
		}
		recs[i] = state.ChatRecord{Box: s.Box, ID: s.Entry.ID, Rev: s.Entry.Rev, Data: data}
	}
	drops := make([]state.ChatRecord, len(drop))
	for i, s := range drop {
		drops[i] = state.ChatRecord{Box: s.Box, ID: s.Entry.ID}
	}
	return h.store.SaveChat(ctx, recs, drops)
}
