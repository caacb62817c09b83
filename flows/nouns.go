package flows

// The nouns of the engine. Each is a string type, stored and shown as
// the string: the type only keeps one kind of name from being passed
// where another is meant.

// StageKind is what a stage does.
type StageKind string

// Stage kinds.
const (
	// KindApproval waits for N distinct holders of its roles.
	KindApproval StageKind = "approval"
	// KindAction runs its executor once (with retries on transient errors).
	KindAction StageKind = "action"
	// KindWait polls its executor until the condition holds or times out.
	KindWait StageKind = "wait"
	// KindRelease is a batch release, see release.go.
	KindRelease StageKind = "release"
)

// Event is what happens to a ticket: a person's action, a job's end or a
// timer. Each row of a flow's transitions table names one.
type Event string

// Events applied to tickets.
const (
	EvSubmit    Event = "submit"
	EvApprove   Event = "approve"
	EvReject    Event = "reject"
	EvCancel    Event = "cancel"
	EvRetry     Event = "retry"
	EvRollback  Event = "rollback"
	EvRelease   Event = "release"
	EvEdit      Event = "edit"
	EvSucceed   Event = "succeed"
	EvFail      Event = "fail"
	EvInterrupt Event = "interrupt"
	EvRemind    Event = "remind"
	EvEscalate  Event = "escalate"
	EvExpire    Event = "expire"
	EvSkip      Event = "skip"
	EvRedo      Event = "redo"
	// EvRefresh: looked-up fields (Flow.Refresh) changed while the ticket
	// waits; the approver sees them as they are now.
	EvRefresh Event = "refresh"
	// EvException: the requester asks for a way through a freeze.
	EvException Event = "exception"
	// EvDelegate: someone away handed their approvals to a delegate (or
	// got them back); the stage is offered to whoever holds them now.
	EvDelegate Event = "delegate"
)

// Events are every event a ticket's history can hold.
var Events = []Event{EvSubmit, EvApprove, EvReject, EvCancel, EvRetry, EvRollback, EvRelease, EvEdit, EvSucceed, EvFail,
	EvInterrupt, EvRemind, EvEscalate, EvExpire, EvSkip, EvRedo, EvRefresh, EvException, EvDelegate}

// PersonEvents are the events people cause with a command or a button.
var PersonEvents = []Event{EvApprove, EvReject, EvCancel, EvRetry, EvRollback, EvRelease, EvException}

// NoticeEvent names what a notice tells people; the presenter words it.
type NoticeEvent string

// Notices to people (direct messages).
const (
	NoticeApprovalNeeded NoticeEvent = "approval_needed"
	NoticeEdited         NoticeEvent = "edited"
	NoticeRedo           NoticeEvent = "redo"
	NoticeApproved       NoticeEvent = "approved"
	// NoticeStagePassed tells the requester a stage is behind the ticket:
	// who approved it, or that its step succeeded.
	NoticeStagePassed     NoticeEvent = "stage_passed"
	NoticeRejected        NoticeEvent = "rejected"
	NoticeCancelled       NoticeEvent = "cancelled"
	NoticeDone            NoticeEvent = "done"
	NoticeFailed          NoticeEvent = "failed"
	NoticeInterrupted     NoticeEvent = "interrupted"
	NoticeExpired         NoticeEvent = "expired"
	NoticeReminder        NoticeEvent = "reminder"
	NoticeEscalated       NoticeEvent = "escalated"
	NoticeRollbackStarted NoticeEvent = "rollback_started"
	NoticeRolledBack      NoticeEvent = "rolled_back"
	NoticeRollbackFailed  NoticeEvent = "rollback_failed"
	NoticeReleaseReady    NoticeEvent = "release_ready"
	NoticeBatchDone       NoticeEvent = "batch_done"
	NoticeBatchFailed     NoticeEvent = "batch_failed"
	// NoticeBatchRefused: a release stopped before it merged anything; the
	// batch stays pending and is released again once the cause is fixed.
	NoticeBatchRefused        NoticeEvent = "batch_refused"
	NoticeBatchRolledBack     NoticeEvent = "batch_rolled_back"
	NoticeBatchRollbackFailed NoticeEvent = "batch_rollback_failed"
	NoticeCleanupDone         NoticeEvent = "cleanup_done"
	NoticeCleanupFailed       NoticeEvent = "cleanup_failed"
	// NoticeExceptionNeeded asks a freeze's exception role to let a
	// ticket through.
	NoticeExceptionNeeded NoticeEvent = "exception_needed"
	// NoticeDelegated offers a stage to the delegate of someone away, or
	// back to them when they return.
	NoticeDelegated NoticeEvent = "delegated"
)

// Progress notices, posted in the ticket's thread.
const (
	NoticeStepStarted   NoticeEvent = "step_started"
	NoticeStepSucceeded NoticeEvent = "step_succeeded"
	NoticeStepFailed    NoticeEvent = "step_failed"
	// NoticeStepResumed: the replica running a step died and another one
	// runs it again (it is safe to repeat).
	NoticeStepResumed NoticeEvent = "step_resumed"
)

// Notices lists every notice event, for presenters to check that they
// word each one.
var Notices = []NoticeEvent{NoticeApprovalNeeded, NoticeEdited, NoticeRedo, NoticeApproved, NoticeStagePassed, NoticeRejected,
	NoticeCancelled, NoticeDone, NoticeFailed, NoticeInterrupted, NoticeExpired, NoticeReminder, NoticeEscalated,
	NoticeRollbackStarted, NoticeRolledBack, NoticeRollbackFailed, NoticeReleaseReady, NoticeBatchDone,
	NoticeBatchFailed, NoticeBatchRefused, NoticeBatchRolledBack, NoticeBatchRollbackFailed, NoticeCleanupDone, NoticeCleanupFailed,
	NoticeExceptionNeeded, NoticeDelegated, NoticeStepStarted, NoticeStepSucceeded, NoticeStepFailed, NoticeStepResumed}

// SystemActor is who the bot's own events are by (timers, steps, look-ups).
const SystemActor = "opsbot"
