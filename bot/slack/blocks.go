// Package slack is opsbot's Slack transport: slash commands, interactive
// Block Kit cards updated in place, modals, DMs to approvers, thread
// replies and @-mentions, over HTTP (signed requests) or Socket Mode.
package slack

import (
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"opsbot/templates"
)

// Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
const (
	maxBlocks        = 50
	maxHeader        = 150
	maxSectionText   = 3000
	maxFields        = 10
	maxFieldText     = 2000
	maxContextText   = 2000
	maxButtonText    = 75
	maxButtonValue   = 2000
	maxActions       = 25
	maxFallbackText  = 3000
	maxModalInputLen = 3000
)

// escape makes user text safe in mrkdwn: no mentions, links or
// formatting can be injected through a field value.
func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// Mentioner turns an opsbot user name into a Slack mention, or "" when
// the user has no Slack id.
type Mentioner func(name string) string

// Blocks renders a neutral message as Block Kit within Slack's limits:
// a header, the body, the fields (ten per section), a context line and an
// actions block whose buttons carry the command (ticket id and version).
// live=false drops the buttons (a card whose actions no longer apply).
func Blocks(m templates.Message, mention Mentioner, live bool) []slack.Block {
	var blocks []slack.Block
	blocks = append(blocks, slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(m.Title, maxHeader), true, false)))
	if m.Body != "" {
		body := escape(m.Body)
		if strings.Contains(m.Body, "\n") {
			body = "```" + templates.Clip(body, maxSectionText-6) + "```"
		}
		blocks = append(blocks, slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, templates.Clip(body, maxSectionText), false, false), nil, nil))
	}
	var fields []*slack.TextBlockObject
	flush := func() {
		if len(fields) > 0 {
			blocks = append(blocks, slack.NewSectionBlock(nil, fields, nil))
			fields = nil
		}
	}
	for _, f := range m.Fields {
		v := escape(f.Value)
		if mention != nil {
			if id := mention(f.Value); id != "" {
				v = id
			}
		}
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType, templates.Clip("*"+escape(f.Label)+"*\n"+v, maxFieldText), false, false))
		if len(fields) == maxFields {
			flush()
		}
	}
	flush()
	if live && len(m.Buttons) > 0 {
		var els []slack.BlockElement
		for i, b := range m.Buttons {
			if b.Disabled || len(b.Value) > maxButtonValue || len(els) == maxActions {
				continue
			}
			btn := slack.NewButtonBlockElement(fmt.Sprintf("opsbot_%d", i), b.Value,
				slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(b.Label, maxButtonText), true, false))
			if b.Confirm != "" {
				// Slack asks before it sends the press.
				btn = btn.WithConfirm(slack.NewConfirmationBlockObject(
					slack.NewTextBlockObject(slack.PlainTextType, "请确认 Please confirm", false, false),
					slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(b.Confirm, 300), false, false),
					slack.NewTextBlockObject(slack.PlainTextType, "确认 Confirm", false, false),
					slack.NewTextBlockObject(slack.PlainTextType, "取消 Back", false, false)).WithStyle(slack.StyleDanger))
			}
			switch b.Style {
			case "primary":
				btn.Style = slack.StylePrimary
			case "danger":
				btn.Style = slack.StyleDanger
			}
			els = append(els, btn)
		}
		if len(els) > 0 {
			blocks = append(blocks, slack.NewActionBlock("opsbot_actions", els...))
		}
	}
	if m.Context != "" {
		blocks = append(blocks, slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, templates.Clip(escape(m.Context), maxContextText), false, false)))
	}
	if len(blocks) > maxBlocks {
		// Keep the header, the first blocks and the last two (actions, context).
		blocks = append(blocks[:maxBlocks-2], blocks[len(blocks)-2:]...)
	}
	return blocks
}

// Fallback is the plain text shown in notifications and by clients that
// cannot draw blocks.
func Fallback(m templates.Message) string {
	return templates.Clip(m.Title, maxFallbackText)
}

// Stale turns a card into its closed form: the current state's text, no
// buttons, and a context line saying the card was handled.
func Stale(m templates.Message) templates.Message {
	m.Buttons = nil
	m.Context = "已处理，按钮已失效 handled; these buttons no longer apply · " + m.Context
	return m
}

// FormView builds the modal for a neutral form. privateMetadata travels
// back with the submission.
func FormView(f templates.Form, callbackID, privateMetadata string) slack.ModalViewRequest {
	var blocks []slack.Block
	for _, fd := range f.Fields {
		label := slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(fd.Label, 2000), true, false)
		var hint *slack.TextBlockObject
		if fd.Help != "" {
			hint = slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(fd.Help, 2000), false, false)
		}
		var el slack.BlockElement
		if len(fd.Options) > 0 {
			var opts []*slack.OptionBlockObject
			for _, o := range fd.Options {
				opts = append(opts, slack.NewOptionBlockObject(o, slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(o, 75), false, false), nil))
			}
			el = slack.NewOptionsSelectBlockElement(slack.OptTypeStatic, slack.NewTextBlockObject(slack.PlainTextType, "选择 choose", false, false), "value", opts...)
		} else {
			in := slack.NewPlainTextInputBlockElement(nil, "value")
			if fd.Placeholder != "" {
				in.Placeholder = slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(fd.Placeholder, 150), false, false)
			}
			in.Multiline = fd.Multiline
			in.MaxLength = maxModalInputLen
			el = in
		}
		ib := slack.NewInputBlock(fd.Name, label, hint, el)
		ib.Optional = !fd.Required
		blocks = append(blocks, ib)
		if len(blocks) == maxBlocks {
			break
		}
	}
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		Title:           slack.NewTextBlockObject(slack.PlainTextType, templates.Clip(f.Title, 24), false, false),
		Submit:          slack.NewTextBlockObject(slack.PlainTextType, "提交 Submit", false, false),
		Close:           slack.NewTextBlockObject(slack.PlainTextType, "取消 Cancel", false, false),
		Blocks:          slack.Blocks{BlockSet: blocks},
		CallbackID:      callbackID,
		PrivateMetadata: privateMetadata,
	}
}

// ReasonView asks for a rejection reason.
func ReasonView(privateMetadata string) slack.ModalViewRequest {
	in := slack.NewPlainTextInputBlockElement(slack.NewTextBlockObject(slack.PlainTextType, "e.g. window collides with the sale", false, false), "value")
	in.Multiline = true
	in.MaxLength = 1000
	return slack.ModalViewRequest{
		Type:            slack.VTModal,
		Title:           slack.NewTextBlockObject(slack.PlainTextType, "驳回 Reject", false, false),
		Submit:          slack.NewTextBlockObject(slack.PlainTextType, "驳回 Reject", false, false),
		Close:           slack.NewTextBlockObject(slack.PlainTextType, "取消 Cancel", false, false),
		Blocks:          slack.Blocks{BlockSet: []slack.Block{slack.NewInputBlock("reason", slack.NewTextBlockObject(slack.PlainTextType, "原因 Reason", false, false), nil, in)}},
		CallbackID:      "reject",
		PrivateMetadata: privateMetadata,
	}
}
