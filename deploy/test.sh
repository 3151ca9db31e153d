#!/usr/bin/env bash
# Capsule's test command (what CI runs, as root):
#
#   deploy/test.sh                 everything: gofmt, go vet, staticcheck, deploy
#                                  scripts, compose file, OVS trunk check, then
#                                  the three test tiers below
#   deploy/test.sh ./bus/...       only these packages' tests, in the tiers
#                                  they have (the checks still run)
#
# The tests run in three tiers, each its own step:
#   go test (packages)  every package but ./e2e, side by side: go test -p
#                       $(nproc) (CAPSULE_TEST_P overrides it);
#   go test ./e2e       the end-to-end tests, which boot whole clouds, up
#                       to 8 at a time: go test -parallel 8
#                       (CAPSULE_E2E_PARALLEL overrides it; they mostly
#                       wait on dockerd, so more clouds than cores pay);
#                       Four of them run again in network mode sandbox
#                       (CAPSULE_TEST_NETWORK_MODE=sandbox);
#   go fuzz (short)     each native fuzz target (func Fuzz* in a _test.go)
#                       of the packages run for CAPSULE_FUZZTIME (default
#                       2000x: 2000 inputs) with -fuzz; their seed corpora already ran as
#                       ordinary tests in the packages tier, and so did the
#                       short HTTP fuzz of internal/apifuzz (20,000
#                       generated requests against an in-process cloud);
#   rate tests          the tests that measure a rate or a latency against a
#                       tolerance (CPU quota, disk throttles, NIC shaping,
#                       alarm latency): build tag ratetest, in *_rate_test.go
#                       files, named TestRate*; run last, one package at a
#                       time, so nothing else skews what they measure.
#
# It starts the real components the tests use (deploy/test-env.sh) and sets
# CAPSULE_TEST_REQUIRE=1, so a test whose component is missing fails
# instead of skipping. Every step runs even after a failure; the exit status
# is non-zero when any failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
cd "$CAPSULE_REPO"

failed=()
# Each go test step's output is also kept here, so that the end of the
# run can repeat what failed (CI shows the tail of a long log).
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# logged NAME CMD...: CMD with its output also in $logs/NAME.
logged() {
	local name=$1
	shift
	"$@" 2>&1 | tee "$logs/$name"
	return "${PIPESTATUS[0]}"
}

# failures_summary: the failing tests' lines of every kept log.
failures_summary() {
	local f
	for f in "$logs"/*; do
		[ -f "$f" ] || continue
		grep -E -- '^\s*--- FAIL|^FAIL|^panic:|_test\.go:[0-9]+: ' "$f" | grep -v -E ' (INFO|DEBUG) ' | tail -60 |
			sed "s|^|$(basename "$f"): |" >&2 || true
	done
}

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

# The staticcheck CI pins; installed (from the Go module proxy) when
# missing or another version.
STATICCHECK_VERSION=v0.8.2

staticcheck_check() {
	local sc
	sc="$(go env GOPATH)/bin/staticcheck"
	if ! "$sc" -version 2>/dev/null | grep -qF "(${STATICCHECK_VERSION#v})"; then
		go install "honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION" || return 1
	fi
	"$sc" -tags ratetest ./...
}

pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)

# split_tiers: the packages of pkgs in each tier (import paths).
unit_pkgs=() e2e_pkgs=() rate_pkgs=()
split_tiers() {
	local e2e listed withrate p line
	e2e="$(go list -m)/e2e"
	listed=$(go list "${pkgs[@]}") || return 1
	withrate=$(go list -tags ratetest -f '{{.ImportPath}}{{range .TestGoFiles}} {{.}}{{end}}{{range .XTestGoFiles}} {{.}}{{end}}' "${pkgs[@]}") || return 1
	for p in $listed; do
		if [ "$p" = "$e2e" ]; then e2e_pkgs+=("$p"); else unit_pkgs+=("$p"); fi
	done
	while read -r line; do
		[[ $line == *_rate_test.go* ]] && rate_pkgs+=("${line%% *}")
	done <<<"$withrate"
	echo "packages: ${#unit_pkgs[@]}; e2e: ${#e2e_pkgs[@]}; with rate tests: ${rate_pkgs[*]:-none}" >&2
	rate_files_check
}

# rate_files_check: every *_rate_test.go is behind the tag (else it runs
# in the busy tiers too) and names its tests TestRate* (else the rate
# step's -run skips them).
rate_files_check() {
	local f bad=0
	while IFS= read -r f; do
		if ! grep -q '^//go:build ratetest$' "$f"; then
			echo "$f: a rate test file without //go:build ratetest" >&2
			bad=1
		fi
		if grep -n '^func Test' "$f" | grep -v '^[0-9]*:func TestRate'; then
			echo "$f: rate tests are named TestRate*" >&2
			bad=1
		fi
	done < <(find . -name '*_rate_test.go' -not -path './.git/*')
	return "$bad"
}

# fuzz_short: every native fuzz target of the unit tier's packages for
# CAPSULE_FUZZTIME (default 2000x: 2000 inputs) each (docs/security.md,
# "Fuzzing"). A count, not a duration: Go 1.26's fuzz coordinator can
# report its own -fuzztime deadline as a failure ("context deadline
# exceeded", no failing input; golang/go#75804, fixed in Go 1.27) when a
# loaded machine keeps a worker busy past it. Each
# package's test binary is built once with the fuzzing instrumentation and
# run once per target (a go test -fuzz per target would link it again
# every time: 5 s of overhead a target). The corpus grows in Go's fuzz
# cache, as go test -fuzz keeps it; a failing input is written to the
# package's testdata/fuzz/ (commit it as a regression seed).
fuzz_short() {
	local module dir pkg target bin log cache bad=0
	module=$(go list -m)
	bin=$(mktemp -d)
	log="$bin/log"
	cache="$(go env GOCACHE)/fuzz"
	while IFS= read -r dir; do
		pkg="$module/${dir#./}"
		[[ " ${unit_pkgs[*]} " == *" $pkg "* ]] || continue
		if ! go test -c -fuzz=. -o "$bin/t" "$pkg" >"$log" 2>&1; then
			echo "build the fuzz targets of $pkg:" >&2
			cat "$log" >&2
			bad=1
			continue
		fi
		# shellcheck disable=SC2013 # Go function names: one word each
		for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //'); do
			if ! (cd "$dir" && "$bin/t" -test.run '^$' -test.fuzz "^$target\$" -test.fuzztime "${CAPSULE_FUZZTIME:-2000x}" \
				-test.fuzzcachedir "$cache/$pkg" >"$log" 2>&1); then
				echo "fuzz target $pkg $target failed:" >&2
				grep -v ' INFO ' "$log" | tail -30 >&2
				bad=1
			fi
		done
	done < <(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u)
	rm -rf "$bin"
	return "$bad"
}

cap_need_root
step "Test environment" test_env
[ ${#failed[@]} = 0 ] || cap_die "the test environment could not be started: no test can run"
step "gofmt" gofmt_check
# -tags ratetest: the rate tests' files too (the tag only adds files).
step "go vet" go vet -tags ratetest ./...
step "staticcheck" staticcheck_check
step "Deployment files" shell_check
step "docker-compose.yml" compose_check
# The simulated physical network the networking tests build (OVS userspace
# bridges joined by a trunk): checked on its own first, so a machine where
# it cannot work says so plainly.
step "OVS trunk (deploy/check-trunk.sh --scratch)" deploy/check-trunk.sh --scratch
step "Test tiers" split_tiers
if [ ${#unit_pkgs[@]} -gt 0 ]; then
	step "go test (packages)" logged packages go test -count=1 -timeout 40m -p "${CAPSULE_TEST_P:-$(nproc)}" "${unit_pkgs[@]}"
fi
if [ ${#unit_pkgs[@]} -gt 0 ]; then
	step "go fuzz (short)" fuzz_short
fi
if [ ${#e2e_pkgs[@]} -gt 0 ]; then
	step "go test ./e2e" logged e2e go test -count=1 -timeout 40m -parallel "${CAPSULE_E2E_PARALLEL:-8}" "${e2e_pkgs[@]}"
fi
if [ ${#e2e_pkgs[@]} -gt 0 ]; then
	# The sandbox network mode (agent.network_mode: sandbox, a sandbox
	# container beside each server; the default is netns, one container)
	# on the tests of a networked server's life: boot, stop, start, reboot
	# and delete, two hosts, rescue, dockerd restarts and a host reboot.
	step "go test ./e2e (network_mode sandbox)" logged e2e-sandbox env CAPSULE_TEST_NETWORK_MODE=sandbox go test -count=1 -timeout 20m \
		-parallel "${CAPSULE_E2E_PARALLEL:-8}" -run '^(TestServerLifecycle|TestNetworkTwoHosts|TestRescueUnrescue|TestServersSurviveDockerdRestartAndHostReboot)$' "${e2e_pkgs[@]}"
fi
if [ ${#rate_pkgs[@]} -gt 0 ]; then
	# -v: what each one measured goes to the log (docs/benchmarks.md).
	step "rate tests" logged rate go test -count=1 -timeout 20m -tags ratetest -p 1 -run '^TestRate' -v "${rate_pkgs[@]}"
fi
# A deployment-level script, when there is one, runs last.
if [ $# = 0 ] && [ -x deploy/e2e.sh ]; then step "deploy/e2e.sh" deploy/e2e.sh; fi

if [ ${#failed[@]} -gt 0 ]; then
	printf '\n==== what failed (repeated from above)\n' >&2
	failures_summary
	printf '\ndeploy/test.sh: FAILED:' >&2
	printf ' [%s]' "${failed[@]}" >&2
	printf '\n' >&2
	exit 1
fi
printf '\ndeploy/test.sh: all steps passed\n' >&2
