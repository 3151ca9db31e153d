// Package ovstest gives tests a working Open vSwitch: a Client, and
// throw-away bridges named with a test prefix that are removed when the test
// ends. A machine without a usable OVS skips the test, or fails it under
// CAPSULE_TEST_REQUIRE=1 (testenv.Require).
package ovstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
	"github.com/capsule-cloud/capsule/ovs"
)

// Client returns an ovs.Client after checking that ovs-vsctl reaches a
// running ovsdb-server and that the test runs as root (bridges and devices
// need CAP_NET_ADMIN).
func Client(t testing.TB) *ovs.Client {
	t.Helper()
	c := ovs.New(ovs.Options{Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	testenv.Require(t, os.Geteuid() == 0, "tests need root (CAP_NET_ADMIN) to create bridges, veths and namespaces")
	_, err := c.Vsctl(ctx, "show")
	testenv.Require(t, err == nil, "Open vSwitch is not usable (start it with /usr/share/openvswitch/scripts/ovs-ctl start): %v", err)
	return c
}

// Name returns prefix followed by random hex digits, at most 15 characters
// in all (the kernel's limit for interface names).
func Name(prefix string) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	n := prefix + hex.EncodeToString(b[:])
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

// Bridge creates a bridge named "brt-<random>" with c.EnsureBridge and
// deletes it when the test ends.
func Bridge(t testing.TB, c *ovs.Client) string {
	t.Helper()
	name := Name("brt-")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.DeleteBridge(ctx, name); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	if err := c.EnsureBridge(ctx, name); err != nil {
		t.Fatalf("create test bridge: %v", err)
	}
	return name
}
