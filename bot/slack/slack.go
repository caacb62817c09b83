package slack

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"opsbot/commands"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"

	"opsbot/bot/endpoint"
	"opsbot/templates"
)

// Input is one piece of Slack input handed to the bot.
type Input struct {
	UserID string
	Email  string
	Name   string
	Text   string
	Click  bool
	// Key de-duplicates Slack's retries of the same delivery.
	Key string
}

// Pacer spaces messages per channel.
type Pacer = endpoint.Pacer

// Deps is what the transport needs from the bot.
type Deps struct {
	// Handle runs a command or click and returns the replies.
	Handle func(ctx context.Context, in Input) []templates.Message
	// Form describes a flow's fields for the "new ticket" modal.
	Form func(flow string) (templates.Form, bool)
	// Command names the command a text asks for and its arguments (the
	// chat grammar's, aliases included), so the transport never matches
	// command words itself.
	Command func(text string) (name string, args []string, ok bool)
	// Act reads a button's value as an action on a ticket.
	Act func(text string) (commands.Act, bool)
	// Submit opens a ticket from a modal; it returns the replies, or the
	// errors to show next to each field.
	Submit func(ctx context.Context, in Input, flow string, fields map[string]string) ([]templates.Message, map[string]string)
	// Mention maps an opsbot user name to "<@U…>", or "".
	Mention Mentioner
	// Cards keeps where this platform's cards are; Inbox keeps input
	// recorded before its ack.
	Cards endpoint.Cards
	Inbox endpoint.Inbox
	Pace  Pacer
	// Refuse records requests refused at the edge (bounded, sampled).
	Refuse endpoint.Refuser
	Log    *slog.Logger
}

// Config configures the transport. Tokens come from the environment.
type Config struct {
	// Mode is "http" (signed requests on Listen) or "socket" (Socket Mode).
	Mode          string
	Listen        string
	BotToken      string
	SigningSecret string
	AppToken      string
	// APIURL overrides https://slack.com/api/ (tests, proxies).
	APIURL string
	// Now is the clock for signature timestamps; nil means time.Now.
	Now func() time.Time
	// Channels maps opsbot's channel names (e.g. "infra") to Slack
	// channel ids, for warnings posted to a team rather than a person.
	Channels map[string]string
	// Timeouts bound the HTTP mode's connections.
	Timeouts endpoint.Timeouts
}

// Transport is the Slack transport.
type Transport struct {
	cfg  Config
	deps Deps
	api  *slack.Client
	log  *slog.Logger

	ep *endpoint.Server

	mu     sync.Mutex
	emails map[string]string

	// readyAt and readyErr cache Ready's last answer.
	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
}

// New builds the transport; Start connects it.
func New(cfg Config, deps Deps) *Transport {
	if deps.Act == nil {
		deps.Act = commands.Default().DecodeAct
	}
	if deps.Command == nil {
		deps.Command = commands.Default().Command
	}
	opts := []slack.Option{}
	if cfg.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(cfg.APIURL))
	}
	if cfg.AppToken != "" {
		opts = append(opts, slack.OptionAppLevelToken(cfg.AppToken))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Refuse == nil {
		deps.Refuse = func(context.Context, endpoint.Refusal) {}
	}
	log := deps.Log.With("platform", "slack")
	return &Transport{cfg: cfg, deps: deps, api: slack.New(cfg.BotToken, opts...), log: log,
		ep: endpoint.New(log, deps.Inbox, "slack", cfg.Timeouts, nil), emails: map[string]string{}}
}

// Platform implements the bot's Transport.
func (t *Transport) Platform() string { return "slack" }

// Addr is the HTTP mode's listening address, once started.
func (t *Transport) Addr() string { return t.ep.Addr() }

// Ready says whether Slack accepts the bot token now (auth.test, asked at
// most every 5 s): a revoked or wrong token, or Slack unreachable, is an
// error that says so.
func (t *Transport) Ready(ctx context.Context) error {
	t.readyMu.Lock()
	defer t.readyMu.Unlock()
	if time.Since(t.readyAt) < 5*time.Second {
		return t.readyErr
	}
	_, err := t.api.AuthTestContext(ctx)
	if err != nil {
		err = fmt.Errorf("slack does not accept the bot token (auth.test: %w); check %s", err, "slack.bot_token_env")
	}
	t.readyAt, t.readyErr = time.Now(), err
	return err
}

// Replay handles recorded input whose process stopped before handling
// it (see endpoint.Server.Replay).
func (t *Transport) Replay(ctx context.Context) error { return t.ep.Replay(ctx) }

// Start listens (HTTP mode) or connects (Socket Mode) and returns.
func (t *Transport) Start(ctx context.Context) error {
	t.registerDurable()
	if err := t.ep.Replay(ctx); err != nil {
		return fmt.Errorf("slack: replay input received before a restart: %w", err)
	}
	if t.cfg.Mode == "socket" {
		t.ep.Loop(t.runSocket)
		return nil
	}
	if err := t.ep.Listen(t.cfg.Listen, t.Handler()); err != nil {
		return fmt.Errorf("slack: %w", err)
	}
	return nil
}

// Stop stops accepting input and waits for work in progress.
func (t *Transport) Stop() { t.ep.Stop() }

// call runs a Slack Web API call, waiting for the channel's pace first and
// honouring 429 Retry-After (a few times) so no message is dropped for
// being too fast; other errors are returned for the outbox to retry.
func (t *Transport) call(ctx context.Context, channel string, fn func() error) error {
	for attempt := 0; ; attempt++ {
		if err := t.pace(ctx, channel); err != nil {
			return err
		}
		err := fn()
		var rl *slack.RateLimitedError
		if errors.As(err, &rl) && attempt < 5 {
			t.log.Warn("slack rate limited: waiting as told", "channel", channel, "retry_after", rl.RetryAfter)
			select {
			case <-time.After(rl.RetryAfter):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return err
	}
}

func (t *Transport) pace(ctx context.Context, channel string) error {
	if channel == "" {
		return nil
	}
	return endpoint.Wait(ctx, t.deps.Pace, "slack:channel:"+channel)
}

func (t *Transport) post(ctx context.Context, channel, thread string, m templates.Message, live bool) (string, error) {
	blocks, text := Blocks(m, t.deps.Mention, live), Fallback(m)
	if m.MentionAll {
		blocks = append([]slack.Block{slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, channelMention, false, false), nil, nil)}, blocks...)
		text = channelMention + " " + text
	}
	opts := []slack.MsgOption{slack.MsgOptionBlocks(blocks...), slack.MsgOptionText(text, false)}
	if thread != "" {
		opts = append(opts, slack.MsgOptionTS(thread))
	}
	var ts string
	err := t.call(ctx, channel, func() error {
		var err error
		_, ts, err = t.api.PostMessageContext(ctx, channel, opts...)
		return err
	})
	return ts, err
}

// Send implements the bot's Transport: a direct message to a Slack user.
// Ticket cards sent this way are remembered so they are updated in place.
func (t *Transport) Send(ctx context.Context, userID string, m templates.Message) error {
	ts, err := t.post(ctx, userID, "", m, true)
	if err != nil {
		return fmt.Errorf("slack: message %s: %w", userID, err)
	}
	if m.Ticket != "" {
		return t.deps.Cards.AddCard(ctx, m.Ticket, endpoint.CardRef{Channel: userID, TS: ts, Stage: m.Stage, Version: m.Version})
	}
	return nil
}

// PostChannel implements the bot's ChannelPoster: a message to a named
// team channel, when this config maps the name to a Slack channel.
func (t *Transport) PostChannel(ctx context.Context, channel string, m templates.Message) error {
	id := t.cfg.Channels[channel]
	if id == "" {
		return nil
	}
	if _, err := t.post(ctx, id, "", m, false); err != nil {
		return fmt.Errorf("slack: channel %s (%s): %w", channel, id, err)
	}
	return nil
}

// channelMention is how Slack notifies everyone in a channel: in the
// message text (what notifications show) and in its first block.
const channelMention = "<!channel>"

// UpdateCards implements the bot's CardUpdater with chat.update. The
// ticket's channel card (its home, with the thread) always shows the
// current state with live buttons; a DM card drawn in the current stage
// does too; every other card loses its buttons and says it was handled.
func (t *Transport) UpdateCards(ctx context.Context, ticket string, m templates.Message) error {
	refs, err := t.deps.Cards.Cards(ctx, ticket)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range refs {
		if r.Version >= m.Version {
			continue // drawn from this state already
		}
		msg, live := m, r.Thread || r.Stage == m.Stage
		if !live {
			msg = Stale(m)
		}
		err := t.call(ctx, r.Channel, func() error {
			_, _, _, err := t.api.UpdateMessageContext(ctx, r.Channel, r.TS,
				slack.MsgOptionBlocks(Blocks(msg, t.deps.Mention, live)...), slack.MsgOptionText(Fallback(msg), false))
			return err
		})
		if err != nil && strings.Contains(err.Error(), "message_not_found") {
			t.log.Warn("card deleted in slack; not updating it", "ticket", ticket, "channel", r.Channel)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("update %s card in %s: %w", ticket, r.Channel, err))
		}
	}
	return errors.Join(errs...)
}

// PostProgress posts a step's progress as a thread reply under the
// ticket's channel card.
func (t *Transport) PostProgress(ctx context.Context, ticket string, m templates.Message) error {
	refs, err := t.deps.Cards.Cards(ctx, ticket)
	if err != nil {
		return err
	}
	for _, r := range refs {
		if r.Thread {
			_, err := t.post(ctx, r.Channel, r.TS, m, false)
			return err
		}
	}
	return nil
}

// email looks a Slack user's e-mail up once (users.info), so a person can
// be matched to their opsbot user; failures only mean no match.
func (t *Transport) email(ctx context.Context, userID string) string {
	t.mu.Lock()
	e, ok := t.emails[userID]
	t.mu.Unlock()
	if ok {
		return e
	}
	u, err := t.api.GetUserInfoContext(ctx, userID)
	if err != nil {
		t.log.Warn("users.info failed; the user is matched by id only", "slack_user", userID, "err", err)
		return ""
	}
	t.mu.Lock()
	t.emails[userID] = u.Profile.Email
	t.mu.Unlock()
	return u.Profile.Email
}

// respond posts replies to a response_url (ephemeral unless inChannel).
func (t *Transport) respond(ctx context.Context, url string, msgs []templates.Message) {
	for _, m := range msgs {
		msg := &slack.WebhookMessage{ResponseType: slack.ResponseTypeEphemeral, Text: Fallback(m),
			Blocks: &slack.Blocks{BlockSet: Blocks(m, t.deps.Mention, true)}, ReplaceOriginal: false}
		if err := slack.PostWebhookContext(ctx, url, msg); err != nil {
			t.log.Error("post to response_url", "err", err)
		}
	}
}

// Sign returns Slack's v0 request signature of body at ts: what Slack
// sends in X-Slack-Signature, and what the fake and the load tool send.
func Sign(secret string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	fmt.Fprintf(mac, "v0:%d:%s", ts, body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}
