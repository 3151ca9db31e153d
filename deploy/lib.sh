# shellcheck shell=bash
# Shared functions of Capsule's deployment scripts (allinone.sh, test-env.sh,
# test.sh, .ci/run). Sourced, never run. Every "start" function is idempotent:
# it checks the service answers before starting anything, so the all-in-one
# and the test suite start daemons one way and running a script twice is fine.
#
# Supervision: when systemd is PID 1, Capsule's own daemons run as the units
# in deploy/systemd/; otherwise (containers, CI sandboxes) as background
# processes with pid files under $CAPSULE_RUN and logs under $CAPSULE_LOG.
#
# The paths below may be overridden from the environment (e.g. to try the
# scripts on a scratch tree); the systemd units assume the defaults, so
# non-default paths force process supervision.

CAPSULE_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CAPSULE_ETC=${CAPSULE_ETC:-/etc/capsule}
CAPSULE_RUN=${CAPSULE_RUN:-/run/capsule}
CAPSULE_LIB=${CAPSULE_LIB:-/var/lib/capsule}
CAPSULE_LOG=${CAPSULE_LOG:-/var/log/capsule}
CAPSULE_BIN=${CAPSULE_BIN:-/usr/local/bin}
CAPSULE_REGISTRY_ADDR=${CAPSULE_REGISTRY_ADDR:-127.0.0.1:5050}
CAPSULE_DOCKER_SOCK=$CAPSULE_RUN/docker.sock
CAPSULE_DOCKER_HOST=unix://$CAPSULE_DOCKER_SOCK
CAPSULE_IMAGE=$CAPSULE_REGISTRY_ADDR/capsule/busybox:latest
# shellcheck disable=SC2034 # used by allinone.sh
CAPSULE_CONFIG=$CAPSULE_ETC/capsule.yaml
CAPSULE_SECRETS=$CAPSULE_ETC/secrets
CAPSULE_IDENTITY_URL=${CAPSULE_IDENTITY_URL:-http://127.0.0.1:5000/v3}
CAPSULE_COMPUTE_URL=${CAPSULE_COMPUTE_URL:-http://127.0.0.1:8774/v2.1}

# Go lives in /usr/local/go on the project's machines; sbin holds dockerd,
# pg_* and OVS tools, which a non-login root shell may lack.
export PATH=/usr/local/go/bin:$PATH:/usr/local/sbin:/usr/sbin:/sbin

# Debian packages Capsule needs on a host (control plane + compute agent).
CAPSULE_PACKAGES=(docker.io openvswitch-switch rabbitmq-server docker-registry postgresql
	busybox-static python3-openstackclient apache2-utils curl ca-certificates iproute2 procps
	cgroupfs-mount apparmor ethtool lxcfs xfsprogs btrfs-progs e2fsprogs util-linux tar)
# What only the test suite needs: chromium runs the portal's browser tests
# (e2e/portal_test.go). 113 MB of the 247 MB an all-in-one would fetch
# otherwise, and a third of its package time.
CAPSULE_TEST_PACKAGES=(chromium)

# ---- messages ---------------------------------------------------------------

cap_say() { printf '%s\n' "capsule: $*" >&2; }
cap_warn() { printf '%s\n' "capsule: WARNING: $*" >&2; }
cap_die() {
	printf '%s\n' "capsule: ERROR: $*" >&2
	exit 1
}
cap_section() { printf '\n==== %s ====\n' "$*" >&2; }

# cap_wait DESCRIPTION SECONDS CMD...: polls CMD until it succeeds.
cap_wait() {
	local what=$1 secs=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	while [ $SECONDS -lt $deadline ]; do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.5
	done
	cap_warn "$what did not come up within ${secs}s"
	return 1
}

cap_tail_log() {
	[ -f "$1" ] || return 0
	echo "---- last lines of $1 ----" >&2
	tail -n "${2:-30}" "$1" >&2
}

cap_need_root() { [ "$(id -u)" = 0 ] || cap_die "run as root (it installs packages and starts system daemons)"; }

# ---- supervision ------------------------------------------------------------

cap_default_paths() {
	[ "$CAPSULE_ETC" = /etc/capsule ] && [ "$CAPSULE_RUN" = /run/capsule ] &&
		[ "$CAPSULE_LIB" = /var/lib/capsule ] && [ "$CAPSULE_LOG" = /var/log/capsule ] &&
		[ "$CAPSULE_BIN" = /usr/local/bin ] && [ "$CAPSULE_REGISTRY_ADDR" = 127.0.0.1:5050 ]
}

# cap_systemd: true when daemons should be systemd units. CAPSULE_SUPERVISOR
# (systemd|process) overrides the detection.
cap_systemd() {
	case ${CAPSULE_SUPERVISOR:-auto} in
	systemd) return 0 ;;
	process) return 1 ;;
	esac
	[ -d /run/systemd/system ] && [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && cap_default_paths
}

cap_dirs() {
	mkdir -p "$CAPSULE_ETC" "$CAPSULE_RUN" "$CAPSULE_LIB" "$CAPSULE_LOG"
	chmod 700 "$CAPSULE_ETC"
}

cap_pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# cap_spawn PIDFILE LOGFILE CMD...: runs CMD detached (own session, no
# stdin, survives the calling shell). The pid written is CMD's own (sh
# execs into it); PIDFILE "-" leaves pid files to CMD (dockerd writes its own).
cap_spawn() {
	local pidfile=$1 log=$2
	shift 2
	mkdir -p "$(dirname "$log")"
	if [ "$pidfile" = - ]; then
		nohup setsid "$@" >>"$log" 2>&1 </dev/null &
	else
		# shellcheck disable=SC2016
		nohup setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
	fi
	disown 2>/dev/null || true
	# The pid file is written by the detached shell: wait for it, so a
	# liveness check right after this returns sees the new process.
	if [ "$pidfile" != - ]; then
		local i
		for ((i = 0; i < 50; i++)); do
			[ -s "$pidfile" ] && return 0
			sleep 0.1
		done
		cap_warn "$pidfile not written within 5s"
	fi
}

# cap_stop_pidfile NAME PIDFILE [SECONDS]: TERM, wait, then KILL.
cap_stop_pidfile() {
	local name=$1 pidfile=$2 secs=${3:-20} pid i
	if ! cap_pid_alive "$pidfile"; then
		rm -f "$pidfile"
		return 0
	fi
	pid=$(cat "$pidfile")
	cap_say "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < secs * 2; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.5
	done
	if kill -0 "$pid" 2>/dev/null; then
		cap_warn "$name did not stop in ${secs}s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

# cap_install_unit NAME: copies deploy/systemd/NAME.service into place
# (reloading systemd only when it changed).
cap_install_unit() {
	local src=$CAPSULE_REPO/deploy/systemd/$1.service dst=/etc/systemd/system/$1.service
	if ! cmp -s "$src" "$dst"; then
		install -m 644 "$src" "$dst"
		systemctl daemon-reload
	fi
}

# cap_mark_started NAME: remembers that this script (not the user or the
# distribution) started a shared daemon, so "stop" stops only those.
cap_mark_started() { mkdir -p "$CAPSULE_RUN" && touch "$CAPSULE_RUN/started.$1"; }
cap_started_by_us() { [ -e "$CAPSULE_RUN/started.$1" ]; }

# ---- packages ---------------------------------------------------------------

cap_pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

CAP_APT_UPDATED=
cap_apt_update() {
	[ -n "$CAP_APT_UPDATED" ] && return 0
	cap_say "apt-get update"
	# One retry: a mirror may be briefly out of sync with its index.
	apt-get update -qq >/dev/null || { sleep 5 && apt-get update -qq >/dev/null; } || cap_die "apt-get update failed"
	CAP_APT_UPDATED=1
}

cap_apt_install() {
	# On a host without systemd, package scripts would start distribution
	# services (a second dockerd on /var/run/docker.sock, a registry on
	# Keystone's port 5000...). A temporary policy-rc.d keeps them off; we
	# start what Capsule needs ourselves.
	local policy=/usr/sbin/policy-rc.d made_policy='' rc=0
	if ! cap_systemd && [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
	fi
	mkdir -p "$CAPSULE_LOG"
	DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >>"$CAPSULE_LOG/apt.log" 2>&1 || rc=$?
	[ -n "$made_policy" ] && rm -f "$policy"
	[ $rc = 0 ] || cap_tail_log "$CAPSULE_LOG/apt.log" 40
	return $rc
}

# cap_install_deps cloud|--test: installs the missing Debian packages (one
# apt-get update at most). With --test (the test suite's machines) also the
# test packages and docker-compose when the distribution has it (optional:
# used only to validate docker-compose.yml; tried once per machine).
cap_install_deps() {
	local missing=() p compose_marker=$CAPSULE_LIB/.docker-compose-tried wanted=("${CAPSULE_PACKAGES[@]}")
	[ "${1:-}" = --test ] && wanted+=("${CAPSULE_TEST_PACKAGES[@]}")
	for p in "${wanted[@]}"; do cap_pkg_installed "$p" || missing+=("$p"); done
	if [ ${#missing[@]} -gt 0 ]; then
		cap_say "installing: ${missing[*]}"
		cap_apt_update
		cap_apt_install "${missing[@]}" || cap_die "apt-get install ${missing[*]} failed"
		if cap_systemd && [[ " ${missing[*]} " == *" docker-registry "* ]]; then
			# Debian's registry unit listens on :5000, Keystone's port;
			# Capsule runs its own registry on $CAPSULE_REGISTRY_ADDR.
			systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
		fi
	else
		cap_say "Debian packages present"
	fi
	if [ "${1:-}" = --test ] && ! cap_compose_cmd >/dev/null && [ ! -e "$compose_marker" ]; then
		mkdir -p "$CAPSULE_LIB" && touch "$compose_marker"
		cap_apt_update
		if apt-cache show docker-compose >/dev/null 2>&1; then
			cap_apt_install docker-compose || cap_warn "docker-compose could not be installed (optional)"
		fi
	fi
	cap_check_go
}

cap_check_go() {
	command -v go >/dev/null ||
		cap_die "Go is missing: install Go $(sed -n 's/^go //p' "$CAPSULE_REPO/go.mod") at /usr/local/go (https://go.dev/dl/)"
}

# cap_compose_cmd: prints the compose command available, if any.
cap_compose_cmd() {
	if command -v docker-compose >/dev/null 2>&1; then
		echo docker-compose
	elif docker compose version >/dev/null 2>&1; then
		echo "docker compose"
	else
		return 1
	fi
}

# ---- secrets ----------------------------------------------------------------

cap_random() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-"${1:-24}"; }

# cap_secret KEY: prints KEY's value from $CAPSULE_SECRETS, generating and
# storing it (mode 600) the first time.
cap_secret() {
	local key=$1 val
	mkdir -p "$CAPSULE_ETC"
	touch "$CAPSULE_SECRETS"
	chmod 600 "$CAPSULE_SECRETS"
	val=$(sed -n "s/^$key=//p" "$CAPSULE_SECRETS" | tail -n 1)
	if [ -z "$val" ]; then
		val=$(cap_random 24)
		printf '%s=%s\n' "$key" "$val" >>"$CAPSULE_SECRETS"
	fi
	printf '%s' "$val"
}

# ---- dockerd (dedicated to Capsule) -----------------------------------------

# Capsule's dockerds are named instances. The main one (name "") serves the
# all-in-one's single compute host and the test suite; named ones (host-a,
# host-b... of `allinone.sh --hosts N`, test-a/test-b of test-env.sh) each
# play one more compute host on this machine, with their own socket, data
# and exec roots, pid file and containerd namespace:
#
#   name ""      unix://$CAPSULE_RUN/docker.sock       $CAPSULE_LIB/docker
#   name host-a  unix://$CAPSULE_RUN/docker-host-a.sock $CAPSULE_LIB/docker-host-a
cap_dockerd_sock() { if [ -z "${1:-}" ]; then echo "$CAPSULE_RUN/docker.sock"; else echo "$CAPSULE_RUN/docker-$1.sock"; fi; }
cap_dockerd_host() { echo "unix://$(cap_dockerd_sock "${1:-}")"; }
cap_dockerd_pidfile() { if [ -z "${1:-}" ]; then echo "$CAPSULE_RUN/docker.pid"; else echo "$CAPSULE_RUN/docker-$1.pid"; fi; }
cap_dockerd_log() { if [ -z "${1:-}" ]; then echo "$CAPSULE_LOG/dockerd.log"; else echo "$CAPSULE_LOG/dockerd-$1.log"; fi; }
cap_dockerd_data() { if [ -z "${1:-}" ]; then echo "$CAPSULE_LIB/docker"; else echo "$CAPSULE_LIB/docker-$1"; fi; }
cap_dockerd_exec() { if [ -z "${1:-}" ]; then echo "$CAPSULE_RUN/docker-exec"; else echo "$CAPSULE_RUN/docker-$1-exec"; fi; }
# cap_dockerd_unit NAME: the systemd unit of instance NAME.
cap_dockerd_unit() { if [ -z "${1:-}" ]; then echo capsule-dockerd.service; else echo "capsule-dockerd@$1.service"; fi; }

# cap_docker [--name NAME] ARGS...: the docker CLI against a Capsule dockerd.
cap_docker() {
	local name=
	if [ "${1:-}" = --name ]; then
		name=$2
		shift 2
	fi
	docker -H "$(cap_dockerd_host "$name")" "$@"
}
# cap_dockerd_up [NAME]: the instance answers on its socket.
cap_dockerd_up() { curl -sf --max-time 3 --unix-socket "$(cap_dockerd_sock "${1:-}")" http://docker/_ping >/dev/null 2>&1; }

# cap_dockerd_args [NAME]: no bridge/NAT/iptables (Capsule wires networks
# itself), so a Docker the user runs is never disturbed. --live-restore
# keeps the containers running while dockerd itself stops, restarts or is
# upgraded: a server's processes, network namespace, veths, OVS port,
# flows, shaping and cgroups stay as they are (docs/operations.md). Extra flags (e.g.
# --insecure-registry CONTROLLER:5050 on a compute host) come from
# CAPSULE_DOCKERD_ARGS in $CAPSULE_ETC/dockerd.env (every instance).
# A btrfs data root (cap_btrfs_dataroot) gets the btrfs storage driver.
# Keep in step with deploy/systemd/capsule-dockerd{,@}.service.
cap_dockerd_args() {
	local name=${1:-} extra='' ns=capsule
	[ -n "$name" ] && ns=capsule-$name
	extra=$(cap_dockerd_storage "$name")
	# shellcheck disable=SC1091
	[ -f "$CAPSULE_ETC/dockerd.env" ] && extra="$extra $(. "$CAPSULE_ETC/dockerd.env" && echo "${CAPSULE_DOCKERD_ARGS:-}")"
	# shellcheck disable=SC2086
	echo --host "$(cap_dockerd_host "$name")" --data-root "$(cap_dockerd_data "$name")" \
		--exec-root "$(cap_dockerd_exec "$name")" --pidfile "$(cap_dockerd_pidfile "$name")" \
		--bridge=none --iptables=false --ip-forward=false --ip-masq=false --live-restore \
		--containerd-namespace "$ns" --containerd-plugins-namespace "$ns-plugins" \
		--add-runtime "capsule=$CAPSULE_BIN/capsule-runc" $extra
}

# cap_install_runtime: builds Capsule's OCI runtime wrapper (cmd/capsule-runc,
# what a server in agent.network_mode netns runs under) into $CAPSULE_BIN as
# capsule-runc-join, with cmd/capsule-runc/capsule-runc.sh as capsule-runc
# (the name dockerd registers: it runs the Go wrapper for `runc create` only,
# runc itself for the rest), before a dockerd that registers it starts
# (CAPSULE_SKIP_BUILD=1 keeps installed ones).
cap_install_runtime() {
	if [ -n "${CAPSULE_SKIP_BUILD:-}" ] && [ -x "$CAPSULE_BIN/capsule-runc" ] && [ -x "$CAPSULE_BIN/capsule-runc-join" ]; then
		return 0
	fi
	cap_check_go
	mkdir -p "$CAPSULE_REPO/bin"
	# Static (no cgo): it starts without the dynamic loader at every
	# container create.
	(cd "$CAPSULE_REPO" && CGO_ENABLED=0 go build -o "$CAPSULE_REPO/bin/capsule-runc-join" ./cmd/capsule-runc) ||
		cap_die "building capsule-runc failed (go build ./cmd/capsule-runc in $CAPSULE_REPO): see the compiler errors above"
	install -m 755 "$CAPSULE_REPO/bin/capsule-runc-join" "$CAPSULE_BIN/capsule-runc-join.new"
	install -m 755 "$CAPSULE_REPO/cmd/capsule-runc/capsule-runc.sh" "$CAPSULE_BIN/capsule-runc.new"
	# Renamed into place: running dockerds call the runtime by path at
	# every container operation, never a half-written file.
	mv -f "$CAPSULE_BIN/capsule-runc-join.new" "$CAPSULE_BIN/capsule-runc-join"
	mv -f "$CAPSULE_BIN/capsule-runc.new" "$CAPSULE_BIN/capsule-runc"
}

# cap_dockerd_has_runtime [NAME]: instance NAME has Capsule's runtime (a
# dockerd started by an older version of these scripts has not).
cap_dockerd_has_runtime() {
	curl -sf --max-time 5 --unix-socket "$(cap_dockerd_sock "${1:-}")" http://docker/info 2>/dev/null | grep -q '"capsule":'
}

# cap_loop_dataroot FS DIR IMG GB OPTS DESC HINT: the part the XFS and
# btrfs data roots share: IMG, a sparse file of GB GiB formatted with
# mkfs.FS, is made once (unless DIR already holds data, which it would
# hide) and mounted on DIR with OPTS (loop,...): by a systemd mount unit
# (DESC, enabled for boot, before capsule-dockerd) under systemd, else by
# mount. It warns and fails (nothing left mounted, no unit left) when it
# cannot; HINT says why a mount may fail.
cap_loop_dataroot() {
	local fs=$1 dir=$2 img=$3 gb=$4 opts=$5 desc=$6 hint=$7 unit quiet=/dev/stderr
	if [ ! -e "$img" ]; then
		if [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
			cap_warn "$dir already holds data on $(stat -f -c %T "$dir"): not replacing it with a $fs data root; root disks are not enforced"
			return 1
		fi
		command -v "mkfs.$fs" >/dev/null || { cap_warn "mkfs.$fs missing: root disks are not enforced"; return 1; }
		mkdir -p "$(dirname "$img")"
		# mkfs.btrfs talks even with -q.
		[ "$fs" = btrfs ] && quiet=/dev/null
		if ! { truncate -s "${gb}G" "$img.tmp" && "mkfs.$fs" -q "$img.tmp" >/dev/null 2>"$quiet" && mv "$img.tmp" "$img"; }; then
			rm -f "$img.tmp"
			cap_warn "could not make the $fs image $img: root disks are not enforced"
			return 1
		fi
		chmod 600 "$img"
	fi
	if cap_systemd; then
		unit=$(systemd-escape --path --suffix=mount "$dir")
		printf '[Unit]\nDescription=%s\nBefore=capsule-dockerd.service\n\n[Mount]\nWhat=%s\nWhere=%s\nType=%s\nOptions=%s\n\n[Install]\nWantedBy=multi-user.target\n' \
			"$desc" "$img" "$dir" "$fs" "$opts" >"/etc/systemd/system/$unit.tmp"
		if ! cmp -s "/etc/systemd/system/$unit.tmp" "/etc/systemd/system/$unit"; then
			mv "/etc/systemd/system/$unit.tmp" "/etc/systemd/system/$unit"
			systemctl daemon-reload
		else
			rm -f "/etc/systemd/system/$unit.tmp"
		fi
		systemctl enable --quiet "$unit" 2>/dev/null || true
		if ! systemctl start "$unit" 2>/dev/null; then
			# No unit left that capsule-dockerd (RequiresMountsFor) would
			# then fail on at every start.
			systemctl disable --quiet "$unit" 2>/dev/null || true
			rm -f "/etc/systemd/system/$unit" && systemctl daemon-reload
			systemctl reset-failed "$unit" 2>/dev/null || true
			cap_warn "cannot mount $img on $dir $hint: root disks are not enforced"
			return 1
		fi
	else
		mount -t "$fs" -o "$opts" "$img" "$dir" 2>/dev/null ||
			{ cap_warn "cannot mount $img on $dir $hint: root disks are not enforced"; return 1; }
	fi
}

# cap_xfs_dataroot DIR IMG GB: DIR becomes an XFS filesystem mounted with
# project quotas (pquota), held in IMG, a sparse file of GB GiB made and
# formatted once: overlay2 can then cap each server's root disk at its
# flavor's disk (docker's storage-opt size; docs/operations.md "Root disk").
# Idempotent: an XFS pquota mount already at DIR is kept, IMG re-mounted on
# every run (and by a systemd mount unit at boot when under systemd). A DIR
# that already holds data on another filesystem is left alone (it would be
# hidden), as is one on a kernel without XFS quotas: the function warns and
# fails, and the driver reports the host as not enforcing root disks.
cap_xfs_dataroot() {
	local dir=$1 img=$2 gb=$3 fs opts
	mkdir -p "$dir"
	read -r fs opts < <(awk -v d="$dir" '$2 == d {f=$3; o=$4} END {print f, o}' /proc/mounts)
	if [ -n "$fs" ]; then
		case "$fs,$opts" in
		xfs,*prjquota* | xfs,*pquota*) return 0 ;;
		esac
		cap_warn "$dir is a $fs mount without project quotas: root disks are not enforced"
		return 1
	fi
	cap_loop_dataroot xfs "$dir" "$img" "$gb" loop,pquota "Capsule dockerd data root with project quotas" \
		"with pquota (kernel without XFS quotas?)" || return 1
	cap_say "$dir: XFS with project quotas on $img (${gb} GiB sparse)"
}

# cap_mount_fs DIR: the filesystem type mounted at DIR ("" when none).
cap_mount_fs() { awk -v d="$1" '$2 == d {f=$3} END {print f}' /proc/mounts; }

# cap_dockerd_storage [NAME]: the storage driver flag for instance NAME:
# --storage-driver btrfs on a btrfs data root (dockerd would pick overlay2
# there, which cannot cap), nothing otherwise.
cap_dockerd_storage() {
	[ "$(cap_mount_fs "$(cap_dockerd_data "${1:-}")")" = btrfs ] && echo --storage-driver btrfs
	return 0
}

# cap_btrfs_dataroot DIR IMG GB: DIR becomes a btrfs filesystem with quota
# groups enabled, held in IMG, a sparse file of GB GiB made and formatted
# once: dockerd's btrfs storage driver then caps each server's root disk
# with a qgroup limit (storage-opt size). The all-in-one's choice on a
# kernel without XFS quotas (docs/operations.md "Root disk"). Idempotent
# as cap_xfs_dataroot: a btrfs mount at DIR is kept (quotas enabled
# again), IMG re-mounted on every run (a systemd mount unit at boot); a
# DIR holding data on another filesystem is left alone, with a warning.
cap_btrfs_dataroot() {
	local dir=$1 img=$2 gb=$3 fs
	mkdir -p "$dir"
	fs=$(cap_mount_fs "$dir")
	if [ -n "$fs" ] && [ "$fs" != btrfs ]; then
		cap_warn "$dir is a $fs mount, not btrfs: root disks are not enforced"
		return 1
	fi
	if [ -z "$fs" ]; then
		if ! command -v mkfs.btrfs >/dev/null || ! command -v btrfs >/dev/null; then
			cap_warn "mkfs.btrfs missing (btrfs-progs): root disks are not enforced"
			return 1
		fi
		cap_loop_dataroot btrfs "$dir" "$img" "$gb" loop "Capsule dockerd data root (btrfs, quota groups)" \
			"(kernel without btrfs?)" || return 1
	fi
	# Quota groups persist on the filesystem; enabling them again is a no-op.
	btrfs quota enable "$dir" 2>/dev/null ||
		{ cap_warn "btrfs quota enable $dir failed: root disks may not be enforced (dockerd's probe decides)"; }
	cap_say "$dir: btrfs with quota groups on $img (${gb} GiB sparse); dockerd uses the btrfs storage driver"
}

# cap_capped_dataroot NAME: the all-in-one's data root for instance NAME:
# XFS with project quotas (overlay2) where the kernel has XFS quotas, else
# btrfs (the btrfs storage driver). A btrfs image made on an earlier run
# keeps its choice.
cap_capped_dataroot() {
	local data
	data=$(cap_dockerd_data "${1:-}")
	if [ ! -e "$data.btrfs" ] && [ "$(cap_mount_fs "$data")" != btrfs ]; then
		cap_xfs_dataroot "$data" "$data.xfs" "${CAPSULE_DATAROOT_GB:-20}" && return 0
		# Its failed attempt leaves no mount; nor its image, unused now.
		[ -n "$(cap_mount_fs "$data")" ] && return 1
		rm -f "$data.xfs"
		cap_say "falling back to a btrfs data root for root disk caps"
	fi
	cap_btrfs_dataroot "$data" "$data.btrfs" "${CAPSULE_DATAROOT_GB:-20}"
}

# cap_dockerd_storage_dropin [NAME]: under systemd, the unit of instance
# NAME gets the storage driver flag (CAPSULE_DOCKERD_STORAGE in a drop-in).
cap_dockerd_storage_dropin() {
	local d
	d=/etc/systemd/system/$(cap_dockerd_unit "${1:-}").d
	mkdir -p "$d"
	printf '[Service]\nEnvironment="CAPSULE_DOCKERD_STORAGE=%s"\n' "$(cap_dockerd_storage "${1:-}")" >"$d/storage.conf.tmp"
	if ! cmp -s "$d/storage.conf.tmp" "$d/storage.conf"; then
		mv "$d/storage.conf.tmp" "$d/storage.conf"
		systemctl daemon-reload
	else
		rm -f "$d/storage.conf.tmp"
	fi
}

# cap_start_dockerd [NAME]: starts instance NAME unless it answers.
cap_start_dockerd() {
	local name=${1:-} log
	log=$(cap_dockerd_log "$name")
	if cap_dockerd_up "$name"; then
		cap_say "dockerd already answers on $(cap_dockerd_host "$name")"
		cap_dockerd_has_runtime "$name" ||
			cap_warn "dockerd on $(cap_dockerd_host "$name") has no 'capsule' OCI runtime (started by an older version of this script): agents with network_mode netns refuse it; restart it to register $CAPSULE_BIN/capsule-runc"
		return 0
	fi
	cap_dirs
	cap_install_runtime
	mkdir -p "$(cap_dockerd_data "$name")" "$(cap_dockerd_exec "$name")"
	# The all-in-one caps servers' root disks (CAPSULE_DATAROOT_XFS=1):
	# an XFS data root with project quotas, else a btrfs one, before
	# dockerd opens it.
	if [ "${CAPSULE_DATAROOT_XFS:-0}" = 1 ]; then
		cap_capped_dataroot "$name" || true
	fi
	# Without systemd nothing may have mounted the cgroup hierarchies
	# dockerd needs.
	if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ ! -d /sys/fs/cgroup/memory ] && command -v cgroupfs-mount >/dev/null; then
		cgroupfs-mount || cap_warn "cgroupfs-mount failed"
	fi
	if cap_systemd; then
		if [ -z "$name" ]; then cap_install_unit capsule-dockerd; else cap_install_unit capsule-dockerd@; fi
		cap_dockerd_storage_dropin "$name"
		systemctl start "$(cap_dockerd_unit "$name")"
	else
		# A pid file left by a dead dockerd makes the next one refuse to start.
		cap_pid_alive "$(cap_dockerd_pidfile "$name")" || rm -f "$(cap_dockerd_pidfile "$name")"
		# shellcheck disable=SC2046
		cap_spawn - "$log" dockerd $(cap_dockerd_args "$name")
	fi
	cap_say "starting dockerd on $(cap_dockerd_host "$name")"
	cap_wait "dockerd ${name:-(main)}" 60 cap_dockerd_up "$name" || {
		cap_tail_log "$log"
		cap_die "dockerd did not start (see $log or journalctl -u $(cap_dockerd_unit "$name"))"
	}
}

# cap_stop_dockerd [NAME]: stops instance NAME (its containers stop with it).
cap_stop_dockerd() {
	local name=${1:-}
	if cap_systemd; then
		systemctl stop "$(cap_dockerd_unit "$name")" 2>/dev/null || true
	fi
	cap_stop_pidfile "dockerd ${name:-(main)}" "$(cap_dockerd_pidfile "$name")" 30
}

# cap_dockerd_names: the named instances that have a pid file, socket or
# data root on this machine (whatever started them).
cap_dockerd_names() {
	local f n
	for f in "$CAPSULE_RUN"/docker-*.pid "$CAPSULE_RUN"/docker-*.sock "$CAPSULE_LIB"/docker-*; do
		[ -e "$f" ] || continue
		n=${f##*/docker-}
		n=${n%.pid}
		n=${n%.sock}
		echo "$n"
	done | sort -u
}

# cap_unmount_under DIR: lazily unmounts what a killed dockerd left mounted
# (overlay layers, netns, shm), deepest first, so rm -rf can proceed.
cap_unmount_under() {
	local d=$1 m
	[ -d "$d" ] || return 0
	awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# cap_remove_dockerd NAME: stops a named instance and deletes its data.
cap_remove_dockerd() {
	local name=$1
	[ -n "$name" ] || cap_die "cap_remove_dockerd: refusing to remove the main dockerd"
	if cap_dockerd_up "$name"; then
		local ids
		ids=$(cap_docker --name "$name" ps -aq 2>/dev/null || true)
		# shellcheck disable=SC2086
		[ -z "$ids" ] || cap_docker --name "$name" rm -f $ids >/dev/null 2>&1 || true
	fi
	cap_stop_dockerd "$name"
	cap_unmount_under "$(cap_dockerd_exec "$name")"
	cap_unmount_under "$(cap_dockerd_data "$name")"
	rm -rf "$(cap_dockerd_data "$name")" "$(cap_dockerd_exec "$name")" "$(cap_dockerd_sock "$name")" \
		"$(cap_dockerd_pidfile "$name")"
	# Its XFS or btrfs data root (cap_capped_dataroot), when it had one.
	if cap_systemd; then
		local unit
		unit=$(systemd-escape --path --suffix=mount "$(cap_dockerd_data "$name")")
		if [ -e "/etc/systemd/system/$unit" ]; then
			systemctl disable --quiet --now "$unit" 2>/dev/null || true
			rm -f "/etc/systemd/system/$unit" && systemctl daemon-reload
		fi
		rm -rf "/etc/systemd/system/$(cap_dockerd_unit "$name").d"
	fi
	rm -f "$(cap_dockerd_data "$name").xfs" "$(cap_dockerd_data "$name").btrfs"
}

# ---- registry ---------------------------------------------------------------

# The registry is open for the test suite and protected (htpasswd, bcrypt)
# for the all-in-one: CAPSULE_REGISTRY_AUTH=1 (deploy/allinone.sh sets it).
# The user is "capsule", the password REGISTRY_PASSWORD in $CAPSULE_SECRETS;
# capsule.yaml's registry section hands both to the API and the agents.
CAPSULE_REGISTRY_AUTH=${CAPSULE_REGISTRY_AUTH:-0}
CAPSULE_REGISTRY_USER=capsule
CAPSULE_REGISTRY_HTPASSWD=$CAPSULE_ETC/registry.htpasswd
# Docker CLI logins for Capsule's own pushes/pulls stay out of root's
# ~/.docker (the user's own Docker is never touched).
CAPSULE_DOCKER_CONFIG=$CAPSULE_ETC/docker-client

cap_registry_auth() { [ "$CAPSULE_REGISTRY_AUTH" = 1 ]; }
cap_registry_password() { cap_secret REGISTRY_PASSWORD; }

# cap_registry_status: the HTTP status of an anonymous GET /v2/ (200 open,
# 401 protected, 000 down).
cap_registry_status() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$CAPSULE_REGISTRY_ADDR/v2/" 2>/dev/null || true
}
cap_registry_up() {
	local code
	code=$(cap_registry_status)
	[ "$code" = 200 ] || [ "$code" = 401 ]
}
# cap_registry_mode_ok: it answers, open or protected as wanted.
cap_registry_mode_ok() {
	local code
	code=$(cap_registry_status)
	if cap_registry_auth; then [ "$code" = 401 ]; else [ "$code" = 200 ]; fi
}

# cap_registry_curl ARGS...: curl with the registry login when protected.
# The login goes in a config on a pipe (printf is a builtin): a password on
# curl's command line is readable by every user in ps.
cap_registry_curl() {
	if cap_registry_auth; then
		curl -K <(printf 'user = "%s:%s"\n' "$CAPSULE_REGISTRY_USER" "$(cap_registry_password)") "$@"
	else
		curl "$@"
	fi
}

cap_write_registry_config() {
	local f=$CAPSULE_ETC/registry.yml auth=
	if cap_registry_auth; then
		umask 077
		cap_registry_password | htpasswd -Bin "$CAPSULE_REGISTRY_USER" >"$CAPSULE_REGISTRY_HTPASSWD.tmp"
		umask 022
		mv "$CAPSULE_REGISTRY_HTPASSWD.tmp" "$CAPSULE_REGISTRY_HTPASSWD"
		auth="auth:
  htpasswd:
    realm: capsule-registry
    path: $CAPSULE_REGISTRY_HTPASSWD"
	fi
	cat >"$f.tmp" <<EOF
# Capsule's private image registry (deploy/lib.sh; rewritten on start).
# Not on :5000, which is the Identity API's port.
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $CAPSULE_LIB/registry
  delete:
    enabled: true
http:
  addr: $CAPSULE_REGISTRY_ADDR
$auth
EOF
	mv "$f.tmp" "$f"
}

cap_start_registry() {
	if cap_registry_mode_ok; then
		cap_say "registry already answers on $CAPSULE_REGISTRY_ADDR"
		cap_registry_login
		return 0
	fi
	if cap_registry_up; then
		# Running, but open where it must be protected or the other way
		# round (the test suite and the all-in-one share this machine).
		cap_say "restarting the registry on $CAPSULE_REGISTRY_ADDR (authentication $(cap_registry_auth && echo on || echo off))"
		cap_stop_registry
	fi
	cap_dirs
	mkdir -p "$CAPSULE_LIB/registry"
	# Image layers are tenants' data: root only.
	chmod 700 "$CAPSULE_LIB/registry"
	cap_write_registry_config
	if cap_systemd; then
		cap_install_unit capsule-registry
		systemctl restart capsule-registry.service
	else
		cap_spawn "$CAPSULE_RUN/registry.pid" "$CAPSULE_LOG/registry.log" docker-registry serve "$CAPSULE_ETC/registry.yml"
	fi
	cap_say "starting registry on $CAPSULE_REGISTRY_ADDR"
	cap_wait registry 30 cap_registry_mode_ok || {
		cap_tail_log "$CAPSULE_LOG/registry.log"
		cap_die "registry did not start on $CAPSULE_REGISTRY_ADDR"
	}
	cap_registry_login
}

# cap_registry_login: logs Capsule's Docker CLI config in to a protected
# registry, for the base image's push and the pre-pulls.
cap_registry_login() {
	export DOCKER_CONFIG=$CAPSULE_DOCKER_CONFIG
	mkdir -p "$DOCKER_CONFIG"
	chmod 700 "$DOCKER_CONFIG"
	cap_registry_auth || return 0
	cap_registry_password | cap_docker login -u "$CAPSULE_REGISTRY_USER" --password-stdin "$CAPSULE_REGISTRY_ADDR" >/dev/null ||
		cap_die "docker login to the registry $CAPSULE_REGISTRY_ADDR failed"
}

cap_stop_registry() {
	if cap_systemd; then
		systemctl stop capsule-registry.service 2>/dev/null || true
	fi
	cap_stop_pidfile registry "$CAPSULE_RUN/registry.pid"
}

# CAPSULE_BASE_VERSION is the base image's capsule.base-version label that
# this tree builds (deploy/images/build-base.sh, BASE_VERSION): an older
# image in the registry or a dockerd is rebuilt or pulled again.
# 2: capsule-init runs the user data the agent prepares (package userdata).
CAPSULE_BASE_VERSION=2

# cap_base_version_of [NAME]: the capsule.base-version of the base image in
# dockerd instance NAME (0 when it lacks the image or the label).
cap_base_version_of() {
	local v
	v=$(cap_docker --name "${1:-}" image inspect -f '{{index .Config.Labels "capsule.base-version"}}' "$CAPSULE_IMAGE" 2>/dev/null) || v=0
	case $v in '' | *[!0-9]*) v=0 ;; esac
	echo "$v"
}

# cap_ensure_base_image: builds and pushes the base image when the registry
# lacks it or has an older one, and pre-pulls it into the dedicated dockerd
# so boots are fast.
cap_ensure_base_image() {
	local manifest="http://$CAPSULE_REGISTRY_ADDR/v2/capsule/busybox/manifests/latest"
	if cap_registry_curl -sf --max-time 5 -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "$manifest"; then
		cap_prepull_image ""
		if [ "$(cap_base_version_of "")" -ge "$CAPSULE_BASE_VERSION" ]; then
			cap_say "base image $CAPSULE_IMAGE present in the registry"
			return 0
		fi
		cap_say "base image $CAPSULE_IMAGE is older than version $CAPSULE_BASE_VERSION: rebuilding it"
	else
		cap_say "building base image $CAPSULE_IMAGE"
	fi
	sh "$CAPSULE_REPO/deploy/images/build-base.sh" "$CAPSULE_DOCKER_HOST" "$CAPSULE_REGISTRY_ADDR" >/dev/null ||
		cap_die "building/pushing the base image failed"
}

# cap_prepull_image [NAME]: pulls the base image from the registry into
# dockerd instance NAME unless it has it at CAPSULE_BASE_VERSION (agents
# would pull a missing one on the first boot anyway; this makes that boot
# fast, proves the instance reaches the registry and replaces an older one).
cap_prepull_image() {
	local name=${1:-}
	[ "$(cap_base_version_of "$name")" -ge "$CAPSULE_BASE_VERSION" ] && return 0
	cap_docker --name "$name" pull -q "$CAPSULE_IMAGE" >/dev/null ||
		cap_die "pulling $CAPSULE_IMAGE into dockerd $(cap_dockerd_host "$name") failed"
}

# ---- RabbitMQ ---------------------------------------------------------------

# RabbitMQ opens its AMQP listener once it has booted: a connect to it is
# the readiness check, not rabbitmq-diagnostics ping, which boots an Erlang
# VM per call (1-2 s on an idle 2-core machine, over a minute on a loaded
# one, where its 15 s timeout failed the start of a running broker).
cap_rabbit_up() { timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; }

cap_start_rabbitmq() {
	if cap_rabbit_up; then
		cap_say "RabbitMQ already running"
		return 0
	fi
	cap_say "starting RabbitMQ"
	# The Erlang node is rabbit@<short hostname>, which must resolve.
	if ! getent hosts "$(hostname -s)" >/dev/null; then
		cap_warn "$(hostname -s) does not resolve: adding it to /etc/hosts for RabbitMQ"
		printf '127.0.1.1\t%s\n' "$(hostname -s)" >>/etc/hosts
	fi
	if cap_systemd; then
		systemctl start rabbitmq-server.service
	else
		rabbitmq-server -detached >/dev/null 2>&1 || true
	fi
	cap_mark_started rabbitmq
	cap_wait RabbitMQ 120 cap_rabbit_up || {
		cap_tail_log /var/log/rabbitmq/startup_err
		cap_die "RabbitMQ did not start (see /var/log/rabbitmq/)"
	}
}

cap_stop_rabbitmq() {
	cap_started_by_us rabbitmq || return 0
	cap_say "stopping RabbitMQ"
	if cap_systemd; then
		systemctl stop rabbitmq-server.service || true
	else
		timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
	fi
	rm -f "$CAPSULE_RUN/started.rabbitmq"
}

# cap_rabbit_user USER PASSWORD VHOST: creates (or re-keys) a user with
# full rights on its own vhost, so Capsule's queues never mix with other
# users of the broker. rabbitmqctl reads the password from stdin when the
# command line has none (never on a command line: ps shows it).
cap_rabbit_user() {
	local user=$1 pass=$2 vhost=$3
	if ! rabbitmqctl -q list_vhosts 2>/dev/null | grep -qx "$vhost"; then
		rabbitmqctl -q add_vhost "$vhost" >/dev/null
	fi
	if rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx "$user"; then
		printf '%s' "$pass" | rabbitmqctl -q change_password "$user" >/dev/null
	else
		printf '%s' "$pass" | rabbitmqctl -q add_user "$user" >/dev/null
	fi
	rabbitmqctl -q set_permissions -p "$vhost" "$user" '.*' '.*' '.*' >/dev/null
}

# cap_rabbit_agent_perms HOST: the configure, write and read regexps (one a
# line) of the broker user of compute host HOST, then its topic write and
# read regexps on the capsule exchange. It declares and binds only its own
# queue compute.HOST and its private reply queues (amq.gen-*), publishes
# only to the capsule exchange (never the default one, which reaches every
# queue) with the routing keys of the conductor's queue and of reply queues,
# and reads only its own queues: it cannot consume, delete or speak to
# another host's queue. docs/operations.md, one RabbitMQ user per host.
cap_rabbit_agent_perms() {
	local q
	# shellcheck disable=SC2016 # a sed expression: $ and ( are its own
	q="compute\\.$(printf '%s' "$1" | sed 's/[.[\\*^$()+?{}|]/\\&/g')"
	printf '%s\n' "^($q|amq\\.gen-.*)\$" "^(capsule|$q|amq\\.gen-.*)\$" "^(capsule|$q|amq\\.gen-.*)\$" \
		"^(conductor|amq\\.gen-.*)\$" "^($q|amq\\.gen-.*)\$"
}

# cap_rabbit_agent_user USER PASSWORD VHOST HOST: creates (or re-keys) the
# broker user of compute host HOST with cap_rabbit_agent_perms on VHOST.
# The password goes on rabbitmqctl's stdin.
cap_rabbit_agent_user() {
	local user=$1 pass=$2 vhost=$3 host=$4 perms
	if rabbitmqctl -q list_users 2>/dev/null | awk '{print $1}' | grep -qx "$user"; then
		printf '%s' "$pass" | rabbitmqctl -q change_password "$user" >/dev/null
	else
		printf '%s' "$pass" | rabbitmqctl -q add_user "$user" >/dev/null
	fi
	mapfile -t perms < <(cap_rabbit_agent_perms "$host")
	rabbitmqctl -q set_permissions -p "$vhost" "$user" "${perms[0]}" "${perms[1]}" "${perms[2]}" >/dev/null
	rabbitmqctl -q set_topic_permissions -p "$vhost" "$user" capsule "${perms[3]}" "${perms[4]}" >/dev/null
}

# ---- TLS ----------------------------------------------------------------------

# cap_tls_sans: the subject alternative names of this host's certificate:
# localhost, its names and every address it has, loopback included.
cap_tls_sans() {
	local sans="DNS:localhost,IP:127.0.0.1,IP:::1" n ip
	for n in $(hostname -s 2>/dev/null) $(hostname -f 2>/dev/null); do
		[[ $n == localhost || ,$sans, == *",DNS:$n,"* ]] || sans+=",DNS:$n"
	done
	for ip in $(hostname -I 2>/dev/null); do
		[[ ,$sans, == *",IP:$ip,"* ]] || sans+=",IP:$ip"
	done
	printf '%s' "$sans"
}

# cap_tls_pki DIR: a local CA (DIR/ca.pem, ca.key) and a server
# certificate it signed for cap_tls_sans (DIR/server.pem, server.key), for
# allinone.sh --tls. Idempotent: the CA is kept; the server certificate is
# reissued when missing, not the CA's, or its names changed. Keys 0600 in
# a 0700 directory.
cap_tls_pki() {
	local dir=$1 sans
	sans=$(cap_tls_sans)
	(
		umask 077
		mkdir -p "$dir"
		chmod 700 "$dir"
		if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
			openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
				-subj "/CN=Capsule local CA $(hostname -s 2>/dev/null)" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
				-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
				cap_die "openssl: cannot create the local CA in $dir"
			rm -f "$dir/server.pem"
		fi
		if [ -s "$dir/server.pem" ] && [ -s "$dir/server.key" ] && [ "$(cat "$dir/server.sans" 2>/dev/null)" = "$sans" ] &&
			openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null 2>&1; then
			exit 0
		fi
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$(hostname -s 2>/dev/null || echo localhost)" \
			-keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null || cap_die "openssl: cannot create the server key"
		openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 825 \
			-out "$dir/server.pem" -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$sans") \
			2>/dev/null || cap_die "openssl: cannot sign the server certificate"
		printf '%s' "$sans" >"$dir/server.sans"
		rm -f "$dir/server.csr"
		chmod 644 "$dir/ca.pem" "$dir/server.pem"
	)
}

# ---- PostgreSQL -------------------------------------------------------------

cap_pg_version() { find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }
cap_pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 -t 3; }
cap_psql() { runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 "$@"; }

cap_start_postgres() {
	local v
	if cap_pg_up; then
		cap_say "PostgreSQL already running"
		return 0
	fi
	v=$(cap_pg_version)
	[ -n "$v" ] || cap_die "PostgreSQL is not installed"
	if ! pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}' | grep -qx "$v/main"; then
		cap_say "creating PostgreSQL cluster $v/main"
		pg_createcluster "$v" main >/dev/null
	fi
	cap_say "starting PostgreSQL $v"
	if cap_systemd; then
		systemctl start "postgresql@$v-main.service"
	else
		# It prints "Removed stale pid file." (after an unclean stop) on
		# stdout, which test-env.sh's callers evaluate.
		pg_ctlcluster "$v" main start >&2
	fi
	cap_mark_started postgres
	cap_wait PostgreSQL 60 cap_pg_up || cap_die "PostgreSQL did not start (see /var/log/postgresql/)"
}

cap_stop_postgres() {
	local v
	cap_started_by_us postgres || return 0
	v=$(cap_pg_version)
	cap_say "stopping PostgreSQL"
	if cap_systemd; then
		systemctl stop "postgresql@$v-main.service" || true
	else
		pg_ctlcluster "$v" main stop >&2 || true
	fi
	rm -f "$CAPSULE_RUN/started.postgres"
}

# cap_pg_database ROLE PASSWORD DB: role with CREATEDB owning DB.
cap_pg_database() {
	local role=$1 pass=$2 db=$3
	if [ "$(cap_psql -tAc "SELECT 1 FROM pg_roles WHERE rolname='$role'")" != 1 ]; then
		# The statement on stdin: psql -c would show the password in ps.
		printf "CREATE ROLE \"%s\" LOGIN CREATEDB PASSWORD '%s';\n" "$role" "$pass" | cap_psql
	fi
	if [ "$(cap_psql -tAc "SELECT 1 FROM pg_database WHERE datname='$db'")" != 1 ]; then
		cap_psql -c "CREATE DATABASE \"$db\" OWNER \"$role\""
	fi
}

# ---- Open vSwitch -----------------------------------------------------------

cap_ovs_up() { ovs-vsctl --timeout=3 show >/dev/null 2>&1 && ovs-appctl -t ovs-vswitchd version >/dev/null 2>&1; }

# cap_start_ovs: best effort. Without the openvswitch kernel module
# ovs-ctl refuses to start ovs-vswitchd, so it is then started directly:
# it runs userspace-only, which serves bridges of datapath_type=netdev.
cap_start_ovs() {
	local ctl=/usr/share/openvswitch/scripts/ovs-ctl
	if cap_ovs_up; then
		cap_say "Open vSwitch already running"
		return 0
	fi
	cap_say "starting Open vSwitch"
	if cap_systemd; then
		systemctl start openvswitch-switch.service >/dev/null 2>&1 || true
	fi
	if ! cap_ovs_up && [ -x "$ctl" ]; then
		if ! "$ctl" start --system-id=random >>"$CAPSULE_LOG/ovs-ctl.log" 2>&1; then
			"$ctl" start --system-id=random --no-ovs-vswitchd >>"$CAPSULE_LOG/ovs-ctl.log" 2>&1 || true
			if ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
				cap_warn "openvswitch kernel module unavailable: ovs-vswitchd runs userspace-only (datapath_type=netdev)"
				ovs-vswitchd --pidfile --detach --log-file "unix:/var/run/openvswitch/db.sock" \
					-vconsole:emer -vsyslog:err -vfile:info >>"$CAPSULE_LOG/ovs-ctl.log" 2>&1 || true
			fi
		fi
	fi
	if cap_wait "Open vSwitch" 10 cap_ovs_up; then
		cap_mark_started ovs
	else
		cap_warn "Open vSwitch is not running (see $CAPSULE_LOG/ovs-ctl.log); servers will have no networking"
	fi
}

cap_stop_ovs() {
	cap_started_by_us ovs || return 0
	cap_say "stopping Open vSwitch"
	if cap_systemd; then
		systemctl stop openvswitch-switch.service >/dev/null 2>&1 || true
	fi
	/usr/share/openvswitch/scripts/ovs-ctl stop >/dev/null 2>&1 || true
	rm -f "$CAPSULE_RUN/started.ovs"
}

# cap_ovs_bridge NAME: an OVS bridge on the userspace datapath
# (datapath_type=netdev), which needs no openvswitch kernel module; kept as
# is when it exists. Bridge names are interface names: 15 characters at most.
cap_ovs_bridge() {
	[ ${#1} -le 15 ] || cap_die "OVS bridge name $1 is longer than 15 characters"
	ovs-vsctl --timeout=10 --may-exist add-br "$1" -- set bridge "$1" datapath_type=netdev
}

cap_ovs_del_bridge() { ovs-vsctl --timeout=10 --if-exists del-br "$1"; }

# cap_ovs_patch BRIDGE1 PORT1 BRIDGE2 PORT2: joins two bridges with a pair
# of patch ports (they work in the userspace datapath, unlike veths of the
# kernel one, and cost no copy). Neither end has a tag or a trunks list, so
# the link is a trunk carrying every VLAN, like a switch's uplink.
cap_ovs_patch() {
	ovs-vsctl --timeout=10 \
		--may-exist add-port "$1" "$2" -- set interface "$2" type=patch "options:peer=$4" -- clear port "$2" tag trunks \
		-- --may-exist add-port "$3" "$4" -- set interface "$4" type=patch "options:peer=$2" -- clear port "$4" tag trunks
}

# ---- LXCFS ------------------------------------------------------------------

# LXCFS (Debian's lxcfs) serves /proc files computed from the reading
# process's cgroups: meminfo, cpuinfo, stat, uptime, loadavg... The docker
# driver bind-mounts them over each server's /proc (config agent.lxcfs), so
# free, top, uptime and nproc inside a server show its own limits and load
# (the tenants-saw-the-host lesson). The loadavg and CPU-quota views are off
# unless asked for. A restarted LXCFS breaks the mounts of running servers
# until they reboot (docs/operations.md).
CAPSULE_LXCFS_DIR=${CAPSULE_LXCFS_DIR:-/var/lib/lxcfs}
CAPSULE_LXCFS_FLAGS=(--enable-loadavg --enable-cfs)

# cap_lxcfs_up: LXCFS answers (a dead one leaves a mount that fails reads
# with "transport endpoint is not connected").
cap_lxcfs_up() { head -c 1 "$CAPSULE_LXCFS_DIR/proc/meminfo" >/dev/null 2>&1; }

# cap_start_lxcfs: best effort, like OVS (always returns 0; cap_lxcfs_up
# tells): without it servers run with the host's /proc view (the agent logs
# a warning), they never fail to boot.
cap_start_lxcfs() {
	local pidfile=$CAPSULE_RUN/lxcfs.pid log=$CAPSULE_LOG/lxcfs.log reconfigured=
	if ! command -v lxcfs >/dev/null || [ ! -e /dev/fuse ]; then
		cap_warn "lxcfs or /dev/fuse missing: servers will see the host's /proc (apt-get install lxcfs)"
		return 0
	fi
	# Installing Debian's package on a systemd host starts lxcfs at once,
	# without Capsule's flags: the drop-in is checked even when it answers.
	if cap_systemd && cap_lxcfs_dropin; then reconfigured=1; fi
	if cap_lxcfs_up; then
		if [ -z "$reconfigured" ]; then
			cap_say "LXCFS already serves $CAPSULE_LXCFS_DIR"
			return 0
		fi
		cap_warn "restarting LXCFS with ${CAPSULE_LXCFS_FLAGS[*]}: running servers' /proc views break until they reboot"
	fi
	# A dead LXCFS's mount point cannot be mounted over: detach it.
	if ! cap_lxcfs_up && grep -q " $CAPSULE_LXCFS_DIR fuse" /proc/mounts; then
		umount -l "$CAPSULE_LXCFS_DIR" 2>/dev/null || fusermount -uz "$CAPSULE_LXCFS_DIR" 2>/dev/null || true
	fi
	mkdir -p "$CAPSULE_LXCFS_DIR"
	cap_say "starting LXCFS on $CAPSULE_LXCFS_DIR"
	if cap_systemd; then
		systemctl enable --quiet lxcfs.service 2>/dev/null || true
		systemctl restart lxcfs.service || true
	else
		cap_pid_alive "$pidfile" || rm -f "$pidfile"
		# In the foreground lxcfs writes its own pid into its pid file.
		cap_spawn - "$log" lxcfs --foreground --pidfile="$pidfile" "${CAPSULE_LXCFS_FLAGS[@]}" "$CAPSULE_LXCFS_DIR"
	fi
	cap_mark_started lxcfs
	cap_wait LXCFS 15 cap_lxcfs_up || {
		cap_tail_log "$log"
		cap_warn "LXCFS did not start (see $log or journalctl -u lxcfs): servers will see the host's /proc"
		return 0
	}
}

# cap_lxcfs_dropin: writes the drop-in of Debian's lxcfs.service that adds
# Capsule's flags and clears its ConditionVirtualization (which keeps it off
# inside containers); true when it changed.
cap_lxcfs_dropin() {
	local dropin=/etc/systemd/system/lxcfs.service.d/capsule.conf conf
	conf=$(printf '[Unit]\nConditionVirtualization=\n[Service]\nExecStart=\nExecStart=%s %s %s\n' \
		"$(command -v lxcfs)" "${CAPSULE_LXCFS_FLAGS[*]}" "$CAPSULE_LXCFS_DIR")
	[ "$(cat "$dropin" 2>/dev/null)" = "$conf" ] && return 1
	mkdir -p "$(dirname "$dropin")"
	printf '%s\n' "$conf" >"$dropin"
	systemctl daemon-reload
}

# ---- Capsule ----------------------------------------------------------------

# cap_build: builds capsuled and capsule into the repo's bin/ and installs
# them into $CAPSULE_BIN (CAPSULE_SKIP_BUILD=1 keeps installed binaries).
# CAPSULE_BUILD_REF=REV builds a committed revision (e.g. HEAD) instead of
# the working tree, for a tree with work in progress that does not compile.
cap_build() {
	if [ -n "${CAPSULE_SKIP_BUILD:-}" ]; then
		[ -x "$CAPSULE_BIN/capsuled" ] || cap_die "CAPSULE_SKIP_BUILD is set but $CAPSULE_BIN/capsuled is missing"
		cap_say "using installed $CAPSULE_BIN/capsuled (CAPSULE_SKIP_BUILD)"
		return 0
	fi
	local version ldflags src=$CAPSULE_REPO tmp=
	cap_check_go
	if [ -n "${CAPSULE_BUILD_REF:-}" ]; then
		tmp=$(mktemp -d)
		git -C "$CAPSULE_REPO" archive "$CAPSULE_BUILD_REF" | tar -x -C "$tmp" ||
			cap_die "git archive $CAPSULE_BUILD_REF failed"
		src=$tmp
		version=$(git -C "$CAPSULE_REPO" describe --always "$CAPSULE_BUILD_REF")
	else
		version=$(git -C "$CAPSULE_REPO" describe --always --dirty 2>/dev/null || echo dev)
	fi
	ldflags="-X main.version=$version"
	cap_say "building capsuled $version ($(go version | awk '{print $3}'))"
	mkdir -p "$CAPSULE_REPO/bin"
	# One go build for both: the packages they share compile once, on
	# every core, and the two links run side by side.
	if (cd "$src" && go build -ldflags "$ldflags" -o "$CAPSULE_REPO/bin/" ./cmd/capsuled ./cmd/capsule); then
		install -m 755 "$CAPSULE_REPO/bin/capsuled" "$CAPSULE_REPO/bin/capsule" "$CAPSULE_BIN/"
		[ -z "$tmp" ] || rm -rf "$tmp"
		return 0
	fi
	(cd "$src" && go build -ldflags "$ldflags" -o "$CAPSULE_REPO/bin/capsuled" ./cmd/capsuled) ||
		cap_die "building capsuled failed (go build ./cmd/capsuled in $src): see the compiler errors above"
	install -m 755 "$CAPSULE_REPO/bin/capsuled" "$CAPSULE_BIN/"
	# The capsule CLI is a convenience; the all-in-one works without it.
	cap_warn "the capsule CLI (./cmd/capsule) did not build; continuing without it"
	[ -z "$tmp" ] || rm -rf "$tmp"
}

cap_api_up() { curl -sf --max-time 3 "$CAPSULE_IDENTITY_URL" >/dev/null 2>&1; }
