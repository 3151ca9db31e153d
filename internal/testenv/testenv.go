// Package testenv gives tests the real components they run against
// (RabbitMQ, dockerd, the registry's base image, PostgreSQL), found through
// environment variables that deploy/test.sh sets after starting them.
//
// A test whose component is not configured is skipped on a developer's
// machine; with CAPSULE_TEST_REQUIRE=1 (as CI runs) it fails instead, so a
// broken environment can never turn the suite silently green.
package testenv

import (
	"os"
	"testing"
)

func need(t testing.TB, env, what string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		if os.Getenv("CAPSULE_TEST_REQUIRE") == "1" {
			t.Fatalf("%s is required (CAPSULE_TEST_REQUIRE=1) but %s is not set", what, env)
		}
		t.Skipf("%s not configured: set %s (deploy/test.sh does)", what, env)
	}
	return v
}

// AMQPURL returns the RabbitMQ URL for tests.
func AMQPURL(t testing.TB) string { return need(t, "CAPSULE_TEST_AMQP_URL", "RabbitMQ") }

// DockerHost returns the dockerd endpoint for tests (unix:///...sock).
func DockerHost(t testing.TB) string { return need(t, "CAPSULE_TEST_DOCKER_HOST", "dockerd") }

// Image returns the base image reference in the local registry.
func Image(t testing.TB) string { return need(t, "CAPSULE_TEST_IMAGE", "the base image") }

// PostgresDSN returns a PostgreSQL DSN for a database tests may wipe.
func PostgresDSN(t testing.TB) string { return need(t, "CAPSULE_TEST_POSTGRES_DSN", "PostgreSQL") }

// Registry returns the registry host:port.
func Registry(t testing.TB) string { return need(t, "CAPSULE_TEST_REGISTRY", "the registry") }
