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
