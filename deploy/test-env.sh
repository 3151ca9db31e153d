#!/usr/bin/env bash
# Starts (idempotently) the real components Capsule's test suite runs
# against — the dedicated dockerd, the registry with the base image,
# RabbitMQ, PostgreSQL (and Open vSwitch, best effort) — and prints the
# environment the tests read (internal/testenv), as in deploy/dev-test.env:
#
#   set -a; eval "$(deploy/test-env.sh)"; set +a
#
# Progress goes to stderr; stdout carries only the variable lines.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

cap_need_root
[ "${1:-}" = --install ] && cap_install_deps

cap_dirs
cap_start_dockerd
cap_start_registry
cap_ensure_base_image
cap_start_rabbitmq
cap_start_postgres
cap_pg_database capsule capsule capsule_test
cap_start_ovs

cat <<ENV
CAPSULE_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
CAPSULE_TEST_DOCKER_HOST=$CAPSULE_DOCKER_HOST
CAPSULE_TEST_IMAGE=$CAPSULE_IMAGE
CAPSULE_TEST_POSTGRES_DSN=postgres://capsule:capsule@127.0.0.1:5432/capsule_test?sslmode=disable
CAPSULE_TEST_REGISTRY=$CAPSULE_REGISTRY_ADDR
ENV
