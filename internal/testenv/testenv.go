// Package testenv gives tests the real components they run against
// (RabbitMQ, dockerd, the registry's base image, PostgreSQL), found through
// environment variables that deploy/test.sh sets after starting them.
//
// A test whose component is not configured is skipped on a developer's
// machine; with CAPSULE_TEST_REQUIRE=1 (as CI runs) it fails instead, so a
// broken environment can never turn the suite silently green. Require is
// that rule, for every component a test needs, not only these.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// Require skips t unless ok — the component the test needs is there — or,
// under CAPSULE_TEST_REQUIRE=1 (as CI runs), fails it. The message says
// what is missing and how to get it.
func Require(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	why := fmt.Sprintf(format, args...)
	if os.Getenv("CAPSULE_TEST_REQUIRE") == "1" {
		t.Fatalf("required (CAPSULE_TEST_REQUIRE=1): %s", why)
	}
	t.Skip(why)
}

// Env returns the environment variable env, which configures what (a
// component), Required to be set.
func Env(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	Require(t, v != "", "%s not configured: set %s (deploy/test-env.sh does)", what, env)
	return v
}

// AMQPURL returns the RabbitMQ URL for tests.
func AMQPURL(t testing.TB) string {
	t.Helper()
	return Env(t, "CAPSULE_TEST_AMQP_URL", "RabbitMQ")
}

// DockerHost returns the dockerd endpoint for tests (unix:///...sock).
func DockerHost(t testing.TB) string {
	t.Helper()
	return Env(t, "CAPSULE_TEST_DOCKER_HOST", "dockerd")
}

// Image returns the base image reference in the local registry.
func Image(t testing.TB) string {
	t.Helper()
	return Env(t, "CAPSULE_TEST_IMAGE", "the base image")
}

// PostgresDSN returns a PostgreSQL DSN for a database tests may wipe.
func PostgresDSN(t testing.TB) string {
	t.Helper()
	return Env(t, "CAPSULE_TEST_POSTGRES_DSN", "PostgreSQL")
}

// Registry returns the registry host:port.
func Registry(t testing.TB) string {
	t.Helper()
	return Env(t, "CAPSULE_TEST_REGISTRY", "the registry")
}

// NetworkMode is the docker driver's network mode tests run in:
// CAPSULE_TEST_NETWORK_MODE ("sandbox" or "netns"; "" is the driver's
// default). Mode netns needs dockerds with Capsule's runtime
// (deploy/test-env.sh starts them so).
func NetworkMode() string { return os.Getenv("CAPSULE_TEST_NETWORK_MODE") }
