#!/usr/bin/env bash
# Capsule all-in-one: the whole cloud (API, scheduler, conductor and one
# compute agent) on this machine, on Debian 12 / Ubuntu, as root.
#
#   deploy/allinone.sh [start]   install, build, start; idempotent
#   deploy/allinone.sh status    what runs
#   deploy/allinone.sh stop      stop Capsule and the daemons this script started
#   deploy/allinone.sh clean [-y] stop, then delete Capsule's containers, images,
#                                registry, database and /etc/capsule
#   --hosts N                    reserved (several simulated compute hosts)
#
# Capsule's containers run in a dockerd of its own (unix:///run/capsule/docker.sock),
# so a Docker the user already runs is never touched.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; }

ADMIN_OPENRC=$CAPSULE_ETC/admin-openrc
DEMO_OPENRC=$CAPSULE_ETC/demo-openrc
CAPSULED_PID=$CAPSULE_RUN/capsuled.pid
CAPSULED_LOG=$CAPSULE_LOG/capsuled.log
ROLE_UNITS=(capsule capsule-api capsule-scheduler capsule-conductor capsule-agent)

# ---- configuration ----------------------------------------------------------

write_config() {
	local rabbit_pw=$1
	if [ -f "$CAPSULE_CONFIG" ]; then
		cap_say "keeping existing $CAPSULE_CONFIG"
		return 0
	fi
	cap_say "writing $CAPSULE_CONFIG"
	umask 077
	cat >"$CAPSULE_CONFIG" <<EOF
# Capsule all-in-one configuration (written once by deploy/allinone.sh;
# edit freely, it is never overwritten). Keys: config/config.go.
region: RegionOne
database:
  driver: sqlite
  dsn: $CAPSULE_LIB/capsule.db
bus:
  url: amqp://capsule:$rabbit_pw@127.0.0.1:5672/capsule
api:
  public_host: 127.0.0.1
  listen: 0.0.0.0
  identity_port: 5000
  compute_port: 8774
  image_port: 9292
  network_port: 9696
  portal_port: 8080
agent:
  host: $(hostname -s)
  zone: nova
  host_ip: 127.0.0.1
  docker_host: $CAPSULE_DOCKER_HOST
  driver: docker
registry:
  address: $CAPSULE_REGISTRY_ADDR
EOF
	umask 022
}

write_openrc() {
	local file=$1 user=$2 project=$3 password=$4
	umask 077
	cat >"$file" <<EOF
# Capsule credentials of user $user (project $project): source this file,
# then use the openstack client, e.g. openstack server list.
export OS_AUTH_URL=$CAPSULE_IDENTITY_URL
export OS_USERNAME=$user
export OS_PASSWORD=$password
export OS_PROJECT_NAME=$project
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
export OS_INTERFACE=public
EOF
	umask 022
}

write_clouds_yaml() {
	local admin_pw=$1 demo_pw=$2 name user pw
	umask 077
	{
		echo "# Capsule clouds for the openstack client:"
		echo "#   OS_CLIENT_CONFIG_FILE=$CAPSULE_ETC/clouds.yaml openstack --os-cloud capsule-demo server list"
		echo "clouds:"
		for name in admin demo; do
			if [ $name = admin ]; then pw=$admin_pw; else pw=$demo_pw; fi
			user=$name
			cat <<EOF
  capsule-$name:
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    auth:
      auth_url: $CAPSULE_IDENTITY_URL
      username: $user
      password: $pw
      project_name: $name
      user_domain_name: Default
      project_domain_name: Default
EOF
		done
	} >"$CAPSULE_ETC/clouds.yaml"
	umask 022
}

# ---- capsuled ---------------------------------------------------------------

capsuled_running() {
	if cap_systemd; then
		systemctl is-active --quiet capsule.service
	else
		cap_pid_alive "$CAPSULED_PID"
	fi
}

stop_capsuled() {
	if cap_systemd; then
		local u
		for u in "${ROLE_UNITS[@]}"; do
			systemctl stop "$u.service" 2>/dev/null || true
		done
	fi
	cap_stop_pidfile capsuled "$CAPSULED_PID" 30
}

start_capsuled() {
	if cap_systemd; then
		cap_install_unit capsule
		systemctl restart capsule.service
	else
		cap_spawn "$CAPSULED_PID" "$CAPSULED_LOG" "$CAPSULE_BIN/capsuled" -config "$CAPSULE_CONFIG" all
	fi
}

show_capsuled_log() {
	if cap_systemd; then
		journalctl -u capsule.service -n 40 --no-pager >&2 || true
	else
		cap_tail_log "$CAPSULED_LOG" 40
	fi
}

capsuled_log_hint() {
	if cap_systemd; then echo "journalctl -u capsule"; else echo "$CAPSULED_LOG"; fi
}

# wait_for MAX_SECONDS DESCRIPTION CMD...: like cap_wait, but gives up at
# once when capsuled died, with its log.
wait_for() {
	local secs=$1 what=$2 deadline
	shift 2
	deadline=$((SECONDS + secs))
	while [ $SECONDS -lt $deadline ]; do
		"$@" >/dev/null 2>&1 && return 0
		if ! capsuled_running; then
			show_capsuled_log
			cap_die "capsuled exited before $what (see $(capsuled_log_hint))"
		fi
		sleep 0.5
	done
	show_capsuled_log
	cap_die "$what: not within ${secs}s (see $(capsuled_log_hint))"
}

# token USER PROJECT PASSWORD: a project-scoped Keystone token.
token() {
	curl -sf --max-time 10 -D - -o /dev/null -H 'Content-Type: application/json' \
		-d "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"$1\",\"domain\":{\"name\":\"Default\"},\"password\":\"$3\"}}},\"scope\":{\"project\":{\"name\":\"$2\",\"domain\":{\"name\":\"Default\"}}}}}" \
		"$CAPSULE_IDENTITY_URL/auth/tokens" | tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p'
}

# compute_up PASSWORD HOST: the nova-compute service of HOST reports up.
compute_up() {
	local tok
	tok=$(token admin admin "$1")
	[ -n "$tok" ] || return 1
	curl -sf --max-time 10 -H "X-Auth-Token: $tok" "$CAPSULE_COMPUTE_URL/os-services?binary=nova-compute&host=$2" |
		python3 -c 'import json, sys
svcs = json.load(sys.stdin).get("services", [])
sys.exit(0 if any(s.get("host") == sys.argv[1] and s.get("state") == "up" for s in svcs) else 1)' "$2"
}

# ---- commands ---------------------------------------------------------------

do_start() {
	local t0=$SECONDS rabbit_pw admin_pw demo_pw
	cap_need_root

	cap_section "Packages"
	cap_install_deps

	cap_section "Build"
	cap_build

	cap_section "Services"
	cap_dirs
	if cap_systemd; then
		# All units up front: capsule.service requires capsule-dockerd even
		# when that dockerd already runs; enabled, the cloud survives reboots.
		local u
		for u in capsule-dockerd capsule-registry capsule; do
			cap_install_unit "$u"
			systemctl enable --quiet "$u.service"
		done
	fi
	cap_start_dockerd
	cap_start_registry
	cap_start_rabbitmq
	cap_start_ovs
	cap_ensure_base_image
	rabbit_pw=$(cap_secret RABBITMQ_PASSWORD)
	cap_rabbit_user capsule "$rabbit_pw" capsule
	cap_say "RabbitMQ user capsule on vhost capsule ready"

	cap_section "Capsule"
	write_config "$rabbit_pw"
	admin_pw=$(cap_secret ADMIN_PASSWORD)
	demo_pw=$(cap_secret DEMO_PASSWORD)
	# Bootstrap writes the database: capsuled is stopped meanwhile, and
	# restarted afterwards so a rebuilt binary or an edited config is used.
	stop_capsuled
	cap_say "bootstrap (domain, projects, users, flavors, image)"
	if ! "$CAPSULE_BIN/capsuled" -config "$CAPSULE_CONFIG" bootstrap -admin-password "$admin_pw" \
		-demo-password "$demo_pw" -image "busybox=$CAPSULE_IMAGE" >>"$CAPSULE_LOG/bootstrap.log" 2>&1; then
		cap_tail_log "$CAPSULE_LOG/bootstrap.log"
		cap_die "capsuled bootstrap failed (see $CAPSULE_LOG/bootstrap.log)"
	fi
	cap_say "starting capsuled (api, scheduler, conductor, agent)"
	start_capsuled
	wait_for 60 "the Identity API answered on $CAPSULE_IDENTITY_URL" cap_api_up
	write_openrc "$ADMIN_OPENRC" admin admin "$admin_pw"
	write_openrc "$DEMO_OPENRC" demo demo "$demo_pw"
	write_clouds_yaml "$admin_pw" "$demo_pw"
	wait_for 90 "the compute service of $(hostname -s) reported up" compute_up "$admin_pw" "$(hostname -s)"

	cap_section "Ready in $((SECONDS - t0))s"
	cat <<EOF
Capsule runs on this machine. Try it:

  . $DEMO_OPENRC               # or $ADMIN_OPENRC
  openstack flavor list
  openstack image list
  openstack server create --flavor m1.tiny --image busybox demo1
  openstack server list
  openstack console log show demo1
  openstack server delete demo1

Endpoints: identity $CAPSULE_IDENTITY_URL, compute :8774, image :9292,
network :9696, portal http://127.0.0.1:8080/
Logs: $(capsuled_log_hint); passwords: $CAPSULE_SECRETS
Stop: $0 stop      Remove everything: $0 clean
EOF
}

do_status() {
	local rc=0
	line() { printf '  %-12s %s\n' "$1" "$2"; }
	echo "Capsule all-in-one:"
	if capsuled_running; then line capsuled "running"; else line capsuled "stopped" && rc=1; fi
	if cap_api_up; then line api "answers on $CAPSULE_IDENTITY_URL"; else line api "not answering" && rc=1; fi
	if cap_dockerd_up; then line dockerd "$CAPSULE_DOCKER_HOST ($(cap_docker ps -q 2>/dev/null | wc -l) containers running)"; else line dockerd "down" && rc=1; fi
	if cap_registry_up; then line registry "$CAPSULE_REGISTRY_ADDR"; else line registry "down" && rc=1; fi
	if cap_rabbit_up; then line rabbitmq "running"; else line rabbitmq "down" && rc=1; fi
	if cap_ovs_up; then line openvswitch "running"; else line openvswitch "down (servers get no network)"; fi
	return $rc
}

do_stop() {
	cap_need_root
	stop_capsuled
	cap_stop_registry
	cap_stop_dockerd
	cap_stop_ovs
	cap_stop_rabbitmq
	cap_say "stopped"
}

# unmount_under DIR: lazily unmounts what a killed dockerd left mounted
# (overlay layers, netns, shm), deepest first, so rm -rf can proceed.
unmount_under() {
	local d=$1 m
	[ -d "$d" ] || return 0
	awk -v d="$d" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

do_clean() {
	cap_need_root
	if [ -t 0 ] && [ "${1:-}" != -y ]; then
		read -r -p "Delete Capsule's servers, images, registry, database and $CAPSULE_ETC? [y/N] " ans
		[ "$ans" = y ] || [ "$ans" = Y ] || exit 1
	fi
	stop_capsuled
	if cap_dockerd_up; then
		local ids
		ids=$(cap_docker ps -aq)
		if [ -n "$ids" ]; then
			cap_say "removing $(echo "$ids" | wc -l) containers"
			# shellcheck disable=SC2086
			cap_docker rm -f $ids >/dev/null || true
		fi
	fi
	if cap_rabbit_up; then
		rabbitmqctl -q delete_user capsule >/dev/null 2>&1 || true
		rabbitmqctl -q delete_vhost capsule >/dev/null 2>&1 || true
	fi
	do_stop
	unmount_under "$CAPSULE_RUN/docker-exec"
	unmount_under "$CAPSULE_LIB/docker"
	cap_say "removing $CAPSULE_LIB $CAPSULE_ETC $CAPSULE_LOG $CAPSULE_RUN"
	rm -rf "${CAPSULE_LIB:?}" "${CAPSULE_ETC:?}" "${CAPSULE_LOG:?}" "${CAPSULE_RUN:?}"
	rm -f "$CAPSULE_BIN/capsuled" "$CAPSULE_BIN/capsule"
	if cap_systemd; then
		local u
		for u in "${ROLE_UNITS[@]}" capsule-dockerd capsule-registry; do
			systemctl disable "$u.service" >/dev/null 2>&1 || true
			rm -f "/etc/systemd/system/$u.service"
		done
		systemctl daemon-reload
	fi
	cap_say "clean"
}

main() {
	local cmd=start hosts=1 args=()
	while [ $# -gt 0 ]; do
		case $1 in
		start | stop | clean | status) cmd=$1 ;;
		--hosts) hosts=${2:?--hosts needs a number} && shift ;;
		--hosts=*) hosts=${1#--hosts=} ;;
		-y) args+=(-y) ;;
		-h | --help) usage && exit 0 ;;
		*) usage && cap_die "unknown argument: $1" ;;
		esac
		shift
	done
	[ "$hosts" = 1 ] || cap_die "--hosts $hosts: several compute hosts are not supported yet (reserved)"
	case $cmd in
	start) do_start ;;
	status) do_status ;;
	stop) do_stop ;;
	clean) do_clean "${args[@]}" ;;
	esac
}

main "$@"
