package present

import (
	"fmt"
	"strings"
	"time"

	"opsbot/flows"
	"opsbot/state"
	"opsbot/templates"
)

// Freeze announcements, posted to a team channel.
const (
	FreezeSet      = "set"
	FreezeReminder = "reminder"
	FreezeEnded    = "ended"
)

// FreezeNotice words a freeze's announcement: set (with its window),
// the reminder the day before it starts, and its end. mention asks the
// channel's platform to notify everyone.
func FreezeNotice(kind string, fz state.Freeze, start, end time.Time, mention bool) templates.Message {
	what := flows.FreezeText(fz)
	window := FreezeWindow(fz, start, end)
	var title, body string
	switch kind {
	case FreezeSet:
		title = fmt.Sprintf("❄️ 大家周知：%s 冻结 %s · heads up: %s is frozen %s", what, window, what, window)
		body = "冻结期间不能提交或执行相关工单 no new tickets or executions on it while frozen"
		if len(fz.Except) > 0 {
			body += fmt.Sprintf("；例外需 %s 额外审批 · an exception needs one more approval from %s (/ops new ... exception=\"why\")",
				strings.Join(fz.Except, "/"), strings.Join(fz.Except, " or "))
		}
	case FreezeReminder:
		title = fmt.Sprintf("⏰ 提醒：%s 将于 %s 冻结 · reminder: %s freezes at %s", what, stamp(start, fz.TZ), what, stamp(start, fz.TZ))
		body = "请在冻结前完成相关变更 finish the changes it covers before then; " + window
	case FreezeEnded:
		title = fmt.Sprintf("🔓 %s 冻结结束 · %s is no longer frozen", what, what)
		if fz.LiftedBy != "" {
			body = fmt.Sprintf("由 %s 提前解除 lifted early by %s", fz.LiftedBy, fz.LiftedBy)
		} else {
			body = "冻结期已过 the freeze window is over"
		}
	}
	m := templates.MustRender("info", templates.InfoView{Level: "info", Title: title,
		Body: strings.TrimSpace(fmt.Sprintf("%s\n%s: %s (%s)", body, fz.ID, fz.Reason, fz.By))})
	m.MentionAll = mention
	return m
}

// FreezeWindow says when a freeze holds, for people.
func FreezeWindow(fz state.Freeze, start, end time.Time) string {
	if fz.Weekly != nil {
		s := "每周 every week " + flows.WeeklyText(fz.Weekly)
		if !fz.Until.IsZero() {
			s += " 至 until " + stamp(fz.Until, fz.TZ)
		}
		return s
	}
	return fmt.Sprintf("%s → %s", stamp(start, fz.TZ), flows.EndText(end, fz.TZ))
}

func stamp(t time.Time, tz string) string {
	if t.IsZero() {
		return "现在 now"
	}
	loc, err := flows.LoadTZ(tz)
	if err != nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}
