package errdefs

import (
	"errors"
	"fmt"
	"testing"
)

func TestKindSurvivesWrapping(t *testing.T) {
	base := NotFoundf("Instance %s could not be found.", "i-1")
	for name, err := range map[string]error{
		"bare":      base,
		"fmt %w":    fmt.Errorf("load: %w", base),
		"twice":     fmt.Errorf("api: %w", fmt.Errorf("load: %w", base)),
		"join":      errors.Join(errors.New("other"), base),
		"with more": fmt.Errorf("a: %w; b: %w", errors.New("x"), base),
	} {
		if !IsNotFound(err) || !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: IsNotFound(%v) = false", name, err)
		}
		if IsConflict(err) {
			t.Errorf("%s: IsConflict(%v) = true", name, err)
		}
		if KindOf(err) != ErrNotFound {
			t.Errorf("%s: KindOf = %q", name, KindOf(err))
		}
		if got := Message(err); got != "Instance i-1 could not be found." {
			t.Errorf("%s: Message = %q", name, got)
		}
	}
}

func TestMessageHidesTheCause(t *testing.T) {
	cause := errors.New("pq: relation instances does not exist")
	err := fmt.Errorf("create server: %w", Wrap(cause, ErrUnavailable, "The scheduler is unreachable."))
	if Message(err) != "The scheduler is unreachable." {
		t.Errorf("Message = %q", Message(err))
	}
	if !errors.Is(err, cause) {
		t.Error("the cause is not reachable through errors.Is")
	}
	if want := "create server: The scheduler is unreachable.: " + cause.Error(); err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
	if !IsUnavailable(err) {
		t.Error("IsUnavailable = false")
	}
}

func TestOutermostClassificationWins(t *testing.T) {
	inner := NotFound("port p-1 not found")
	outer := fmt.Errorf("attach: %w", Wrap(inner, ErrInvalidArgument, "Port id p-1 could not be found."))
	if KindOf(outer) != ErrInvalidArgument || Message(outer) != "Port id p-1 could not be found." {
		t.Errorf("KindOf/Message = %q/%q, want the outer InvalidArgument", KindOf(outer), Message(outer))
	}
	// Both kinds are in the chain: errors.Is sees each.
	if !IsInvalidArgument(outer) || !IsNotFound(outer) {
		t.Error("a kind in the chain is not seen by errors.Is")
	}
}

func TestUnclassified(t *testing.T) {
	err := fmt.Errorf("x: %w", errors.New("boom"))
	if KindOf(err) != "" || Message(err) != "" || Reason(err) != "" || IsNotFound(err) {
		t.Errorf("an unclassified error got kind %q message %q", KindOf(err), Message(err))
	}
	if KindOf(nil) != "" || Message(nil) != "" || IsNotFound(nil) {
		t.Error("nil is classified")
	}
}

func TestBareKindIsAnError(t *testing.T) {
	err := fmt.Errorf("lookup: %w", ErrConflict)
	if !IsConflict(err) || KindOf(err) != ErrConflict || Message(err) != "conflict" {
		t.Errorf("bare kind: IsConflict %v KindOf %q Message %q", IsConflict(err), KindOf(err), Message(err))
	}
}

func TestNamedValuesStayDistinct(t *testing.T) {
	// Packages keep exported error values (store.ErrPortNotFound, ...):
	// two values of one kind must not match each other.
	portNotFound := NotFound("PortNotFound")
	netNotFound := NotFound("NetworkNotFound")
	err := fmt.Errorf("get: %w", portNotFound)
	if !errors.Is(err, portNotFound) || errors.Is(err, netNotFound) {
		t.Errorf("errors.Is by identity broken: port %v net %v", errors.Is(err, portNotFound), errors.Is(err, netNotFound))
	}
}

func TestReasonAndCopies(t *testing.T) {
	base := Conflict("IP address 10.0.0.5 already allocated in subnet s-1")
	withReason := base.WithReason("IpAddressInUse")
	if base.Reason() != "" {
		t.Error("WithReason changed the original")
	}
	err := fmt.Errorf("allocate: %w", withReason)
	if Reason(err) != "IpAddressInUse" || KindOf(err) != ErrConflict {
		t.Errorf("Reason/KindOf = %q/%q", Reason(err), KindOf(err))
	}
	cause := errors.New("unique violation")
	if c := base.WithCause(cause); !errors.Is(c, cause) || errors.Is(base, cause) {
		t.Error("WithCause did not copy")
	}
}

func TestDefaultMessageAndValidity(t *testing.T) {
	if got := New(ErrNotSupported, "").Message(); got != "not supported" {
		t.Errorf("default message %q", got)
	}
	for _, k := range []Kind{ErrNotFound, ErrConflict, ErrInvalidArgument, ErrFailedPrecondition, ErrQuotaExceeded,
		ErrForbidden, ErrUnauthenticated, ErrUnavailable, ErrNotSupported, ErrInternal} {
		if !k.Valid() {
			t.Errorf("%q not valid", k)
		}
		if !errors.Is(New(k, "m"), k) {
			t.Errorf("New(%q) is not %q", k, k)
		}
	}
	if Kind("Bogus").Valid() {
		t.Error("an unknown kind is valid")
	}
}

func TestConstructorsPickTheirKind(t *testing.T) {
	for _, c := range []struct {
		err  *Error
		kind Kind
	}{
		{NotFound("m"), ErrNotFound}, {NotFoundf("%s", "m"), ErrNotFound},
		{Conflict("m"), ErrConflict}, {Conflictf("%s", "m"), ErrConflict},
		{InvalidArgument("m"), ErrInvalidArgument}, {InvalidArgumentf("%s", "m"), ErrInvalidArgument},
		{FailedPrecondition("m"), ErrFailedPrecondition}, {FailedPreconditionf("%s", "m"), ErrFailedPrecondition},
		{QuotaExceeded("m"), ErrQuotaExceeded}, {QuotaExceededf("%s", "m"), ErrQuotaExceeded},
		{Forbidden("m"), ErrForbidden}, {Forbiddenf("%s", "m"), ErrForbidden},
		{Unauthenticated("m"), ErrUnauthenticated},
		{Unavailable("m"), ErrUnavailable}, {Unavailablef("%s", "m"), ErrUnavailable},
		{NotSupported("m"), ErrNotSupported}, {NotSupportedf("%s", "m"), ErrNotSupported},
		{Internal("m"), ErrInternal}, {Internalf("%s", "m"), ErrInternal},
	} {
		if c.err.Kind() != c.kind || c.err.Message() != "m" {
			t.Errorf("%v: kind %q message %q, want %q", c.err, c.err.Kind(), c.err.Message(), c.kind)
		}
	}
}

func TestClass(t *testing.T) {
	portNotFound := Class{ErrNotFound, "PortNotFound"}
	netNotFound := Class{ErrNotFound, "NetworkNotFound"}
	err := fmt.Errorf("bind: %w", portNotFound.Newf("Port %s could not be found.", "p-1"))
	if !errors.Is(err, portNotFound) || errors.Is(err, netNotFound) {
		t.Errorf("class match: port %v network %v", errors.Is(err, portNotFound), errors.Is(err, netNotFound))
	}
	if !IsNotFound(err) || Reason(err) != "PortNotFound" || Message(err) != "Port p-1 could not be found." {
		t.Errorf("kind %q reason %q message %q", KindOf(err), Reason(err), Message(err))
	}
	if err.Error() != "bind: Port p-1 could not be found." {
		t.Errorf("Error() = %q", err.Error())
	}
	// A bare class is an error of its kind whose text is its reason.
	bare := fmt.Errorf("x: %w", portNotFound)
	if !errors.Is(bare, portNotFound) || !IsNotFound(bare) || Reason(bare) != "PortNotFound" || bare.Error() != "x: PortNotFound" {
		t.Errorf("bare class: %v kind %q reason %q", bare, KindOf(bare), Reason(bare))
	}
	// Same reason, other kind: not the class.
	if errors.Is(Conflict("m").WithReason("PortNotFound"), portNotFound) {
		t.Error("a Conflict matched a NotFound class")
	}
}
