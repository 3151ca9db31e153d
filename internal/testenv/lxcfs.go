package testenv

import "testing"

// LXCFS returns the mount point of a running LXCFS (started with
// --enable-loadavg --enable-cfs, as deploy/test-env.sh does), whose proc
// files the docker driver mounts into servers.
func LXCFS(t testing.TB) string {
	t.Helper()
	return Env(t, "CAPSULE_TEST_LXCFS", "LXCFS")
}
