package drivers

import "context"

// PasswordSetter is a driver that can set root's password in a server's
// /etc/shadow (Nova's set_admin_password). A driver without it, or an
// image without /etc/shadow (ErrNotSupported), cannot.
type PasswordSetter interface {
	// SetAdminPassword puts hash (a crypt(3) hash, e.g. "$6$...") in
	// root's line of instance id's /etc/shadow.
	SetAdminPassword(ctx context.Context, id, hash string) error
}

// RescuePasswordSetter is a Rescuer that can set root's password in the
// rescue system it booted for a server (Nova's rescue adminPass).
type RescuePasswordSetter interface {
	// SetRescuePassword puts hash in root's line of the /etc/shadow of
	// instance id's rescue system; ErrNotSupported when it has none.
	SetRescuePassword(ctx context.Context, id, hash string) error
}
