package templates

import (
	"fmt"
	"strings"
	"sync/atomic"
	"time"
)

// The ticket card, the notices, info lines and errors are drawn in Go
// rather than by a template: they are drawn on every transition and in
// every reply, and a text/template walk with JSON quoting and decoding
// cost thirty times as much. The golden files hold their exact output.

var zone atomic.Pointer[time.Location]

// SetZone sets the time zone every time is shown in, with its name
// ("2026-05-09 20:00 CST"); the default is the host's.
func SetZone(loc *time.Location) {
	if loc != nil {
		zone.Store(loc)
	}
}

// Stamp shows a time as people read it: in the configured zone, with the
// zone named ("2026-05-09 20:00 CST").
func Stamp(t time.Time) string { return InZone(t).Format("2006-01-02 15:04 MST") }

// InZone is t in the zone times are shown in (SetZone).
func InZone(t time.Time) time.Time {
	loc := zone.Load()
	if loc == nil {
		loc = time.Local
	}
	return t.In(loc)
}

// ticketFields are the fields every card and notice of a ticket shows.
func ticketFields(v TicketView) []Field {
	out := make([]Field, 0, 5+len(v.Fields)+len(v.Approvals))
	out = append(out, Field{"流程 Flow", v.FlowTitle}, Field{"阶段 Stage", v.StageTitle}, Field{"申请人 Requester", v.Requester})
	if v.Operator != "" {
		out = append(out, Field{"执行人 Operator", v.Operator})
	}
	if v.Open && v.Need != 0 {
		out = append(out, Field{"审批 Approvals", fmt.Sprintf("%d/%d", v.Have, v.Need)})
	}
	if v.Open && len(v.Waiting) > 0 {
		out = append(out, Field{"等待角色 Waiting for", strings.Join(v.Waiting, ", ")})
	}
	if v.Exception != "" {
		out = append(out, Field{"冻结例外 Freeze exception", v.Exception})
	}
	out = append(out, v.Fields...)
	for _, a := range v.Approvals {
		value := a.User + " @ " + Stamp(a.At)
		if a.Comment != "" {
			value += " — " + a.Comment
		}
		out = append(out, Field{"已同意 Approved", value})
	}
	return out
}

// ticketBody is the last step's result and the ticket's note.
func ticketBody(v TicketView) string {
	var b strings.Builder
	if r := v.Result; r != nil {
		if r.OK {
			fmt.Fprintf(&b, "✅ %s 成功 succeeded", r.Stage)
		} else {
			fmt.Fprintf(&b, "❌ %s 失败 failed (exit %d, attempt %d)", r.Stage, r.ExitCode, r.Attempt)
		}
		if r.Error != "" {
			b.WriteString("\n" + r.Error)
		}
		if r.Hint != "" {
			b.WriteString("\n提示 hint: " + r.Hint)
		}
		if len(r.Files) > 0 {
			b.WriteString("\n冲突文件 conflicting files: " + strings.Join(r.Files, ", "))
		}
		if r.Output != "" {
			b.WriteString("\n" + Truncate(r.Output, MaxOutput))
		}
	}
	if v.Note != "" {
		b.WriteString("\n" + v.Note)
	}
	return strings.Trim(b.String(), "\n")
}

func buttons(bs []Button) []Button {
	if len(bs) == 0 {
		return nil
	}
	return append([]Button(nil), bs...)
}

func ticketCard(v TicketView) Message {
	level := "warning"
	switch {
	case v.Open:
		level = "info"
	case v.Stage == "done":
		level = "success"
	}
	return Message{Kind: "ticket", Level: level, Title: fmt.Sprintf("%s %s · %s", v.ID, v.Title, v.StageTitle),
		Fields: ticketFields(v), Body: ticketBody(v), Buttons: buttons(v.Buttons),
		Context: fmt.Sprintf("v%d · 更新 updated %s", v.Version, Stamp(v.Updated)),
		Ticket:  v.ID, Version: v.Version, Stage: v.StageKey}
}

// noticeTitles word each notice event: {id}, {actor}, {roles} and {stage}
// are filled in.
var noticeTitles = map[string]string{
	"submitted":             "📝 {id} 已提交 submitted by {actor}:",
	"approval_needed":       "🔔 {id} 等待你审批 needs your approval ({roles}):",
	"edited":                "✏️ {id} {actor} 修改了工单，请重新审批 edited the ticket: please review it again ({roles}):",
	"redo":                  "🔁 {id} 数据已变化，重新试运行并审批 changed since the approved plan: a new dry run, then approval again:",
	"approved":              "👍 {id} {actor} 已同意 approved:",
	"rejected":              "⛔ {id} {actor} 已驳回 rejected:",
	"cancelled":             "🚫 {id} {actor} 已取消 cancelled:",
	"done":                  "✅ {id} 已完成 done:",
	"failed":                "❌ {id} 执行失败 failed:",
	"interrupted":           "⚠️ {id} 执行被中断 interrupted (bot restarted), 请确认后重试 check and retry:",
	"expired":               "⌛ {id} 审批超时已过期 expired without approval:",
	"reminder":              "⏰ {id} 提醒：仍在等待你审批 reminder, still waiting for your approval:",
	"escalated":             "📣 {id} 已升级给你审批 escalated to you ({roles}):",
	"retried":               "🔁 {id} {actor} 重试 retried:",
	"rollback_started":      "↩️ {id} {actor} 开始回滚 started a rollback:",
	"rolled_back":           "↩️ {id} 已回滚 rolled back:",
	"rollback_failed":       "❌ {id} 回滚失败 rollback failed:",
	"release_ready":         "🚀 {id} 已批准，可以发布 approved: release its batches when ready:",
	"batch_done":            "✅ {id} 批次发布成功 batch released:",
	"batch_failed":          "❌ {id} 批次发布失败，见卡片中的下一步 batch failed, see the card for the next safe step:",
	"batch_refused":         "⚠️ {id} 批次未发布，什么都没有合并；按说明处理后再发布本批次 batch not released, nothing was merged: do what it says, then release it again:",
	"batch_rolled_back":     "↩️ {id} 批次已回滚 batch rolled back:",
	"batch_rollback_failed": "❌ {id} 批次回滚失败 batch rollback failed:",
	"cleanup_done":          "🧹 {id} 收尾完成 clean-up done:",
	"cleanup_failed":        "❌ {id} 收尾失败 clean-up failed:",
	"exception_needed":      "❄️ {id} 申请冻结例外，需要你审批 asks to go through a freeze: your approval lets it through ({roles}):",
	"delegated":             "🔀 {id} 审批人变更，现在由你审批 the approval is yours now ({roles}):",
	"step_started":          "⏳ {id} 开始执行 {stage} started:",
	"stage_passed":          "✅ {id} {passed} 已通过 passed ({actor}):",
	"step_succeeded":        "✅ {id} 步骤成功 step succeeded:",
	"step_failed":           "❌ {id} 步骤失败 step failed:",
	"step_resumed":          "🔄 {id} 执行 {stage} 的机器人实例已停止，另一实例接手重新执行 the replica running {stage} stopped; another replica took it over and runs it again:",
}

// NoticeEvents lists the notice events that have their own wording.
func NoticeEvents() []string {
	out := make([]string, 0, len(noticeTitles))
	for ev := range noticeTitles {
		out = append(out, ev)
	}
	return out
}

var warningNotices = map[string]bool{"failed": true, "step_failed": true, "batch_failed": true, "batch_refused": true, "batch_rollback_failed": true,
	"cleanup_failed": true, "interrupted": true, "rollback_failed": true, "expired": true, "rejected": true, "redo": true}

func noticeMessage(n NoticeView) Message {
	t := n.Ticket
	level := "info"
	switch {
	case warningNotices[n.Event]:
		level = "warning"
	case n.Event == "done" || n.Event == "rolled_back":
		level = "success"
	}
	title, ok := noticeTitles[n.Event]
	if !ok {
		title = "{id} " + n.Event + ":"
	}
	title = strings.NewReplacer("{id}", t.ID, "{actor}", n.Actor, "{roles}", strings.Join(n.Roles, ", "), "{stage}", t.StageTitle, "{passed}", n.Passed).Replace(title)
	fields := ticketFields(t)
	if n.Comment != "" {
		fields = append(fields, Field{"说明 Comment", n.Comment})
	}
	return Message{Kind: "notice", Level: level, Title: title + " " + t.Title, Fields: fields, Body: ticketBody(t),
		Buttons: buttons(t.Buttons), Context: fmt.Sprintf("v%d · %s", t.Version, Stamp(t.Updated)),
		Ticket: t.ID, Version: t.Version, Stage: t.StageKey}
}
