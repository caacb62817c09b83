package templates

import "time"

// TicketView is what a ticket card shows.
type TicketView struct {
	ID         string
	Flow       string
	FlowTitle  string
	Title      string
	Stage      string
	StageTitle string
	Open       bool
	// StageTitle is the stage as people read it (the flow's title for a
	// declared stage, the bilingual name of a built-in one).
	// Ended says the ticket came to a result (done, rejected, cancelled,
	// expired, failed, rolled back).
	Ended   bool
	Version int64
	// StageKey identifies the stage instance: name@version it was entered.
	StageKey  string
	Requester string
	Operator  string
	Fields    []Field
	Approvals []ApprovalView
	// Need and Have count the approvals of the current approval stage.
	Need, Have int
	Waiting    []string
	// Exception says how the ticket goes through a freeze.
	Exception string
	Result    *ResultView
	Note      string
	Buttons   []Button
	Created   time.Time
	Updated   time.Time
}

// ApprovalView is one approval on a card.
type ApprovalView struct {
	User    string
	Comment string
	At      time.Time
}

// ResultView is the result of an action stage.
type ResultView struct {
	Stage    string
	OK       bool
	ExitCode int
	Output   string
	Error    string
	// Hint says what to do about Error; Files are the files a conflict
	// is in.
	Hint    string
	Files   []string
	Attempt int
}

// NoticeView tells someone what happened to a ticket. Event is one of
// "submitted", "approval_needed", "approved", "rejected", "cancelled",
// "done", "failed", "interrupted", "expired", "reminder", "escalated",
// "retried", "rolled_back", "rollback_failed", "edited", "redo", and for a ticket's thread
// "step_started", "step_succeeded", "step_failed".
type NoticeView struct {
	Ticket  TicketView
	Event   string
	Actor   string
	Comment string
	Roles   []string
	// Passed is the title of the stage a "stage_passed" notice is about.
	Passed string
}

// ListView is a page of tickets.
type ListView struct {
	Scope   string
	Filter  string
	Tickets []TicketView
	Page    int
	More    bool
}

// AuditView is a page of the audit log.
type AuditView struct {
	Target  string
	Entries []AuditRow
	Page    int
	More    bool
}

// AuditRow is one audit entry.
type AuditRow struct {
	At       time.Time
	User     string
	Platform string
	Action   string
	Ticket   string
	Args     string
	Result   string
}

// HelpView lists commands and flows, or details one command.
type HelpView struct {
	Commands []HelpCommand
	Flows    []FlowHelp
	Topic    *HelpCommand
}

// HelpCommand describes one command.
type HelpCommand struct {
	Name    string
	Usage   string
	Summary string
	Example string
}

// FlowHelp describes one flow for help and "new" usage.
type FlowHelp struct {
	Name     string
	Title    string
	Required []string
	Optional []string
	Example  string
}

// ErrorView is a user error: what was wrong and what to type instead.
type ErrorView struct {
	Message string
	Hint    string
	// Buttons offer the way out, e.g. the confirmation an action asks for.
	Buttons []Button
}

// InternalView is an unexpected error, shown only by its reference.
type InternalView struct {
	Ref string
}

// InfoView is a short confirmation or answer.
type InfoView struct {
	Level string
	Title string
	Body  string
}

// RolesView lists role holders.
type RolesView struct {
	User string
	Rows []RoleRow
}

// RoleRow is one role and its members.
type RoleRow struct {
	Role    string
	Members []string
}

// Form is a neutral input form, built from a flow's fields, that a
// platform draws as a modal or dialog.
type Form struct {
	Flow   string
	Title  string
	Fields []FormField
}

// FormField is one input of a form; Options makes it a select.
type FormField struct {
	Name        string
	Label       string
	Help        string
	Placeholder string
	Options     []string
	Required    bool
	Multiline   bool
}
