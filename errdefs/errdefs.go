// Package errdefs is Capsule's one error vocabulary: a small set of kinds
// (not found, conflict, invalid argument, ...) that every layer — store,
// drivers, agents, domain code — classifies its failures with, so that
// each API maps a kind to its own error body once, through a table,
// instead of guessing from error types, status codes or message text.
//
// An *Error carries three things apart:
//   - its Kind, tested with errors.Is(err, errdefs.ErrNotFound) or
//     errdefs.IsNotFound(err), through any wrapping;
//   - a safe message, the exact text an API may show its client
//     (Message(err)), which never includes the internal cause;
//   - an optional reason, a machine-readable refinement within the kind
//     (Neutron's error "type", e.g. "IpAddressInUse");
//
// and, optionally, the internal cause chain (for logs and errors.Is/As).
// The bus carries kind, message and reason across request/reply, so an
// agent's NotFound is still a NotFound at the API.
package errdefs

import (
	"errors"
	"fmt"
)

// Kind classifies an error. A Kind is itself an error (a sentinel), so
// errors.Is(err, errdefs.ErrConflict) tests for it. Its string value is
// stable: the bus sends it between processes.
type Kind string

// The kinds. Add one only when no existing kind says what the caller
// should do differently.
const (
	// ErrNotFound: the named thing does not exist (or is not visible to
	// the caller).
	ErrNotFound Kind = "NotFound"
	// ErrConflict: the request collides with the current state of a
	// resource (a duplicate name, an address in use, a concurrent change).
	ErrConflict Kind = "Conflict"
	// ErrInvalidArgument: the request itself is malformed or names
	// something it may not; repeating it cannot succeed.
	ErrInvalidArgument Kind = "InvalidArgument"
	// ErrFailedPrecondition: the request is well formed but the system is
	// not in a state that allows it (an instance in the wrong state, a
	// server without a network sandbox, a volume that blocks a move).
	ErrFailedPrecondition Kind = "FailedPrecondition"
	// ErrQuotaExceeded: a quota or a fixed per-resource limit refuses it.
	ErrQuotaExceeded Kind = "QuotaExceeded"
	// ErrForbidden: the caller is known but not allowed.
	ErrForbidden Kind = "Forbidden"
	// ErrUnauthenticated: the caller could not be identified (no, bad or
	// expired credentials).
	ErrUnauthenticated Kind = "Unauthenticated"
	// ErrUnavailable: a dependency (a host, the scheduler, the bus) did
	// not answer; the same request may succeed later.
	ErrUnavailable Kind = "Unavailable"
	// ErrNotSupported: the operation is not implemented here (by this
	// driver, this release).
	ErrNotSupported Kind = "NotSupported"
	// ErrInternal: the operation failed in a way the caller cannot fix,
	// and the message says what failed (Nova's InterfaceAttachFailed).
	// An error without any kind is internal too, but shows no message.
	ErrInternal Kind = "Internal"
)

// Error makes a Kind a sentinel error; its text is the default message.
func (k Kind) Error() string {
	switch k {
	case ErrNotFound:
		return "not found"
	case ErrConflict:
		return "conflict"
	case ErrInvalidArgument:
		return "invalid argument"
	case ErrFailedPrecondition:
		return "failed precondition"
	case ErrQuotaExceeded:
		return "quota exceeded"
	case ErrForbidden:
		return "forbidden"
	case ErrUnauthenticated:
		return "unauthenticated"
	case ErrUnavailable:
		return "unavailable"
	case ErrNotSupported:
		return "not supported"
	case ErrInternal:
		return "internal error"
	}
	return "unknown error kind " + string(k)
}

// Valid reports whether k is one of the kinds above (a kind read off the
// wire from a newer peer may not be).
func (k Kind) Valid() bool {
	switch k {
	case ErrNotFound, ErrConflict, ErrInvalidArgument, ErrFailedPrecondition, ErrQuotaExceeded,
		ErrForbidden, ErrUnauthenticated, ErrUnavailable, ErrNotSupported, ErrInternal:
		return true
	}
	return false
}

// Error is a classified error: a kind, a message safe to show a client,
// an optional reason and an optional internal cause.
type Error struct {
	kind   Kind
	msg    string
	reason string
	cause  error
}

// New returns an error of kind k whose safe message is msg.
func New(k Kind, msg string) *Error { return &Error{kind: k, msg: msg} }

// Newf is New with a formatted message.
func Newf(k Kind, format string, args ...any) *Error {
	return &Error{kind: k, msg: fmt.Sprintf(format, args...)}
}

// Wrap classifies cause as kind k with the safe message msg; cause stays
// reachable through errors.Is/As and is shown by Error, never by Message.
// A nil cause gives New(k, msg).
func Wrap(cause error, k Kind, msg string) *Error {
	return &Error{kind: k, msg: msg, cause: cause}
}

// WithReason returns a copy of e carrying reason (e.g. a Neutron error
// type).
func (e *Error) WithReason(reason string) *Error {
	c := *e
	c.reason = reason
	return &c
}

// WithCause returns a copy of e wrapping cause (for logs and errors.Is).
func (e *Error) WithCause(cause error) *Error {
	c := *e
	c.cause = cause
	return &c
}

// Kind returns e's kind.
func (e *Error) Kind() Kind { return e.kind }

// Message returns the safe message (the kind's text when none was given).
func (e *Error) Message() string {
	if e.msg == "" {
		return e.kind.Error()
	}
	return e.msg
}

// Reason returns the machine-readable reason, "" if none.
func (e *Error) Reason() string { return e.reason }

// Error is the safe message followed by the internal cause, for logs.
func (e *Error) Error() string {
	if e.cause == nil {
		return e.Message()
	}
	return e.Message() + ": " + e.cause.Error()
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.cause }

// Is matches e's kind, so errors.Is(err, errdefs.ErrNotFound) holds for any
// NotFound in err's chain, and a Class of the same kind and reason. Other
// targets match by identity (errors.Is compares those itself), so a
// package's named *Error values stay distinct.
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case Kind:
		return t == e.kind
	case Class:
		return t.Kind == e.kind && t.Reason == e.reason
	}
	return false
}

// Class names the errors of one kind and reason, for a package whose
// callers tell reasons apart: store.ErrPortNotFound is
// Class{ErrNotFound, "PortNotFound"}; store.ErrPortNotFound.Newf(...)
// makes one, errors.Is(err, store.ErrPortNotFound) recognises it (and
// errdefs.IsNotFound too). A Class is itself an error, its reason.
type Class struct {
	Kind   Kind
	Reason string
}

func (c Class) Error() string { return c.Reason }

// Is makes a bare Class an error of its kind.
func (c Class) Is(target error) bool {
	k, ok := target.(Kind)
	return ok && k == c.Kind
}

// New returns an error of the class with the safe message msg.
func (c Class) New(msg string) *Error { return New(c.Kind, msg).WithReason(c.Reason) }

// Newf returns an error of the class with a formatted safe message.
func (c Class) Newf(format string, args ...any) *Error {
	return Newf(c.Kind, format, args...).WithReason(c.Reason)
}

// classified is what *Error and a bare Kind have in common: errors.As
// with it finds the outermost classified error of a chain.
type classified interface {
	error
	classification() (Kind, string, string)
}

func (k Kind) classification() (Kind, string, string) { return k, k.Error(), "" }

func (c Class) classification() (Kind, string, string) { return c.Kind, c.Reason, c.Reason }

func (e *Error) classification() (Kind, string, string) { return e.kind, e.Message(), e.reason }

func outermost(err error) (kind Kind, msg, reason string) {
	if c, ok := errors.AsType[classified](err); ok {
		return c.classification()
	}
	return "", "", ""
}

// KindOf returns the kind of the outermost classified error in err's
// chain (the most specific decision about it), "" when there is none.
func KindOf(err error) Kind {
	k, _, _ := outermost(err)
	return k
}

// Message returns the safe message of the outermost classified error in
// err's chain, "" when there is none (the error is internal: show a
// generic text and log err).
func Message(err error) string {
	_, msg, _ := outermost(err)
	return msg
}

// Reason returns the reason of the outermost classified error in err's
// chain, "" when there is none.
func Reason(err error) string {
	_, _, r := outermost(err)
	return r
}

// IsNotFound reports whether err is (or wraps) a NotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsConflict reports whether err is (or wraps) a Conflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsInvalidArgument reports whether err is (or wraps) an InvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsFailedPrecondition reports whether err is (or wraps) a
// FailedPrecondition.
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }

// IsQuotaExceeded reports whether err is (or wraps) a QuotaExceeded.
func IsQuotaExceeded(err error) bool { return errors.Is(err, ErrQuotaExceeded) }

// IsForbidden reports whether err is (or wraps) a Forbidden.
func IsForbidden(err error) bool { return errors.Is(err, ErrForbidden) }

// IsUnauthenticated reports whether err is (or wraps) an Unauthenticated.
func IsUnauthenticated(err error) bool { return errors.Is(err, ErrUnauthenticated) }

// IsUnavailable reports whether err is (or wraps) an Unavailable.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsNotSupported reports whether err is (or wraps) a NotSupported.
func IsNotSupported(err error) bool { return errors.Is(err, ErrNotSupported) }

// NotFound returns a NotFound with the safe message msg.
func NotFound(msg string) *Error { return New(ErrNotFound, msg) }

// NotFoundf returns a NotFound with a formatted safe message.
func NotFoundf(format string, args ...any) *Error { return Newf(ErrNotFound, format, args...) }

// Conflict returns a Conflict with the safe message msg.
func Conflict(msg string) *Error { return New(ErrConflict, msg) }

// Conflictf returns a Conflict with a formatted safe message.
func Conflictf(format string, args ...any) *Error { return Newf(ErrConflict, format, args...) }

// InvalidArgument returns an InvalidArgument with the safe message msg.
func InvalidArgument(msg string) *Error { return New(ErrInvalidArgument, msg) }

// InvalidArgumentf returns an InvalidArgument with a formatted safe message.
func InvalidArgumentf(format string, args ...any) *Error {
	return Newf(ErrInvalidArgument, format, args...)
}

// FailedPrecondition returns a FailedPrecondition with the safe message msg.
func FailedPrecondition(msg string) *Error { return New(ErrFailedPrecondition, msg) }

// FailedPreconditionf returns a FailedPrecondition with a formatted safe
// message.
func FailedPreconditionf(format string, args ...any) *Error {
	return Newf(ErrFailedPrecondition, format, args...)
}

// QuotaExceeded returns a QuotaExceeded with the safe message msg.
func QuotaExceeded(msg string) *Error { return New(ErrQuotaExceeded, msg) }

// QuotaExceededf returns a QuotaExceeded with a formatted safe message.
func QuotaExceededf(format string, args ...any) *Error {
	return Newf(ErrQuotaExceeded, format, args...)
}

// Forbidden returns a Forbidden with the safe message msg.
func Forbidden(msg string) *Error { return New(ErrForbidden, msg) }

// Forbiddenf returns a Forbidden with a formatted safe message.
func Forbiddenf(format string, args ...any) *Error { return Newf(ErrForbidden, format, args...) }

// Unauthenticated returns an Unauthenticated with the safe message msg.
func Unauthenticated(msg string) *Error { return New(ErrUnauthenticated, msg) }

// Unavailable returns an Unavailable with the safe message msg.
func Unavailable(msg string) *Error { return New(ErrUnavailable, msg) }

// Unavailablef returns an Unavailable with a formatted safe message.
func Unavailablef(format string, args ...any) *Error { return Newf(ErrUnavailable, format, args...) }

// NotSupported returns a NotSupported with the safe message msg.
func NotSupported(msg string) *Error { return New(ErrNotSupported, msg) }

// NotSupportedf returns a NotSupported with a formatted safe message.
func NotSupportedf(format string, args ...any) *Error { return Newf(ErrNotSupported, format, args...) }

// IsInternal reports whether err is (or wraps) an Internal.
func IsInternal(err error) bool { return errors.Is(err, ErrInternal) }

// Internal returns an Internal with the safe message msg.
func Internal(msg string) *Error { return New(ErrInternal, msg) }

// Internalf returns an Internal with a formatted safe message.
func Internalf(format string, args ...any) *Error { return Newf(ErrInternal, format, args...) }
