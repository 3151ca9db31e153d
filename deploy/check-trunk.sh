#!/usr/bin/env bash
# Checks that two OVS bridges ("compute hosts") are joined by a trunk that
# carries every VLAN and keeps VLANs apart, with TCP (not just ping):
#
#   deploy/check-trunk.sh [BRIDGE_A BRIDGE_B]   default: br-host-a br-host-b
#                                               (deploy/allinone.sh --hosts 2)
#   deploy/check-trunk.sh --scratch             builds two bridges and a trunk of
#                                               its own, checks them, removes them
#
# Four network namespaces play servers, plugged the way the agent plugs a
# server's NIC: a veth pair, the namespace end eth0 with a static IP and TX
# checksum offload off, the host end an access port (VLAN tag) on a bridge.
# All four share one subnet, so only VLAN isolation keeps them apart:
#
#   BRIDGE_A: a101 (10.251.0.1, VLAN 101)   a102 (10.251.0.4, VLAN 102)
#   BRIDGE_B: b101 (10.251.0.2, VLAN 101)   b102 (10.251.0.3, VLAN 102)
#
# Expected: a101<->b101 and a102<->b102 talk TCP both ways across the
# trunk; a101 reaches neither b102 (other host, other VLAN) nor a102 (same
# host, other VLAN). Exit status 0 when all hold. Run as root; everything
# it creates is removed on exit.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

PREFIX=ctk # names of everything this script creates (namespaces, veths, scratch bridges)
SUBNET=10.251.0
PORT=7101
SCRATCH=

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; }

# ns_name SERVER: the namespace of a101, b102...
ns_name() { echo "$PREFIX-$1"; }

cleanup() {
	local s
	for s in a101 a102 b101 b102; do
		ip netns del "$(ns_name "$s")" 2>/dev/null || true
		# The host end lives outside the namespace; deleting it removes
		# the OVS port's interface, the port row goes with del-port.
		ip link del "$PREFIX-$s" 2>/dev/null || true
		ovs-vsctl --timeout=10 --if-exists del-port "$PREFIX-$s" 2>/dev/null || true
	done
	if [ -n "$SCRATCH" ]; then
		cap_ovs_del_bridge "$PREFIX-a" || true
		cap_ovs_del_bridge "$PREFIX-b" || true
		cap_ovs_del_bridge "$PREFIX-trunk" || true
	fi
}

# plug SERVER BRIDGE TAG IP: a namespace with eth0 on BRIDGE as an access
# port of VLAN TAG.
plug() {
	local s=$1 br=$2 tag=$3 ip=$4 ns host=$PREFIX-$1 peer=$PREFIX-$1-p
	ns=$(ns_name "$s")
	ip netns add "$ns"
	ip link add "$host" type veth peer name "$peer"
	ip link set "$peer" netns "$ns"
	ip -n "$ns" link set "$peer" name eth0
	ip -n "$ns" addr add "$ip/24" dev eth0
	ip -n "$ns" link set lo up
	ip -n "$ns" link set eth0 up
	# The userspace datapath forwards the veth's frames as they are: with
	# TX checksum offload on, TCP segments leave with partial checksums
	# and are dropped by the receiver (ping still works, TCP does not).
	ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
	ip link set "$host" up
	# Port and tag in one transaction: never an untagged moment.
	ovs-vsctl --timeout=10 add-port "$br" "$host" tag="$tag" -- set interface "$host" "external_ids:capsule-check=$PREFIX"
}

# tcp FROM TO_SERVER TO_IP: true when FROM opens a TCP connection to TO and
# reads the banner TO's listener sends.
tcp() {
	local from=$1 to=$2 ip=$3 got
	PORT=$((PORT + 1))
	ip netns exec "$(ns_name "$to")" busybox timeout 6 busybox nc -l -p "$PORT" -e echo "hello-from-$to" >/dev/null 2>&1 &
	local listener=$!
	# The listener needs a moment to bind.
	sleep 0.3
	got=$(ip netns exec "$(ns_name "$from")" busybox timeout 3 busybox nc "$ip" "$PORT" </dev/null 2>/dev/null || true)
	kill "$listener" 2>/dev/null || true
	wait "$listener" 2>/dev/null || true
	[ "$got" = "hello-from-$to" ]
}

failures=0
expect() {
	local want=$1 from=$2 to=$3 ip=$4 what
	what="$from -> $to ($ip)"
	if tcp "$from" "$to" "$ip"; then
		if [ "$want" = reach ]; then echo "ok    $what: TCP connects"; else echo "FAIL  $what: TCP connects across VLANs" && failures=$((failures + 1)); fi
	else
		if [ "$want" = reach ]; then echo "FAIL  $what: no TCP connection" && failures=$((failures + 1)); else echo "ok    $what: isolated"; fi
	fi
}

main() {
	local a=br-host-a b=br-host-b
	case ${1:-} in
	-h | --help) usage && exit 0 ;;
	--scratch)
		SCRATCH=1
		a=$PREFIX-a
		b=$PREFIX-b
		;;
	"") ;;
	*)
		a=$1
		b=${2:?usage: $0 [BRIDGE_A BRIDGE_B] | --scratch}
		;;
	esac
	cap_need_root
	local t
	for t in ovs-vsctl ethtool busybox ip; do
		command -v "$t" >/dev/null || cap_die "$t is missing (deploy/allinone.sh installs it)"
	done
	cap_ovs_up || cap_die "Open vSwitch is not running"
	# One run at a time: the names are fixed.
	exec 9>"/tmp/$PREFIX.lock"
	flock -w 60 9 || cap_die "another check-trunk.sh is running"
	trap cleanup EXIT
	cleanup # leftovers of a killed run
	if [ -n "$SCRATCH" ]; then
		cap_ovs_bridge "$a"
		cap_ovs_bridge "$b"
		cap_ovs_bridge "$PREFIX-trunk"
		cap_ovs_patch "$a" "$PREFIX-a-up" "$PREFIX-trunk" "$PREFIX-t-a"
		cap_ovs_patch "$b" "$PREFIX-b-up" "$PREFIX-trunk" "$PREFIX-t-b"
	fi
	for t in "$a" "$b"; do
		ovs-vsctl --timeout=10 br-exists "$t" || cap_die "OVS bridge $t does not exist (deploy/allinone.sh --hosts 2 creates br-host-a and br-host-b)"
	done
	echo "checking the trunk between $a and $b"
	plug a101 "$a" 101 "$SUBNET.1"
	plug b101 "$b" 101 "$SUBNET.2"
	plug b102 "$b" 102 "$SUBNET.3"
	plug a102 "$a" 102 "$SUBNET.4"

	expect reach a101 b101 "$SUBNET.2"
	expect reach b101 a101 "$SUBNET.1"
	expect reach a102 b102 "$SUBNET.3"
	expect reach b102 a102 "$SUBNET.4"
	expect isolated a101 b102 "$SUBNET.3"
	expect isolated a101 a102 "$SUBNET.4"
	expect isolated b101 b102 "$SUBNET.3"

	if [ $failures -gt 0 ]; then
		echo "check-trunk: $failures check(s) failed"
		return 1
	fi
	echo "check-trunk: VLANs 101 and 102 cross the trunk and stay apart"
}

main "$@"
