#!/usr/bin/env bash
# Capsule all-in-one: the whole cloud (API, scheduler, conductor and compute
# agents) on this machine, on Debian 12 / Ubuntu, as root.
#
#   deploy/allinone.sh [start]    install, build, start; idempotent
#   deploy/allinone.sh status     what runs
#   deploy/allinone.sh stop       stop Capsule and the daemons this script started
#   deploy/allinone.sh clean [-y] stop, then delete Capsule's containers, images,
#                                 registry, database, bridges and /etc/capsule
#   --hosts N                     N simulated compute hosts (1-4; default: as
#                                 the last start, else 1). N=1: one `capsuled all`,
#                                 host `hostname -s`. N>=2: hosts host-a, host-b...
#                                 each with its own agent, dockerd and OVS bridge
#                                 br-host-X, joined by the trunk bridge br-trunk
#                                 (docs/multihost.md); each host's agent logs in
#                                 to RabbitMQ as its own user capsule-agent-HOST
#   --tls                         serve every API and the portal over TLS with a
#                                 local CA (/etc/capsule/tls, made once); the openrc
#                                 files and clouds.yaml then carry the CA (OS_CACERT).
#                                 Stays on for later starts (config http.tls_*)
#
# Capsule's containers run in dockerds of its own (unix:///run/capsule/docker*.sock),
# so a Docker the user already runs is never touched.
set -euo pipefail
# The all-in-one's registry requires a login (htpasswd, bcrypt); agents and
# the API get it from their config. CAPSULE_REGISTRY_AUTH=0 opens it.
export CAPSULE_REGISTRY_AUTH=${CAPSULE_REGISTRY_AUTH:-1}
# Capsule's dockerds get an XFS data root with project quotas (or, on a
# kernel without XFS quotas, a btrfs one with quota groups and the btrfs
# storage driver) so a flavor's disk caps each server's root disk
# (cap_capped_dataroot in lib.sh; a sparse file of CAPSULE_DATAROOT_GB GiB,
# default 20). CAPSULE_DATAROOT_XFS=0 keeps
# the data root where it is (root disks then not enforced).
export CAPSULE_DATAROOT_XFS=${CAPSULE_DATAROOT_XFS:-1}
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; }

ADMIN_OPENRC=$CAPSULE_ETC/admin-openrc
DEMO_OPENRC=$CAPSULE_ETC/demo-openrc
# The control-plane process: `capsuled all` (N=1) or `capsuled
# api,scheduler,conductor` (N>=2); one pid file and log either way.
CAPSULED_PID=$CAPSULE_RUN/capsuled.pid
CAPSULED_LOG=$CAPSULE_LOG/capsuled.log
# The topology of the last start (CAPSULE_HOSTS=N), so status/stop/start
# without --hosts act on what runs.
TOPOLOGY=$CAPSULE_ETC/allinone.env
ROLE_UNITS=(capsule capsule-control capsule-api capsule-scheduler capsule-conductor capsule-agent)
MAX_HOSTS=4
# The physical network every simulated host maps (config network.physical_networks).
PHYSNET=physnet1
SINGLE_BRIDGE="br-physnet1"
TRUNK_BRIDGE="br-trunk"

# ---- topology ---------------------------------------------------------------

# host_names N: host-a host-b ... (N>=2); the simulated hosts' names.
host_names() {
	local n=$1 i letters=abcdefghijklmnopqrstuvwxyz
	for ((i = 0; i < n; i++)); do echo "host-${letters:i:1}"; done
}

recorded_hosts() {
	local n=
	# shellcheck disable=SC1090
	[ -f "$TOPOLOGY" ] && n=$(. "$TOPOLOGY" && echo "${CAPSULE_HOSTS:-}")
	echo "${n:-1}"
}

record_hosts() {
	mkdir -p "$CAPSULE_ETC"
	printf '# Written by deploy/allinone.sh: the number of simulated compute hosts of the last start.\nCAPSULE_HOSTS=%s\n' "$1" >"$TOPOLOGY"
}

host_bridge() { echo "br-$1"; }
agent_config() { echo "$CAPSULE_ETC/agent-$1.yaml"; }
agent_pidfile() { echo "$CAPSULE_RUN/agent-$1.pid"; }
agent_log() { echo "$CAPSULE_LOG/agent-$1.log"; }

# known_hosts: every simulated host with a trace on this machine (agent
# config, pid file, dockerd), whatever the recorded topology says.
known_hosts() {
	{
		local f n
		for f in "$CAPSULE_ETC"/agent-host-*.yaml "$CAPSULE_RUN"/agent-host-*.pid; do
			[ -e "$f" ] || continue
			n=${f##*/agent-}
			echo "${n%.*}"
		done
		cap_dockerd_names | grep '^host-' || true
	} | sort -u
}

# compute_hosts N: the compute hosts of topology N (what the API lists).
compute_hosts() { if [ "$1" = 1 ]; then hostname -s; else host_names "$1"; fi; }

# ---- configuration ----------------------------------------------------------

TLS_DIR=$CAPSULE_ETC/tls
TLS_CA=$TLS_DIR/ca.pem

# tls_configured: the config serves TLS (an earlier --tls start).
tls_configured() { [ -f "$CAPSULE_CONFIG" ] && grep -q '^  tls_cert_file:' "$CAPSULE_CONFIG"; }

# use_tls: this script's own calls (curl) and the URLs it writes go to
# https, trusting the local CA.
use_tls() {
	CAPSULE_IDENTITY_URL=${CAPSULE_IDENTITY_URL/#http:/https:}
	CAPSULE_COMPUTE_URL=${CAPSULE_COMPUTE_URL/#http:/https:}
	export CURL_CA_BUNDLE=$TLS_CA
	SERVES_TLS=1
}

# SERVES_TLS is 1 once use_tls ran: the openrc files and clouds.yaml then
# name the CA. (Not CURL_CA_BUNDLE, which the caller's environment may
# already set to the system's bundle.)
SERVES_TLS=

# tls_yaml: the http section's TLS lines.
tls_yaml() {
	printf '  tls_cert_file: %s\n  tls_key_file: %s\n  tls_ca_file: %s\n' "$TLS_DIR/server.pem" "$TLS_DIR/server.key" "$TLS_CA"
}

# config_tls: adds the TLS lines to the http section of an existing config
# (creating the section), leaving the rest of the user's file as it is.
config_tls() {
	tls_configured && return 0
	cap_say "turning TLS on in $CAPSULE_CONFIG"
	umask 077
	if grep -q '^http:' "$CAPSULE_CONFIG"; then
		awk -v tls="$(tls_yaml)" '{print} /^http:/ {print tls}' "$CAPSULE_CONFIG" >"$CAPSULE_CONFIG.tmp"
	else
		{
			cat "$CAPSULE_CONFIG"
			echo "http:"
			tls_yaml
		} >"$CAPSULE_CONFIG.tmp"
	fi
	umask 022
	mv "$CAPSULE_CONFIG.tmp" "$CAPSULE_CONFIG"
}

# write_config RABBIT_PASSWORD TLS(0|1)
write_config() {
	local rabbit_pw=$1
	if [ -f "$CAPSULE_CONFIG" ]; then
		cap_say "keeping existing $CAPSULE_CONFIG"
		upgrade_config
		config_credential_key
		if [ "$2" = 1 ]; then config_tls; fi
		return 0
	fi
	cap_say "writing $CAPSULE_CONFIG"
	umask 077
	credential_key
	cat >"$CAPSULE_CONFIG" <<EOF
# Capsule all-in-one configuration (written once by deploy/allinone.sh;
# edit freely, it is never overwritten). Keys: config/config.go.
# With --hosts N>=2 only the control plane reads it (its agent section is
# then unused: each simulated host has $CAPSULE_ETC/agent-HOST.yaml).
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
  credential_key_file: $CAPSULE_ETC/credential.key
network:
  # Tenant networks get a VLAN of this range on this physical network.
  tenant_physical_network: $PHYSNET
  tenant_vlan_min: 100
  tenant_vlan_max: 199
  physical_networks: [$PHYSNET]
agent:
  host: $(hostname -s)
  zone: nova
  host_ip: 127.0.0.1
  docker_host: $CAPSULE_DOCKER_HOST
  driver: docker
  bridge_mappings:
    $PHYSNET: $SINGLE_BRIDGE
  volume_dir: /var/lib/capsule/volumes
  shared_volume_dir: /var/lib/capsule/shared-volumes
registry:
  address: $CAPSULE_REGISTRY_ADDR
$(registry_login_yaml)
EOF
	if [ "$2" = 1 ]; then
		printf 'http:\n%s\n' "$(tls_yaml)" >>"$CAPSULE_CONFIG"
	fi
	umask 022
}

# write_agent_config HOST RABBIT_USER RABBIT_PASSWORD: the configuration of one
# simulated compute host, as a real compute host's (deploy/agent.yaml.example):
# no database section, its own dockerd and bridge. Rewritten on every start
# (it is derived from the topology), unless the first line's marker is gone.
write_agent_config() {
	local host=$1 rabbit_user=$2 rabbit_pw=$3 f marker='# Written by deploy/allinone.sh'
	f=$(agent_config "$host")
	if [ -f "$f" ] && ! head -n 1 "$f" | grep -qF "$marker"; then
		cap_say "keeping $f (edited: its first line is no longer the generated marker)"
		return 0
	fi
	umask 077
	cat >"$f.tmp" <<EOF
$marker --hosts (simulated compute host $host); regenerated
# on each start: delete this first line to keep your edits. Keys: config/config.go.
region: RegionOne
bus:
  url: amqp://$rabbit_user:$rabbit_pw@127.0.0.1:5672/capsule
agent:
  host: $host
  zone: nova
  host_ip: 127.0.0.1
  docker_host: $(cap_dockerd_host "$host")
  driver: docker
  bridge_mappings:
    $PHYSNET: $(host_bridge "$host")
  # Each simulated host keeps its local volumes apart; the shared backend
  # is one directory all of them see (docs/operations.md "Volumes").
  volume_dir: /var/lib/capsule/volumes/$host
  shared_volume_dir: /var/lib/capsule/shared-volumes
registry:
  address: $CAPSULE_REGISTRY_ADDR
$(registry_login_yaml)
EOF
	umask 022
	mv "$f.tmp" "$f"
}

# upgrade_config: a config written by an older allinone.sh lacks the
# registry login (the registry was open then); add it, leaving the rest of
# the user's file as it is.
upgrade_config() {
	cap_registry_auth || return 0
	if ! grep -q '^registry:' "$CAPSULE_CONFIG"; then
		printf 'registry:\n  address: %s\n' "$CAPSULE_REGISTRY_ADDR" >>"$CAPSULE_CONFIG"
	fi
	if awk '/^registry:/ {r = 1; next} /^[^ #]/ {r = 0} r && /^  username:/ {found = 1} END {exit !found}' "$CAPSULE_CONFIG"; then
		return 0
	fi
	cap_say "adding the registry login to $CAPSULE_CONFIG"
	umask 077
	# The password through the environment: awk -v would show it in ps.
	CAP_REG_PW=$(cap_registry_password) awk -v u="$CAPSULE_REGISTRY_USER" \
		'{print} /^registry:/ {print "  username: " u; print "  password: " ENVIRON["CAP_REG_PW"]}' "$CAPSULE_CONFIG" >"$CAPSULE_CONFIG.tmp"
	umask 022
	mv "$CAPSULE_CONFIG.tmp" "$CAPSULE_CONFIG"
}

# credential_key: writes the key that encrypts Keystone credential blobs
# at rest, once (kept if there: losing it loses every sealed blob).
credential_key() {
	[ -f "$CAPSULE_ETC/credential.key" ] && return 0
	(umask 077 && head -c 32 /dev/urandom | base64 >"$CAPSULE_ETC/credential.key")
}

# config_credential_key: gives an existing config without one the
# credential key (blobs stored before stay readable: they are marked
# unencrypted; new ones are sealed).
config_credential_key() {
	grep -q '^  credential_key_file:' "$CAPSULE_CONFIG" && return 0
	grep -q '^api:' "$CAPSULE_CONFIG" || return 0
	cap_say "adding a credential key to $CAPSULE_CONFIG"
	credential_key
	umask 077
	awk -v k="  credential_key_file: $CAPSULE_ETC/credential.key" '{print} /^api:/ {print k}' "$CAPSULE_CONFIG" >"$CAPSULE_CONFIG.tmp"
	umask 022
	mv "$CAPSULE_CONFIG.tmp" "$CAPSULE_CONFIG"
}

# registry_login_yaml: the registry section's login lines (none when the
# registry is open).
registry_login_yaml() {
	cap_registry_auth || return 0
	printf '  username: %s\n  password: %s\n' "$CAPSULE_REGISTRY_USER" "$(cap_registry_password)"
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
	if [ "$SERVES_TLS" = 1 ]; then
		printf 'export OS_CACERT=%s\n' "$TLS_CA" >>"$file"
	fi
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
			if [ "$SERVES_TLS" = 1 ]; then echo "    cacert: $TLS_CA"; fi
		done
	} >"$CAPSULE_ETC/clouds.yaml"
	umask 022
}

# ---- networking (Open vSwitch) ----------------------------------------------

# setup_bridges N: the OVS side of topology N. N=1: br-physnet1, the
# bridge of physnet1. N>=2: br-host-X per host, each joined to br-trunk
# (the "physical switch") by a patch-port pair carrying all VLANs:
# br-host-a:host-a-up <-> br-trunk:trunk-host-a.
setup_bridges() {
	local n=$1 h br
	if ! cap_ovs_up; then
		[ "$n" = 1 ] || cap_die "Open vSwitch is not running: --hosts $n needs it for the hosts' bridges and trunk"
		cap_warn "Open vSwitch is not running: no $SINGLE_BRIDGE, servers get no network"
		return 0
	fi
	if [ "$n" = 1 ]; then
		cap_ovs_bridge "$SINGLE_BRIDGE"
		cap_say "OVS bridge $SINGLE_BRIDGE ($PHYSNET)"
		return 0
	fi
	cap_ovs_bridge "$TRUNK_BRIDGE"
	for h in $(host_names "$n"); do
		br=$(host_bridge "$h")
		cap_ovs_bridge "$br"
		cap_ovs_patch "$br" "$h-up" "$TRUNK_BRIDGE" "trunk-$h"
	done
	cap_say "OVS bridges $(host_names "$n" | sed 's/^/br-/' | paste -sd ' ') joined by trunk $TRUNK_BRIDGE ($PHYSNET)"
}

# ---- capsuled ---------------------------------------------------------------

# control_unit N: the systemd unit of the control-plane process.
control_unit() { if [ "$1" = 1 ]; then echo capsule.service; else echo capsule-control.service; fi; }

capsuled_running() {
	if cap_systemd; then
		systemctl is-active --quiet capsule.service || systemctl is-active --quiet capsule-control.service
	else
		cap_pid_alive "$CAPSULED_PID"
	fi
}

agent_running() {
	if cap_systemd; then
		systemctl is-active --quiet "capsule-agent@$1.service"
	else
		cap_pid_alive "$(agent_pidfile "$1")"
	fi
}

stop_agent() {
	if cap_systemd; then
		systemctl stop "capsule-agent@$1.service" 2>/dev/null || true
	fi
	cap_stop_pidfile "agent $1" "$(agent_pidfile "$1")" 30
}

# stop_capsuled: the control-plane process and every simulated host's agent.
stop_capsuled() {
	local u h
	if cap_systemd; then
		for u in "${ROLE_UNITS[@]}"; do
			systemctl stop "$u.service" 2>/dev/null || true
		done
	fi
	for h in $(known_hosts); do stop_agent "$h"; done
	cap_stop_pidfile capsuled "$CAPSULED_PID" 30
}

# start_control N: `capsuled all` (N=1) or the control plane alone.
start_control() {
	local n=$1 u
	if cap_systemd; then
		cap_install_unit "$(control_unit "$n" | sed 's/\.service$//')"
		systemctl enable --quiet "$(control_unit "$n")"
		# The other mode's unit must not come back at boot.
		if [ "$n" = 1 ]; then u=capsule-control.service; else u=capsule.service; fi
		systemctl disable --quiet "$u" 2>/dev/null || true
		systemctl restart "$(control_unit "$n")"
	elif [ "$n" = 1 ]; then
		cap_spawn "$CAPSULED_PID" "$CAPSULED_LOG" "$CAPSULE_BIN/capsuled" -config "$CAPSULE_CONFIG" all
	else
		cap_spawn "$CAPSULED_PID" "$CAPSULED_LOG" "$CAPSULE_BIN/capsuled" -config "$CAPSULE_CONFIG" api,scheduler,conductor
	fi
}

start_agent() {
	local h=$1
	if cap_systemd; then
		cap_install_unit capsule-agent@
		systemctl enable --quiet "capsule-agent@$h.service"
		systemctl restart "capsule-agent@$h.service"
	else
		cap_spawn "$(agent_pidfile "$h")" "$(agent_log "$h")" "$CAPSULE_BIN/capsuled" -config "$(agent_config "$h")" agent
	fi
}

show_capsuled_log() {
	if cap_systemd; then
		journalctl -u capsule.service -u capsule-control.service -n 40 --no-pager >&2 || true
	else
		cap_tail_log "$CAPSULED_LOG" 40
	fi
}

capsuled_log_hint() {
	if cap_systemd; then echo "journalctl -u capsule -u capsule-control"; else echo "$CAPSULED_LOG"; fi
}

agent_log_hint() {
	if cap_systemd; then echo "journalctl -u capsule-agent@$1"; else agent_log "$1"; fi
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

# token USER PROJECT PASSWORD: a project-scoped Keystone token. The body
# (with the password) goes on stdin, not on curl's command line.
token() {
	printf '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"%s","domain":{"name":"Default"},"password":"%s"}}},"scope":{"project":{"name":"%s","domain":{"name":"Default"}}}}}' \
		"$1" "$3" "$2" |
		curl -sf --max-time 10 -D - -o /dev/null -H 'Content-Type: application/json' --data-binary @- \
			"$CAPSULE_IDENTITY_URL/auth/tokens" | tr -d '\r' | sed -n 's/^[Xx]-[Ss]ubject-[Tt]oken: //p'
}

# compute_state PASSWORD: "HOST STATE STATUS" per nova-compute service.
compute_state() {
	local tok
	tok=$(token admin admin "$1")
	[ -n "$tok" ] || return 1
	curl -sf --max-time 10 -H @<(printf 'X-Auth-Token: %s\n' "$tok") "$CAPSULE_COMPUTE_URL/os-services?binary=nova-compute" |
		python3 -c 'import json, sys
for s in json.load(sys.stdin).get("services", []):
    print(s.get("host"), s.get("state"), s.get("status"))'
}

# compute_up PASSWORD HOST...: every HOST's nova-compute service is up.
compute_up() {
	local pw=$1 states h
	shift
	states=$(compute_state "$pw") || return 1
	for h in "$@"; do
		grep -q "^$h up " <<<"$states" || return 1
	done
}

# wait_for_hosts PASSWORD HOST...: like wait_for, watching the agents too.
wait_for_hosts() {
	local pw=$1 deadline h
	shift
	deadline=$((SECONDS + 90))
	while [ $SECONDS -lt $deadline ]; do
		compute_up "$pw" "$@" && return 0
		capsuled_running || {
			show_capsuled_log
			cap_die "capsuled exited before the compute hosts reported (see $(capsuled_log_hint))"
		}
		for h in "$@"; do
			[ "$h" = "$(hostname -s)" ] && continue # N=1: the agent is in capsuled
			agent_running "$h" || {
				cap_tail_log "$(agent_log "$h")" 40
				cap_die "the agent of $h exited (see $(agent_log_hint "$h"))"
			}
		done
		sleep 1
	done
	compute_state "$pw" >&2 || true
	cap_die "compute services of $* not all up within 90s (see $(capsuled_log_hint) and the agents' logs)"
}

# STALE_REASON marks compute services this script disabled because their
# host is not in the current topology (so it re-enables only those).
STALE_REASON="not a compute host of deploy/allinone.sh --hosts"

# compute_service PASSWORD ACTION HOST [REASON]: PUT /os-services/ACTION
# (enable | disable-log-reason) for HOST's nova-compute service.
compute_service() {
	local tok body
	tok=$(token admin admin "$1")
	[ -n "$tok" ] || return 1
	body="{\"host\": \"$3\", \"binary\": \"nova-compute\"${4:+, \"disabled_reason\": \"$4\"}}"
	curl -sf --max-time 10 -o /dev/null -X PUT -H @<(printf 'X-Auth-Token: %s\n' "$tok") -H 'Content-Type: application/json' \
		-H 'OpenStack-API-Version: compute 2.1' -d "$body" "$CAPSULE_COMPUTE_URL/os-services/$2"
}

# sync_services PASSWORD HOST...: disables the compute services of hosts
# outside the topology (e.g. `hostname -s` after --hosts 2, host-a/host-b
# after --hosts 1): they are down for good, and the scheduler must not pick
# one in the minute before it is noticed. Re-enables the topology's hosts
# this script disabled earlier.
sync_services() {
	local pw=$1 states h state status reason
	shift
	states=$(compute_state_reason "$pw") || return 0
	while IFS='|' read -r h state status reason; do
		if [[ " $* " == *" $h "* ]]; then
			if [ "$status" = disabled ] && [[ $reason == "$STALE_REASON"* ]]; then
				cap_say "re-enabling compute service of $h"
				compute_service "$pw" enable "$h" || cap_warn "could not enable the compute service of $h"
			fi
		elif [ "$status" = enabled ]; then
			cap_say "disabling compute service of $h ($state): $STALE_REASON $#"
			compute_service "$pw" disable-log-reason "$h" "$STALE_REASON $#" ||
				cap_warn "could not disable the compute service of $h"
		fi
	done <<<"$states"
}

# compute_state_reason PASSWORD: "HOST|STATE|STATUS|REASON" per nova-compute service.
compute_state_reason() {
	local tok
	tok=$(token admin admin "$1")
	[ -n "$tok" ] || return 1
	curl -sf --max-time 10 -H @<(printf 'X-Auth-Token: %s\n' "$tok") "$CAPSULE_COMPUTE_URL/os-services?binary=nova-compute" |
		python3 -c 'import json, sys
for s in json.load(sys.stdin).get("services", []):
    print("|".join(str(s.get(k) or "") for k in ("host", "state", "status", "disabled_reason")))'
}

# ---- simulated hosts --------------------------------------------------------

# remove_host HOST: a simulated host no longer in the topology (--hosts
# shrank): its agent, dockerd with its containers and data, bridge and
# config go. The cloud keeps its (down) compute service and server records.
remove_host() {
	local h=$1
	cap_say "removing simulated host $h (not in --hosts $2): agent, dockerd and its data, bridge $(host_bridge "$h")"
	stop_agent "$h"
	if cap_systemd; then
		systemctl disable --quiet "capsule-agent@$h.service" "$(cap_dockerd_unit "$h")" 2>/dev/null || true
	fi
	cap_remove_dockerd "$h"
	if cap_ovs_up; then
		cap_ovs_del_bridge "$(host_bridge "$h")" || true
		ovs-vsctl --timeout=10 --if-exists del-port "$TRUNK_BRIDGE" "trunk-$h" || true
	fi
	rm -f "$(agent_config "$h")" "$(agent_pidfile "$h")"
	rabbitmqctl -q delete_user "capsule-agent-$h" >/dev/null 2>&1 || true
}

# prune_topology N: removes what belongs to hosts outside topology N.
prune_topology() {
	local n=$1 h keep
	keep=" $(host_names "$n" | paste -sd ' ') "
	[ "$n" = 1 ] && keep=" "
	for h in $(known_hosts); do
		[[ $keep == *" $h "* ]] || remove_host "$h" "$n"
	done
	if [ "$n" = 1 ] && cap_ovs_up && ovs-vsctl --timeout=10 br-exists "$TRUNK_BRIDGE" 2>/dev/null; then
		cap_say "removing the trunk bridge $TRUNK_BRIDGE"
		cap_ovs_del_bridge "$TRUNK_BRIDGE"
	fi
}

start_host_dockerd() {
	local h=$1
	if cap_systemd; then
		cap_install_unit capsule-dockerd@
		systemctl enable --quiet "$(cap_dockerd_unit "$h")"
	fi
	cap_start_dockerd "$h"
	cap_prepull_image "$h"
}

# ---- commands ---------------------------------------------------------------

# phase NAME: starts a section of the start, timing the one before (the
# closing message says where the time went).
PHASE_TIMES=()
PHASE_NAME=""
PHASE_T0=0
phase() {
	[ -z "$PHASE_NAME" ] || PHASE_TIMES+=("$PHASE_NAME $((SECONDS - PHASE_T0))s")
	PHASE_NAME=$1 PHASE_T0=$SECONDS
	[ -z "$1" ] || cap_section "$1"
}

do_start() {
	local n=$1 tls=$2 t0=$SECONDS rabbit_pw agent_pw admin_pw demo_pw h hosts
	cap_need_root

	phase "Packages"
	cap_install_deps cloud

	phase "Build"
	cap_build

	phase "Services"
	cap_dirs
	if cap_systemd; then
		# Units up front: capsule.service requires capsule-dockerd even
		# when that dockerd already runs; enabled, the cloud survives reboots.
		local u
		for u in capsule-dockerd capsule-registry; do
			cap_install_unit "$u"
			systemctl enable --quiet "$u.service"
		done
	fi
	# The main dockerd serves the N=1 host, builds the base image and is
	# the test suite's; it runs in every topology.
	cap_start_dockerd
	cap_start_registry
	cap_start_rabbitmq
	cap_start_ovs
	# Servers' own figures in /proc (agent.lxcfs); best effort.
	cap_start_lxcfs
	cap_ensure_base_image
	rabbit_pw=$(cap_secret RABBITMQ_PASSWORD)
	cap_rabbit_user capsule "$rabbit_pw" capsule
	cap_say "RabbitMQ user capsule on vhost capsule ready"
	if [ "$tls" = 1 ] || tls_configured; then
		tls=1
		cap_tls_pki "$TLS_DIR"
		use_tls
		cap_say "TLS: local CA $TLS_CA, server certificate for $(cat "$TLS_DIR/server.sans")"
	fi

	phase "Compute hosts ($n)"
	# Agents stop first: a host being removed must not report meanwhile.
	stop_capsuled
	prune_topology "$n"
	setup_bridges "$n"
	if [ "$n" -gt 1 ]; then
		for h in $(host_names "$n"); do
			start_host_dockerd "$h"
			# Each host logs in as its own broker user, limited to its own
			# queues; the conductor takes its reports only about itself.
			agent_pw=$(cap_secret "RABBITMQ_PASSWORD_${h//-/_}")
			cap_rabbit_agent_user "capsule-agent-$h" "$agent_pw" capsule "$h"
			write_agent_config "$h" "capsule-agent-$h" "$agent_pw"
			cap_say "$h: dockerd $(cap_dockerd_host "$h"), bridge $(host_bridge "$h"), config $(agent_config "$h")"
		done
	fi
	record_hosts "$n"

	phase "Capsule"
	write_config "$rabbit_pw" "$tls"
	admin_pw=$(cap_secret ADMIN_PASSWORD)
	demo_pw=$(cap_secret DEMO_PASSWORD)
	# Bootstrap writes the database: capsuled is stopped meanwhile (above),
	# and restarted afterwards so a rebuilt binary or an edited config is used.
	phase "Bootstrap"
	cap_say "bootstrap (domain, projects, users, flavors, image)"
	# The passwords go in the environment (readable by root only), never
	# on a command line (ps shows it to every user).
	if ! CAPSULE_ADMIN_PASSWORD=$admin_pw CAPSULE_DEMO_PASSWORD=$demo_pw "$CAPSULE_BIN/capsuled" -config "$CAPSULE_CONFIG" \
		bootstrap -image "busybox=$CAPSULE_IMAGE" >>"$CAPSULE_LOG/bootstrap.log" 2>&1; then
		cap_tail_log "$CAPSULE_LOG/bootstrap.log"
		cap_die "capsuled bootstrap failed (see $CAPSULE_LOG/bootstrap.log)"
	fi
	if [ "$n" = 1 ]; then
		cap_say "starting capsuled (api, scheduler, conductor, agent)"
	else
		cap_say "starting capsuled (api, scheduler, conductor) and $n agents"
	fi
	phase "Start and wait for the APIs and agents"
	start_control "$n"
	wait_for 60 "the Identity API answered on $CAPSULE_IDENTITY_URL" cap_api_up
	if [ "$n" -gt 1 ]; then
		for h in $(host_names "$n"); do start_agent "$h"; done
	fi
	write_openrc "$ADMIN_OPENRC" admin admin "$admin_pw"
	write_openrc "$DEMO_OPENRC" demo demo "$demo_pw"
	write_clouds_yaml "$admin_pw" "$demo_pw"
	# shellcheck disable=SC2046
	hosts=$(compute_hosts "$n" | paste -sd ' ')
	# shellcheck disable=SC2086
	wait_for_hosts "$admin_pw" $hosts
	# shellcheck disable=SC2086
	sync_services "$admin_pw" $hosts

	phase ""
	local times
	times=$(printf '%s, ' "${PHASE_TIMES[@]}")
	cap_section "Ready in $((SECONDS - t0))s (${times%, })"
	echo "Capsule runs on this machine with $n compute host(s):"
	print_hosts "$n"
	if [ "$n" -gt 1 ]; then
		cat <<EOF

Pin servers to a host with --availability-zone nova:HOST, e.g.
  openstack server create --flavor m1.tiny --image busybox --availability-zone nova:host-a a1
  (admin only, as in Nova). Topology, VLAN networks across hosts: docs/multihost.md;
  check the trunk: deploy/check-trunk.sh
EOF
	fi
	cat <<EOF

Try it:

  . $DEMO_OPENRC               # or $ADMIN_OPENRC
  openstack flavor list
  openstack image list
  openstack server create --flavor m1.tiny --image busybox demo1
  openstack server list
  openstack console log show demo1
  openstack server delete demo1

Endpoints: identity $CAPSULE_IDENTITY_URL, compute :8774, image :9292,
network :9696, block storage :8776, portal :8080
Logs: $(capsuled_log_hint)$([ "$n" = 1 ] || echo ", $CAPSULE_LOG/agent-HOST.log"); passwords: $CAPSULE_SECRETS
Stop: $0 stop      Remove everything: $0 clean
EOF
}

# print_hosts N: one line per compute host of topology N.
print_hosts() {
	local n=$1 h
	if [ "$n" = 1 ]; then
		printf '  %-8s agent in capsuled, dockerd %s, bridge %s (%s)\n' "$(hostname -s)" "$CAPSULE_DOCKER_HOST" "$SINGLE_BRIDGE" "$PHYSNET"
		return 0
	fi
	for h in $(host_names "$n"); do
		printf '  %-8s agent %s, dockerd %s, bridge %s (%s) -> %s\n' "$h" "$(agent_config "$h")" \
			"$(cap_dockerd_host "$h")" "$(host_bridge "$h")" "$PHYSNET" "$TRUNK_BRIDGE"
	done
}

do_status() {
	local n=$1 rc=0 h br what
	line() { printf '  %-14s %s\n' "$1" "$2"; }
	echo "Capsule all-in-one, $n compute host(s) (recorded in $TOPOLOGY):"
	if capsuled_running; then
		if [ "$n" = 1 ]; then what="running (all roles)"; else what="running (api, scheduler, conductor)"; fi
		line capsuled "$what"
	else
		line capsuled "stopped" && rc=1
	fi
	if cap_api_up; then line api "answers on $CAPSULE_IDENTITY_URL"; else line api "not answering" && rc=1; fi
	if cap_dockerd_up; then line dockerd "$CAPSULE_DOCKER_HOST ($(cap_docker ps -q 2>/dev/null | wc -l) containers running)"; else line dockerd "down" && rc=1; fi
	if cap_registry_up; then line registry "$CAPSULE_REGISTRY_ADDR"; else line registry "down" && rc=1; fi
	if cap_rabbit_up; then line rabbitmq "running"; else line rabbitmq "down" && rc=1; fi
	if cap_ovs_up; then line openvswitch "running"; else line openvswitch "down (servers get no network)"; fi
	if [ "$n" = 1 ]; then
		if cap_ovs_up && ovs-vsctl --timeout=5 br-exists "$SINGLE_BRIDGE"; then line bridge "$SINGLE_BRIDGE ($PHYSNET)"; else line bridge "$SINGLE_BRIDGE missing"; fi
	else
		if cap_ovs_up && ovs-vsctl --timeout=5 br-exists "$TRUNK_BRIDGE"; then line trunk "$TRUNK_BRIDGE"; else line trunk "$TRUNK_BRIDGE missing" && rc=1; fi
		for h in $(host_names "$n"); do
			br=$(host_bridge "$h")
			what=
			if agent_running "$h"; then what="agent running"; else what="agent stopped" && rc=1; fi
			if cap_dockerd_up "$h"; then
				what="$what, dockerd $(cap_dockerd_host "$h") ($(cap_docker --name "$h" ps -q 2>/dev/null | wc -l) containers)"
			else
				what="$what, dockerd down" && rc=1
			fi
			if cap_ovs_up && ovs-vsctl --timeout=5 br-exists "$br"; then
				what="$what, bridge $br ($(ovs-vsctl --timeout=5 list-ports "$br" | grep -vc -- "-up$" || true) ports)"
			else
				what="$what, bridge $br missing" && rc=1
			fi
			line "$h" "$what"
		done
	fi
	if [ -f "$CAPSULE_SECRETS" ] && cap_api_up; then
		local states
		if states=$(compute_state "$(cap_secret ADMIN_PASSWORD)" 2>/dev/null); then
			echo "Compute services (nova-compute):"
			while read -r h what br; do line "$h" "$what, $br"; done <<<"$states"
		fi
	fi
	return $rc
}

do_stop() {
	local h
	cap_need_root
	stop_capsuled
	for h in $(known_hosts); do cap_stop_dockerd "$h"; done
	cap_stop_registry
	cap_stop_dockerd
	cap_stop_ovs
	cap_stop_rabbitmq
	cap_say "stopped"
}

do_clean() {
	local h ids u
	cap_need_root
	if [ -t 0 ] && [ "${1:-}" != -y ]; then
		read -r -p "Delete Capsule's servers, images, registry, database, bridges and $CAPSULE_ETC? [y/N] " ans
		[ "$ans" = y ] || [ "$ans" = Y ] || exit 1
	fi
	stop_capsuled
	# Every named dockerd (simulated hosts, test-env.sh's test-a/test-b):
	# their data is under $CAPSULE_LIB, about to go.
	for h in $(cap_dockerd_names); do
		cap_say "removing dockerd $h and its data"
		cap_remove_dockerd "$h"
		if cap_systemd; then
			systemctl disable --quiet "capsule-agent@$h.service" "$(cap_dockerd_unit "$h")" 2>/dev/null || true
		fi
	done
	if cap_dockerd_up; then
		ids=$(cap_docker ps -aq)
		if [ -n "$ids" ]; then
			cap_say "removing $(echo "$ids" | wc -l) containers"
			# shellcheck disable=SC2086
			cap_docker rm -f $ids >/dev/null || true
		fi
	fi
	if cap_ovs_up; then
		for h in $(ovs-vsctl --timeout=10 list-br | grep -E "^(br-host-[a-z]|$TRUNK_BRIDGE|$SINGLE_BRIDGE)\$" || true); do
			cap_say "removing OVS bridge $h"
			cap_ovs_del_bridge "$h"
		done
	fi
	if cap_rabbit_up; then
		rabbitmqctl -q delete_user capsule >/dev/null 2>&1 || true
		for u in $(rabbitmqctl -q list_users 2>/dev/null | awk '$1 ~ /^capsule-agent-/ {print $1}'); do
			rabbitmqctl -q delete_user "$u" >/dev/null 2>&1 || true
		done
		rabbitmqctl -q delete_vhost capsule >/dev/null 2>&1 || true
	fi
	do_stop
	cap_unmount_under "$CAPSULE_RUN/docker-exec"
	cap_unmount_under "$CAPSULE_LIB/docker"
	cap_say "removing $CAPSULE_LIB $CAPSULE_ETC $CAPSULE_LOG $CAPSULE_RUN"
	rm -rf "${CAPSULE_LIB:?}" "${CAPSULE_ETC:?}" "${CAPSULE_LOG:?}" "${CAPSULE_RUN:?}"
	rm -f "$CAPSULE_BIN/capsuled" "$CAPSULE_BIN/capsule" "$CAPSULE_BIN/capsule-runc" "$CAPSULE_BIN/capsule-runc-join"
	if cap_systemd; then
		# The main dockerd's XFS or btrfs data root (cap_capped_dataroot),
		# unmounted above, and its storage driver drop-in.
		u=$(systemd-escape --path --suffix=mount "$(cap_dockerd_data "")")
		systemctl disable --quiet "$u" 2>/dev/null || true
		rm -f "/etc/systemd/system/$u"
		rm -rf /etc/systemd/system/capsule-dockerd.service.d /etc/systemd/system/capsule-dockerd@*.service.d
		for u in "${ROLE_UNITS[@]}" capsule-dockerd capsule-registry; do
			systemctl disable "$u.service" >/dev/null 2>&1 || true
			rm -f "/etc/systemd/system/$u.service"
		done
		rm -f /etc/systemd/system/capsule-agent@.service /etc/systemd/system/capsule-dockerd@.service
		systemctl daemon-reload
	fi
	cap_say "clean"
}

main() {
	local cmd=start hosts='' tls=0 args=()
	while [ $# -gt 0 ]; do
		case $1 in
		start | stop | clean | status) cmd=$1 ;;
		--hosts) hosts=${2:?--hosts needs a number} && shift ;;
		--hosts=*) hosts=${1#--hosts=} ;;
		--tls) tls=1 ;;
		-y) args+=(-y) ;;
		-h | --help) usage && exit 0 ;;
		*) usage && cap_die "unknown argument: $1" ;;
		esac
		shift
	done
	if [ -n "$hosts" ]; then
		if ! [[ $hosts =~ ^[1-9]$ ]] || [ "$hosts" -gt $MAX_HOSTS ]; then cap_die "--hosts $hosts: want 1 to $MAX_HOSTS"; fi
		[ "$cmd" = start ] || cap_die "--hosts goes with start (status and stop act on what runs)"
	else
		hosts=$(recorded_hosts)
	fi
	case $cmd in
	start) do_start "$hosts" "$tls" ;;
	status) do_status "$hosts" ;;
	stop) do_stop ;;
	clean) do_clean "${args[@]}" ;;
	esac
}

main "$@"
