package flows

import (
	"errors"
	"fmt"
)

// UserError is a mistake the person in chat can fix: Message says what was
// wrong and Hint what to type instead. Only UserErrors are shown in chat;
// every other error becomes "internal error, ref <id>".
type UserError struct {
	// Code names the kind of mistake for tests and the audit log, e.g.
	// "self_approval", "not_role_holder", "stale", "locked".
	Code    string
	Message string
	Hint    string
	// Fields maps a form field to what is wrong with it, for forms that
	// show errors next to the field.
	Fields map[string]string
}

func (e *UserError) Error() string {
	if e.Hint == "" {
		return e.Message
	}
	return e.Message + " (" + e.Hint + ")"
}

// Userf builds a UserError.
func Userf(code, hint, format string, a ...any) *UserError {
	return &UserError{Code: code, Message: fmt.Sprintf(format, a...), Hint: hint}
}

// CodeOf returns the code of a UserError in err's chain, or "".
func CodeOf(err error) string {
	var ue *UserError
	if errors.As(err, &ue) {
		return ue.Code
	}
	return ""
}

// TransientError is a failure that may pass when the step is tried again
// later (a timeout, a 5xx, a lost connection): the runner retries it with
// backoff up to the stage's max_attempts.
type TransientError struct{ Err error }

func (e *TransientError) Error() string { return e.Err.Error() }
func (e *TransientError) Unwrap() error { return e.Err }

// Transient marks err as transient; nil stays nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &TransientError{Err: err}
}

// TransientIf marks err as transient when cond holds.
func TransientIf(cond bool, err error) error {
	if cond {
		return Transient(err)
	}
	return err
}

// IsTransient reports whether err is marked transient.
func IsTransient(err error) bool {
	var te *TransientError
	return errors.As(err, &te)
}

// ConflictError says a change conflicts with what is already there; Files
// names the files, for the card and the person who resolves it.
type ConflictError struct {
	Files []string
	Err   error
}

func (e *ConflictError) Error() string { return e.Err.Error() }
func (e *ConflictError) Unwrap() error { return e.Err }
