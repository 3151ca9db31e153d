#!/usr/bin/env bash
# Capsule's test command (what CI runs, as root):
#
#   deploy/test.sh                 everything: gofmt, go vet, deploy scripts, compose file,
#                                  OVS trunk check, go test ./...
#   deploy/test.sh ./bus/...       only these packages' tests (checks still run)
#
# It starts the real components the tests use (deploy/test-env.sh) and sets
# CAPSULE_TEST_REQUIRE=1, so a test whose component is missing fails
# instead of skipping. Every step runs even after a failure; the exit status
# is non-zero when any failed. CAPSULE_TEST_P sets go test -p (default 1:
# several packages measure CPU, disk and network rates against their
# tolerances, and packages running side by side on two cores would skew
# each other's measurements).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CAPSULE_REPO"

failed=()
step() {
	local name=$1
	shift
	cap_section "$name"
	local t0=$SECONDS
	if "$@"; then
		echo "---- $name: ok ($((SECONDS - t0))s)" >&2
	else
		echo "---- $name: FAILED ($((SECONDS - t0))s)" >&2
		failed+=("$name")
	fi
}

test_env() {
	local env_file
	env_file=$(mktemp)
	"$CAPSULE_REPO/deploy/test-env.sh" >"$env_file" || return 1
	cat "$env_file" >&2
	set -a
	# shellcheck disable=SC1090
	. "$env_file"
	set +a
	rm -f "$env_file"
	export CAPSULE_TEST_REQUIRE=1
}

gofmt_check() {
	local bad
	bad=$(gofmt -l . 2>&1) || true
	[ -z "$bad" ] && return 0
	echo "not gofmt-formatted:" >&2
	echo "$bad" >&2
	return 1
}

compose_check() {
	local compose
	if ! compose=$(cap_compose_cmd); then
		echo "no docker-compose (nor docker compose) here: docker-compose.yml not validated" >&2
		return 0
	fi
	# shellcheck disable=SC2086
	$compose -f "$CAPSULE_REPO/docker-compose.yml" config -q
}

shell_check() {
	bash -n deploy/*.sh .ci/run || return 1
	if command -v shellcheck >/dev/null; then
		shellcheck -x deploy/*.sh .ci/run
	fi
}

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

cap_need_root
step "Test environment" test_env
[ ${#failed[@]} = 0 ] || cap_die "the test environment could not be started: no test can run"
step "gofmt" gofmt_check
step "go vet" go vet ./...
step "Deployment files" shell_check
step "docker-compose.yml" compose_check
# The simulated physical network the networking tests build (OVS userspace
# bridges joined by a trunk): checked on its own first, so a machine where
# it cannot work says so plainly.
step "OVS trunk (deploy/check-trunk.sh --scratch)" deploy/check-trunk.sh --scratch
step "go test ${pkgs[*]}" go test -count=1 -timeout 40m -p "${CAPSULE_TEST_P:-1}" "${pkgs[@]}"
# Go end-to-end tests live in ./e2e (part of ./...); a deployment-level
# script, when there is one, runs last.
if [ $# = 0 ] && [ -x deploy/e2e.sh ]; then step "deploy/e2e.sh" deploy/e2e.sh; fi

if [ ${#failed[@]} -gt 0 ]; then
	printf '\ndeploy/test.sh: FAILED:' >&2
	printf ' [%s]' "${failed[@]}" >&2
	printf '\n' >&2
	exit 1
fi
printf '\ndeploy/test.sh: all steps passed\n' >&2
