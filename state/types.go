// Package state keeps opsbot's durable state in a bbolt file: tickets as
// append-only event lists with a projection, resource locks, jobs, the
// notification outbox, timers, idempotency keys, users, roles and the audit log.
//
// Every mutation of a ticket happens in one transaction together with its
// indexes, locks, jobs, notifications and timers, so a crash never leaves a
// half-applied transition behind.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Ticket is the projection of a ticket's events: what the ticket looks like now.
type Ticket struct {
	ID    string `json:"id"`
	Flow  string `json:"flow"`
	Title string `json:"title"`
	// Stage is the current stage name; terminal stages are "done",
	// "rejected", "cancelled", "expired", "failed" and "rolled_back".
	Stage string `json:"stage"`
	// Open is false once the ticket reached a stage it cannot leave by itself.
	Open bool `json:"open"`
	// Version counts the events applied; it is the sequence of the last event.
	Version int64 `json:"version"`
	// StageVersion is the version at which the current stage was entered.
	StageVersion int64 `json:"stage_version"`
	// StageAt is when the current stage was entered (zero for tickets
	// written before it was kept).
	StageAt time.Time `json:"stage_at,omitzero"`
	// LookedUp is the version at which looked-up fields (a flow's Refresh)
	// last changed: an approval pressed on a card drawn before it is
	// refused, since it approved what the approver no longer sees.
	LookedUp  int64             `json:"looked_up,omitempty"`
	Requester string            `json:"requester"`
	Fields    map[string]string `json:"fields"`
	// Approvals holds the approvals given in the current stage.
	Approvals []Approval `json:"approvals,omitempty"`
	// WaitingRoles are the roles whose holders may act on the current stage.
	WaitingRoles []string `json:"waiting_roles,omitempty"`
	Locks        []string `json:"locks,omitempty"`
	Escalated    bool     `json:"escalated,omitempty"`
	Reminders    int      `json:"reminders,omitempty"`
	// LastResult names the stage whose result came last (Results).
	LastResult string `json:"last_result,omitempty"`
	// Muted are the people who asked not to hear this ticket's progress
	// (stages passed); they still hear its result.
	Muted []string `json:"muted,omitempty"`
	// Exception is the freeze exception the ticket asked for.
	Exception *Exception `json:"exception,omitempty"`
	// DutyTold are the people told of the current approval stage when
	// it went to the people on duty only; its first reminder tells the
	// rest of the role.
	DutyTold []string `json:"duty_told,omitempty"`
	// Offered records the hand-overs of the current stage already made
	// ("libo>bob", "libo<bob" when the approvals came back), so a
	// hand-over is offered once.
	Offered []string `json:"offered,omitempty"`
	// FailedStage is the action stage a failed ticket can retry.
	FailedStage string `json:"failed_stage,omitempty"`
	// Operator is the last person whose action moved the ticket forward.
	Operator string `json:"operator,omitempty"`
	// Results holds the last result of each action stage that ran.
	Results map[string]Result `json:"results,omitempty"`
	// Outputs are values actions recorded, e.g. the deployed commit a
	// rollback returns from.
	Outputs map[string]string `json:"outputs,omitempty"`
	// Batches are the release batches of a batch-release stage.
	Batches []Batch `json:"batches,omitempty"`
	// Saga lists what the ticket's jobs changed and how to reverse it, in
	// the order the jobs ended.
	Saga    []SagaEntry `json:"saga,omitempty"`
	Note    string      `json:"note,omitempty"`
	Created time.Time   `json:"created"`
	Updated time.Time   `json:"updated"`
}

// Batch states.
const (
	BatchPending        = "pending"
	BatchReleasing      = "releasing"
	BatchFailed         = "failed"
	BatchSucceeded      = "succeeded"
	BatchRollingBack    = "rolling_back"
	BatchRolledBack     = "rolled_back"
	BatchRollbackFailed = "rollback_failed"
)

// Batch is one release batch: its targets, state and the merges (and
// reverts) made for it, in order.
type Batch struct {
	Name    string   `json:"name"`
	Targets []string `json:"targets"`
	State   string   `json:"state"`
	Steps   []Step   `json:"steps,omitempty"`
	Note    string   `json:"note,omitempty"`
}

// Step is one merge of a batch and, after a rollback, its revert.
type Step struct {
	Source   string   `json:"source"`
	Target   string   `json:"target"`
	MR       int64    `json:"mr,omitempty"`
	MergeSHA string   `json:"merge_sha,omitempty"`
	Result   string   `json:"result"` // merged, conflict, failed, reverted, revert_failed
	Revert   string   `json:"revert,omitempty"`
	Files    []string `json:"files,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Approval is one person's approval of a stage.
type Approval struct {
	User    string    `json:"user"`
	At      time.Time `json:"at"`
	Comment string    `json:"comment,omitempty"`
	// For is the person away whose approvals User holds ("bob for libo").
	For string `json:"for,omitempty"`
}

// Exception is a ticket's way through a freeze: asked with a reason,
// approved by a holder of one of Roles on top of the flow's approvals.
type Exception struct {
	Freeze     string    `json:"freeze"`
	Roles      []string  `json:"roles"`
	Reason     string    `json:"reason"`
	By         string    `json:"by"`
	At         time.Time `json:"at"`
	ApprovedBy string    `json:"approved_by,omitempty"`
	ApprovedAt time.Time `json:"approved_at,omitempty"`
}

// Result is what an action produced.
type Result struct {
	OK       bool   `json:"ok"`
	ExitCode int    `json:"exit_code"`
	Output   string `json:"output,omitempty"`
	Error    string `json:"error,omitempty"`
	// Hint is what to do about Error, when the executor said (a user
	// error); Files are the files a conflict is in.
	Hint    string    `json:"hint,omitempty"`
	Files   []string  `json:"files,omitempty"`
	Attempt int       `json:"attempt"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended"`
}

// Event is one entry of a ticket's history.
type Event struct {
	Seq     int64             `json:"seq"`
	Type    string            `json:"type"`
	Actor   string            `json:"actor"`
	At      time.Time         `json:"at"`
	From    string            `json:"from,omitempty"`
	To      string            `json:"to,omitempty"`
	Comment string            `json:"comment,omitempty"`
	Data    map[string]string `json:"data,omitempty"`
}

// Job statuses, stored as strings.
const (
	JobQueued      = "queued"
	JobRunning     = "running"
	JobSucceeded   = "succeeded"
	JobFailed      = "failed"
	JobInterrupted = "interrupted"
	JobCancelled   = "cancelled"
)

// JobKind says what a job does, stored as a string.
type JobKind string

// Job kinds.
const (
	// JobAction runs an action stage's executor once (with retries).
	JobAction JobKind = "action"
	// JobWait polls a wait stage's condition until it holds or times out.
	JobWait JobKind = "wait"
	// JobUndo runs the flow's rollback.
	JobUndo JobKind = "undo"
	// JobCleanup runs after a cancel (on_cancel); safe to repeat.
	JobCleanup JobKind = "cleanup"
	// JobRelease and JobRevert release or revert one batch of a release
	// stage, the batch's index in Params["batch"].
	JobRelease JobKind = "release"
	JobRevert  JobKind = "revert"
)

// Job is a side effect written before it runs, so that a restarted bot can
// resume it or report that it was interrupted.
type Job struct {
	ID           string            `json:"id"`
	Ticket       string            `json:"ticket"`
	Stage        string            `json:"stage"`
	StageVersion int64             `json:"stage_version"`
	Kind         JobKind           `json:"kind"`
	Executor     string            `json:"executor"`
	Params       map[string]string `json:"params,omitempty"`
	Status       string            `json:"status"`
	Attempt      int               `json:"attempt"`
	MaxAttempts  int               `json:"max_attempts"`
	SafeToRepeat bool              `json:"safe_to_repeat,omitempty"`
	NextAt       time.Time         `json:"next_at"`
	Deadline     time.Time         `json:"deadline,omitzero"`
	StartedAt    time.Time         `json:"started_at,omitzero"`
	Result       *Result           `json:"result,omitempty"`
	// Undo is how to reverse what the job changed, one step per side
	// effect in the order made, as its executor registered it (saga
	// style). The ticket's Saga keeps the same steps for the rollback.
	Undo []UndoStep `json:"undo_steps,omitempty"`
	// CancelRequested is set when the ticket moved on while the job ran:
	// the job ends instead of being queued again.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Owner is the replica that claimed the job when it started running
	// (see Replica); a running job whose owner lost its lease is settled
	// by another replica.
	Owner string `json:"owner,omitempty"`
}

// UndoStep is how to reverse one side effect: What says what was changed,
// for people; Values is what the reversing executor needs (the commit a
// merge made, the pointer value a publish replaced, the backup a wipe
// took).
type UndoStep struct {
	What   string            `json:"what"`
	Values map[string]string `json:"values,omitempty"`
}

// SagaEntry is the undo one job registered. Undone is set once a rollback
// (or a batch revert) reversed it.
type SagaEntry struct {
	Job    string     `json:"job"`
	Stage  string     `json:"stage"`
	Kind   JobKind    `json:"kind"`
	Batch  string     `json:"batch,omitempty"`
	Steps  []UndoStep `json:"steps"`
	Undone bool       `json:"undone,omitempty"`
}

// Active reports whether the job still has to run or is running.
func (j Job) Active() bool { return j.Status == JobQueued || j.Status == JobRunning }

// NotifyKind says how the outbox delivers a notification.
type NotifyKind string

// Notification kinds.
const (
	// NotifyMessage goes to one user, directly.
	NotifyMessage NotifyKind = "message"
	// NotifyProgress goes to the ticket's thread where a platform has one.
	NotifyProgress NotifyKind = "progress"
	// NotifyCardUpdate redraws the ticket's cards wherever they were posted.
	NotifyCardUpdate NotifyKind = "card_update"
	// NotifyChannel goes to a channel (User names it) on every platform.
	NotifyChannel NotifyKind = "channel"
	// NotifyClusterWarning goes to a channel like NotifyChannel; its
	// Message is a ClusterWarning, worded when it is delivered.
	NotifyClusterWarning NotifyKind = "cluster_warning"
)

// Notification is an outbox entry: a message for one user, retried until a
// transport delivered it.
type Notification struct {
	ID        uint64          `json:"id"`
	User      string          `json:"user"`
	Ticket    string          `json:"ticket,omitempty"`
	Kind      NotifyKind      `json:"kind"`
	Message   json.RawMessage `json:"message"`
	Attempts  int             `json:"attempts"`
	NextAt    time.Time       `json:"next_at"`
	LastError string          `json:"last_error,omitempty"`
	Created   time.Time       `json:"created"`
	// Version is the ticket's version the notification was written at:
	// the order of one ticket's notifications, whichever replica wrote
	// them.
	Version int64 `json:"version,omitempty"`
	// Reached lists the platforms that already have it, so a retry after a
	// partial failure does not send it twice.
	Reached []string `json:"reached,omitempty"`
}

// Done returns the platforms that already have the notification.
func (n Notification) Done() []string { return n.Reached }

// Timer fires an event for a ticket at a time, if the ticket is still in
// the stage (entered at StageVersion) that set it.
type Timer struct {
	Due          time.Time `json:"due"`
	Ticket       string    `json:"ticket"`
	Kind         string    `json:"kind"` // "remind", "expire"
	Stage        string    `json:"stage"`
	StageVersion int64     `json:"stage_version"`
}

// AuditEntry records who did what, when, with which arguments and result.
// Callers redact and truncate before appending.
type AuditEntry struct {
	Seq      uint64    `json:"seq"`
	At       time.Time `json:"at"`
	User     string    `json:"user"`
	Platform string    `json:"platform,omitempty"`
	Action   string    `json:"action"`
	Ticket   string    `json:"ticket,omitempty"`
	Args     string    `json:"args,omitempty"`
	Result   string    `json:"result"`
	// Version is, for a transition, the ticket version it made (which
	// event of the ticket's history it is).
	Version int64 `json:"version,omitempty"`
}

// User is one person, known under an id on each chat platform.
type User struct {
	Name    string            `json:"name"` // lower-case opsbot user name
	Display string            `json:"display,omitempty"`
	Email   string            `json:"email,omitempty"`
	IDs     map[string]string `json:"ids,omitempty"` // platform -> id
	Roles   []string          `json:"roles,omitempty"`
}

// Change is what a transition writes, all in one transaction.
type Change struct {
	Ticket      Ticket
	Event       Event
	Acquire     []string
	Release     []string
	Jobs        []Job
	Notify      []Notification
	SetTimers   []Timer
	ClearTimers []Timer
	// Fire is the timer this change consumes: it must still be stored, or
	// the change fails with ErrTimerGone (another replica fired it), and
	// it is deleted with the change.
	Fire  *Timer
	Audit []AuditEntry
	// CancelJobs marks queued jobs cancelled, and running ones to end
	// rather than be queued again.
	CancelJobs []string
}

// LockedError says a resource is held by another ticket.
type LockedError struct {
	Resource string
	Holder   string
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("resource %s is locked by %s", e.Resource, e.Holder)
}

// ErrNotFound is returned for a ticket, job or user that does not exist.
var ErrNotFound = errors.New("not found")

// ErrNoChange, returned by a transition function, ends the transaction
// without writing anything.
var ErrNoChange = errors.New("no change")

// ErrTimerGone means a change fires a timer that is not stored any more:
// it fired already (on another replica) or was cleared.
var ErrTimerGone = errors.New("timer already fired or cleared")
