package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"opsbot/commands"
	"strings"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/slackevents"
	"github.com/slack-go/slack/socketmode"

	"opsbot/bot/endpoint"
	"opsbot/templates"
)

// reply is what Slack gets back at once (body, or an empty 200) and the
// work that continues after the ack, so every ack is well inside Slack's
// three seconds.
type reply struct {
	body any
	work func(ctx context.Context)
}

// slash handles "/ops ...". "new <flow>" alone (in any of its spellings)
// opens the flow's form; a new ticket's card is posted in the channel,
// where it becomes the ticket's home with a thread.
func (t *Transport) slash(cmd slack.SlashCommand) reply {
	text := strings.TrimSpace(cmd.Text)
	name, args, _ := t.deps.Command(text)
	if name == "new" && len(args) == 1 {
		if form, ok := t.deps.Form(strings.ToLower(args[0])); ok {
			return reply{work: func(ctx context.Context) {
				view := FormView(form, "new", form.Flow+"\n"+cmd.ChannelID)
				if _, err := t.api.OpenViewContext(ctx, cmd.TriggerID, view); err != nil {
					t.log.Error("open the new-ticket form", "err", err)
					t.respond(ctx, cmd.ResponseURL, []templates.Message{errorMessage("表单打开失败 could not open the form: " + err.Error())})
				}
			}}
		}
	}
	return reply{work: func(ctx context.Context) {
		in := Input{UserID: cmd.UserID, Name: cmd.UserName, Email: t.email(ctx, cmd.UserID), Text: "/ops " + text, Key: "slash:" + cmd.TriggerID}
		replies := t.deps.Handle(ctx, in)
		if name == "new" {
			replies = t.postCards(ctx, cmd.ChannelID, replies)
		}
		t.respond(ctx, cmd.ResponseURL, replies)
	}}
}

// postCards posts the ticket cards among replies into the channel (the
// ticket's home, whose thread gets progress) and returns the rest.
func (t *Transport) postCards(ctx context.Context, channel string, replies []templates.Message) []templates.Message {
	var rest []templates.Message
	for _, m := range replies {
		if m.Kind != "ticket" || m.Ticket == "" {
			rest = append(rest, m)
			continue
		}
		ts, err := t.post(ctx, channel, "", m, true)
		if err != nil {
			t.log.Warn("could not post the card in the channel; answering privately", "channel", channel, "err", err)
			rest = append(rest, m)
			continue
		}
		if err := t.deps.Cards.AddCard(ctx, m.Ticket, endpoint.CardRef{Channel: channel, TS: ts, Stage: m.Stage, Version: m.Version, Thread: true}); err != nil {
			t.log.Error("remember card", "ticket", m.Ticket, "err", err)
		}
	}
	return rest
}

func errorMessage(s string) templates.Message {
	return templates.MustRender("error", templates.ErrorView{Message: s})
}

// clickReplies keeps what a person who clicked needs to read: a refusal
// (a stale card, a missing role). A success needs no reply: every card of
// the ticket, the clicked one included, is redrawn in place.
func clickReplies(msgs []templates.Message) []templates.Message {
	var out []templates.Message
	for _, m := range msgs {
		if m.Level == "error" {
			out = append(out, m)
		}
	}
	return out
}

// interaction handles button clicks and modal submissions.
func (t *Transport) interaction(cb slack.InteractionCallback) reply {
	switch cb.Type {
	case slack.InteractionTypeBlockActions:
		if len(cb.ActionCallback.BlockActions) == 0 {
			return reply{}
		}
		a := cb.ActionCallback.BlockActions[0]
		value := a.Value
		if act, ok := t.deps.Act(value); ok && act.NeedsReason() {
			return reply{work: func(ctx context.Context) {
				if _, err := t.api.OpenViewContext(ctx, cb.TriggerID, ReasonView(value+"\n"+cb.ResponseURL)); err != nil {
					t.log.Error("open the reject form", "err", err)
				}
			}}
		}
		return reply{work: func(ctx context.Context) {
			in := Input{UserID: cb.User.ID, Name: cb.User.Name, Email: t.email(ctx, cb.User.ID), Text: value, Click: true,
				Key: "click:" + cb.User.ID + ":" + a.ActionTs}
			t.respond(ctx, cb.ResponseURL, clickReplies(t.deps.Handle(ctx, in)))
		}}
	case slack.InteractionTypeViewSubmission:
		values := map[string]string{}
		for block, actions := range cb.View.State.Values {
			if v, ok := actions["value"]; ok {
				values[block] = v.Value
				if v.SelectedOption.Value != "" {
					values[block] = v.SelectedOption.Value
				}
			}
		}
		switch cb.View.CallbackID {
		case "new":
			flow, channel, _ := strings.Cut(cb.View.PrivateMetadata, "\n")
			ctx, cancel := context.WithTimeout(t.ep.Context(), 2500*time.Millisecond)
			defer cancel()
			in := Input{UserID: cb.User.ID, Name: cb.User.Name, Email: t.email(ctx, cb.User.ID)}
			replies, fieldErrs := t.deps.Submit(ctx, in, flow, values)
			if len(fieldErrs) > 0 {
				return reply{body: slack.NewErrorsViewSubmissionResponse(fieldErrs)}
			}
			return reply{work: func(ctx context.Context) {
				for _, m := range t.postCards(ctx, channel, replies) {
					if _, err := t.api.PostEphemeralContext(ctx, channel, cb.User.ID, slack.MsgOptionBlocks(Blocks(m, t.deps.Mention, true)...),
						slack.MsgOptionText(Fallback(m), false)); err != nil {
						t.log.Warn("ephemeral reply", "err", err)
					}
				}
			}}
		case "reject":
			value, responseURL, _ := strings.Cut(cb.View.PrivateMetadata, "\n")
			reason := strings.TrimSpace(values["reason"])
			if reason == "" {
				return reply{body: slack.NewErrorsViewSubmissionResponse(map[string]string{"reason": "驳回需要原因 a rejection needs a reason"})}
			}
			act, ok := t.deps.Act(value)
			if !ok {
				return reply{body: slack.NewErrorsViewSubmissionResponse(map[string]string{"reason": "这个表单已失效 this form is out of date: press 驳回 Reject again"})}
			}
			act.Comment = reason
			return reply{work: func(ctx context.Context) {
				in := Input{UserID: cb.User.ID, Name: cb.User.Name, Email: t.email(ctx, cb.User.ID), Text: commands.Encode(act), Click: true,
					Key: "reject:" + cb.View.ID}
				t.respond(ctx, responseURL, clickReplies(t.deps.Handle(ctx, in)))
			}}
		}
	}
	return reply{}
}

// event handles the Events API: @-mentions are answered in thread.
func (t *Transport) event(ev slackevents.EventsAPIEvent, eventID string) reply {
	m, ok := ev.InnerEvent.Data.(*slackevents.AppMentionEvent)
	if !ok {
		return reply{}
	}
	return reply{work: func(ctx context.Context) {
		in := Input{UserID: m.User, Email: t.email(ctx, m.User), Text: m.Text, Key: "event:" + eventID}
		thread := m.ThreadTimeStamp
		if thread == "" {
			thread = m.TimeStamp
		}
		for _, r := range t.deps.Handle(ctx, in) {
			if _, err := t.post(ctx, m.Channel, thread, r, true); err != nil {
				t.log.Error("answer mention", "err", err)
			}
		}
	}}
}

// Handler serves the HTTP mode's endpoints. Every request's signature is
// checked first (v0 HMAC-SHA256 over "v0:timestamp:body", timestamp within
// five minutes); anything else gets 401 and an audit entry.
func (t *Transport) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slack/commands", func(w http.ResponseWriter, r *http.Request) {
		body, ok := t.verified(w, r)
		if !ok {
			return
		}
		if _, err := parseSlashForm(body); err != nil {
			http.Error(w, "bad slash command", http.StatusBadRequest)
			return
		}
		t.durable(w, r, "slash_form", body)
	})
	mux.HandleFunc("POST /slack/interactions", func(w http.ResponseWriter, r *http.Request) {
		body, ok := t.verified(w, r)
		if !ok {
			return
		}
		form, err := url.ParseQuery(string(body))
		var cb slack.InteractionCallback
		if err != nil || json.Unmarshal([]byte(form.Get("payload")), &cb) != nil || cb.User.ID == "" {
			http.Error(w, "bad interaction payload", http.StatusBadRequest)
			return
		}
		t.ack(w, r, cb, []byte(form.Get("payload")))
	})
	mux.HandleFunc("POST /slack/events", func(w http.ResponseWriter, r *http.Request) {
		body, ok := t.verified(w, r)
		if !ok {
			return
		}
		ev, err := slackevents.ParseEvent(body, slackevents.OptionNoVerifyToken())
		if err != nil {
			http.Error(w, "bad event", http.StatusBadRequest)
			return
		}
		if ev.Type == slackevents.URLVerification {
			var c slackevents.ChallengeResponse
			_ = json.Unmarshal(body, &c)
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write([]byte(c.Challenge))
			return
		}
		if m, ok := ev.InnerEvent.Data.(*slackevents.AppMentionEvent); ok {
			if m.User == "" {
				http.Error(w, "mention without a user", http.StatusBadRequest)
				return
			}
			t.durable(w, r, "event", body)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	return mux
}

// registerDurable names how recorded input is handled, now or after a
// restart: each kind re-derives its work from the payload.
func (t *Transport) registerDurable() {
	t.ep.Register("slash_form", func(ctx context.Context, p []byte) {
		if cmd, err := parseSlashForm(p); err == nil {
			t.run(ctx, t.slash(cmd))
		}
	})
	t.ep.Register("slash_json", func(ctx context.Context, p []byte) {
		var cmd slack.SlashCommand
		if err := json.Unmarshal(p, &cmd); err == nil {
			t.run(ctx, t.slash(cmd))
		}
	})
	t.ep.Register("click", func(ctx context.Context, p []byte) {
		var rec recorded
		if err := json.Unmarshal(p, &rec); err == nil {
			t.run(ctx, t.interaction(rec.callback()))
		}
	})
	// Slack's whole payload, as recorded by builds before "click".
	t.ep.Register("interaction", func(ctx context.Context, p []byte) {
		var cb slack.InteractionCallback
		if err := json.Unmarshal(p, &cb); err == nil {
			t.run(ctx, t.interaction(cb))
		}
	})
	t.ep.Register("event", func(ctx context.Context, p []byte) {
		ev, err := slackevents.ParseEvent(p, slackevents.OptionNoVerifyToken())
		if err != nil {
			return
		}
		var outer struct {
			EventID string `json:"event_id"`
		}
		_ = json.Unmarshal(p, &outer)
		t.run(ctx, t.event(ev, outer.EventID))
	})
}

func (t *Transport) run(ctx context.Context, r reply) {
	if r.work != nil {
		r.work(ctx)
	}
}

// parseSlashForm decodes a slash command; Slack always names the user and
// the trigger, so one without them is malformed, not anonymous.
func parseSlashForm(body []byte) (slack.SlashCommand, error) {
	r, err := http.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	if err != nil {
		return slack.SlashCommand{}, err
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	cmd, err := slack.SlashCommandParse(r)
	if err == nil && (cmd.UserID == "" || cmd.TriggerID == "") {
		err = errors.New("slash command without user_id or trigger_id")
	}
	return cmd, err
}

// replaySafe says whether an interaction's work may be recorded and run
// again after a restart: clicks and reject reasons may; the new-ticket
// form is applied before its ack (its errors go in the ack).
func replaySafe(cb slack.InteractionCallback) bool {
	return cb.Type == slack.InteractionTypeBlockActions ||
		(cb.Type == slack.InteractionTypeViewSubmission && cb.View.CallbackID == "reject")
}

// ack answers an interaction: errors for a form go in the answer; other
// work is recorded (when safe to run again) and done after the answer.
func (t *Transport) ack(w http.ResponseWriter, req *http.Request, cb slack.InteractionCallback, payload []byte) {
	if !replaySafe(cb) && t.ep.Replayed(replayKey(req)) {
		// Applied before its ack (a new-ticket form): a replay would
		// open a second ticket.
		t.refuse(req, "replay", "this signed delivery was received before")
		w.WriteHeader(http.StatusOK)
		return
	}
	r := t.interaction(cb)
	if r.body != nil {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.body)
		return
	}
	if r.work != nil && replaySafe(cb) {
		rec, err := json.Marshal(recordOf(cb))
		if err != nil {
			t.log.Error("encode the interaction to record", "err", err)
			rec = payload
		}
		t.durable(w, req, "click", rec)
		return
	}
	t.ep.Go(r.work)
	w.WriteHeader(http.StatusOK)
}

// replayKey names a signed delivery: its timestamp first, so that the keys
// of a busy minute sit side by side in the store instead of dirtying a
// page each, then the signature (which covers the timestamp).
func replayKey(r *http.Request) string {
	return r.Header.Get("X-Slack-Request-Timestamp") + ":" + r.Header.Get("X-Slack-Signature")
}

// durable records the input before the ack, unless this signed delivery
// was received before (a replay): that is refused and audited, and gets
// 200 so that a genuine retry of a slow ack stops.
func (t *Transport) durable(w http.ResponseWriter, r *http.Request, kind string, payload []byte) {
	if !t.ep.Durable(kind, payload, replayKey(r)) {
		t.refuse(r, "replay", "this signed delivery was received before")
	}
	w.WriteHeader(http.StatusOK)
}

// MaxRequestBytes bounds a Slack request body (interaction payloads carry
// the whole message they came from; Slack caps messages well below this).
const MaxRequestBytes = 1 << 20

// verified checks the signature headers and their freshness before it
// reads the body (an unsigned or stale request costs no read), then reads
// the body once and checks Slack's v0 signature over it.
func (t *Transport) verified(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	ts, sig := r.Header.Get("X-Slack-Request-Timestamp"), r.Header.Get("X-Slack-Signature")
	if ts == "" || sig == "" {
		t.refuse(r, "signature", "no X-Slack-Signature or X-Slack-Request-Timestamp")
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return nil, false
	}
	if err := endpoint.Fresh(ts, time.Now()); err != nil {
		t.refuse(r, "freshness", err.Error())
		http.Error(w, "stale request", http.StatusUnauthorized)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes))
	if err != nil {
		t.refuse(r, "too_large", fmt.Sprintf("body over %d bytes", MaxRequestBytes))
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return nil, false
	}
	sv, err := slack.NewSecretsVerifier(r.Header, t.cfg.SigningSecret)
	if err == nil {
		_, _ = sv.Write(body)
		err = sv.Ensure()
	}
	if err != nil {
		t.refuse(r, "signature", err.Error())
		http.Error(w, "invalid signature", http.StatusUnauthorized)
		return nil, false
	}
	return body, true
}

func (t *Transport) refuse(r *http.Request, class, reason string) {
	t.deps.Refuse(r.Context(), endpoint.Refusal{Platform: "slack", Remote: endpoint.RemoteHost(r), Action: r.Method + " " + r.URL.Path,
		Class: class, Reason: reason})
}

// runSocket serves Socket Mode until ctx ends, reconnecting by itself.
func (t *Transport) runSocket(ctx context.Context) {
	client := socketmode.New(t.api)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case evt, ok := <-client.Events:
				if !ok {
					return
				}
				t.socketEvent(client, evt)
			}
		}
	}()
	// RunContext reconnects by itself and returns only when it gives up
	// (or ctx ends); then start it again after a pause.
	for ctx.Err() == nil {
		err := client.RunContext(ctx)
		if ctx.Err() != nil {
			return
		}
		t.log.Warn("socket mode connection ended; reconnecting", "err", err)
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
}

func (t *Transport) socketEvent(client *socketmode.Client, evt socketmode.Event) {
	if evt.Request == nil {
		return
	}
	var body any
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		t.ep.Durable("slash_json", evt.Request.Payload, "")
	case socketmode.EventTypeInteractive:
		cb, _ := evt.Data.(slack.InteractionCallback)
		if replaySafe(cb) {
			rec, err := json.Marshal(recordOf(cb))
			if err != nil {
				t.ep.Durable("interaction", evt.Request.Payload, "")
				break
			}
			t.ep.Durable("click", rec, "")
			break
		}
		r := t.interaction(cb)
		body = r.body
		t.ep.Go(r.work)
	case socketmode.EventTypeEventsAPI:
		t.ep.Durable("event", evt.Request.Payload, "")
	default:
		return
	}
	var err error
	if body != nil {
		err = client.Ack(*evt.Request, body)
	} else {
		err = client.Ack(*evt.Request)
	}
	if err != nil {
		t.log.Warn("socket mode ack", "err", err)
	}
}

// recorded is what the handling of a replay-safe interaction (a button
// click, a reject reason) reads, recorded before the ack in place of
// Slack's payload, which carries the whole message the button was on:
// kilobytes per click, written and sealed on the hot path.
type recorded struct {
	Type        slack.InteractionType `json:"type"`
	User        string                `json:"user"`
	Name        string                `json:"name,omitempty"`
	TriggerID   string                `json:"trigger_id,omitempty"`
	ResponseURL string                `json:"response_url,omitempty"`
	Value       string                `json:"value,omitempty"`
	ActionTs    string                `json:"action_ts,omitempty"`
	// A form's submission: its view, callback, metadata and values.
	ViewID     string            `json:"view_id,omitempty"`
	CallbackID string            `json:"callback_id,omitempty"`
	Metadata   string            `json:"metadata,omitempty"`
	Values     map[string]string `json:"values,omitempty"`
}

func recordOf(cb slack.InteractionCallback) recorded {
	r := recorded{Type: cb.Type, User: cb.User.ID, Name: cb.User.Name, TriggerID: cb.TriggerID, ResponseURL: cb.ResponseURL,
		ViewID: cb.View.ID, CallbackID: cb.View.CallbackID, Metadata: cb.View.PrivateMetadata}
	if len(cb.ActionCallback.BlockActions) > 0 {
		a := cb.ActionCallback.BlockActions[0]
		r.Value, r.ActionTs = a.Value, a.ActionTs
	}
	if cb.View.State == nil {
		return r
	}
	for block, actions := range cb.View.State.Values {
		if v, ok := actions["value"]; ok {
			if r.Values == nil {
				r.Values = map[string]string{}
			}
			r.Values[block] = v.Value
			if v.SelectedOption.Value != "" {
				r.Values[block] = v.SelectedOption.Value
			}
		}
	}
	return r
}

// callback rebuilds the part of the interaction that its handling reads.
func (r recorded) callback() slack.InteractionCallback {
	cb := slack.InteractionCallback{Type: r.Type, User: slack.User{ID: r.User, Name: r.Name}, TriggerID: r.TriggerID,
		ResponseURL: r.ResponseURL}
	if r.Type == slack.InteractionTypeBlockActions {
		cb.ActionCallback.BlockActions = []*slack.BlockAction{{Value: r.Value, ActionTs: r.ActionTs}}
	}
	cb.View.ID, cb.View.CallbackID, cb.View.PrivateMetadata = r.ViewID, r.CallbackID, r.Metadata
	cb.View.State = &slack.ViewState{Values: map[string]map[string]slack.BlockAction{}}
	for block, v := range r.Values {
		cb.View.State.Values[block] = map[string]slack.BlockAction{"value": {Value: v}}
	}
	return cb
}
