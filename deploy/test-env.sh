#!/usr/bin/env bash
# Starts (idempotently) the real components Capsule's test suite runs
# against — the dedicated dockerd plus two more playing two compute hosts
# (test-a, test-b), the registry with the base image, RabbitMQ, PostgreSQL
# and Open vSwitch (best effort) — and prints the environment the tests
# read (internal/testenv), as in deploy/dev-test.env:
#
#   set -a; eval "$(deploy/test-env.sh)"; set +a
#
# Tests that need OVS create their own bridges and trunk (and remove them);
# CAPSULE_TEST_OVS=1 is printed only when Open vSwitch answers,
# CAPSULE_TEST_LXCFS only when LXCFS serves its proc files.
# Progress goes to stderr; stdout carries only the variable lines.
set -euo pipefail
# Whatever a command run below prints goes to stderr: stdout (kept as
# fd 3) carries only the variable lines callers evaluate (a service's
# start message there became "bash: Removed: command not found").
exec 3>&1 1>&2
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

# The dockerds of the two test "hosts" (multi-host and networking tests).
TEST_HOSTS=(test-a test-b)

cap_need_root
[ "${1:-}" = --install ] && cap_install_deps --test

# Networking tests plumb veths (iproute2) and turn checksum offload off
# (ethtool); a machine set up before they were needed may lack them.
if ! command -v ethtool >/dev/null || ! command -v ip >/dev/null; then
	cap_say "installing ethtool and iproute2"
	cap_apt_update
	cap_apt_install ethtool iproute2 || cap_die "apt-get install ethtool iproute2 failed"
fi

cap_dirs
cap_start_dockerd ""
cap_start_registry
cap_ensure_base_image
for h in "${TEST_HOSTS[@]}"; do
	cap_start_dockerd "$h"
	cap_prepull_image "$h"
done
cap_start_rabbitmq
cap_start_postgres
cap_pg_database capsule capsule capsule_test
# Tests drop their throw-away databases WITH (FORCE), which must be able to
# end an autovacuum worker busy in them (a superuser's backend).
cap_psql -c 'GRANT pg_signal_backend TO capsule' >/dev/null 2>&1
cap_start_ovs
cap_start_lxcfs

cat >&3 <<ENV
CAPSULE_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
CAPSULE_TEST_DOCKER_HOST=$CAPSULE_DOCKER_HOST
CAPSULE_TEST_DOCKER_HOST_A=$(cap_dockerd_host "${TEST_HOSTS[0]}")
CAPSULE_TEST_DOCKER_HOST_B=$(cap_dockerd_host "${TEST_HOSTS[1]}")
CAPSULE_TEST_IMAGE=$CAPSULE_IMAGE
CAPSULE_TEST_POSTGRES_DSN=postgres://capsule:capsule@127.0.0.1:5432/capsule_test?sslmode=disable
CAPSULE_TEST_REGISTRY=$CAPSULE_REGISTRY_ADDR
ENV
if cap_ovs_up; then echo CAPSULE_TEST_OVS=1 >&3; fi
if cap_lxcfs_up; then echo "CAPSULE_TEST_LXCFS=$CAPSULE_LXCFS_DIR" >&3; fi
