package scheduler

import (
	"context"
	"testing"

	"github.com/capsule-cloud/capsule/store"
)

// TestSpecForAuthorizedKeys: the spec carries the key copied at boot; an
// x509 keypair's certificate is not an ssh key and is not sent.
func TestSpecForAuthorizedKeys(t *testing.T) {
	st := openSQLite(t)
	ctx := context.Background()
	const key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAISchedulerKey user@host"
	for _, c := range []struct{ id, keyData, want string }{
		{"i-ssh", key + "\n", key},
		{"i-none", "", ""},
		{"i-x509", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", ""},
	} {
		inst := newInstance(t, st, c.id, func(i *store.Instance) { i.KeyData = c.keyData })
		sp, err := SpecFor(ctx, st, inst)
		if err != nil {
			t.Fatal(err)
		}
		if sp.AuthorizedKeys != c.want {
			t.Errorf("%s: AuthorizedKeys = %q, want %q", c.id, sp.AuthorizedKeys, c.want)
		}
	}
}
