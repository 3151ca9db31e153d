#!/bin/sh
# Builds Capsule's base image from Debian's busybox (no Docker Hub needed)
# and pushes it to the private registry.
# Usage: build-base.sh DOCKER_HOST REGISTRY   (e.g. unix:///run/capsule/docker.sock 127.0.0.1:5050)
#
# Debian's dynamic busybox (package "busybox", fetched with apt-get download
# so busybox-static stays installed) is used with its three libraries:
# the static build prefers its applets over PATH, so its sysinfo()-based
# free and uptime, which show the whole host, could not be replaced by the
# /proc readers below (LXCFS makes /proc the server's own). Without apt,
# the static busybox is used and free/uptime show the host.
set -eu
DOCKER_HOST_ARG=${1:?docker host}
REGISTRY=${2:?registry host:port}
REF="$REGISTRY/capsule/busybox:latest"
BASE_VERSION=2
d=$(mktemp -d)
dl=$(mktemp -d)
trap 'rm -rf "$d" "$dl"' EXIT
mkdir -p "$d/bin" "$d/sbin" "$d/etc" "$d/proc" "$d/sys" "$d/dev" "$d/tmp" "$d/root" "$d/var/log" "$d/usr/bin" "$d/usr/sbin"
BUSYBOX=
if command -v apt-get >/dev/null && (cd "$dl" && apt-get download -q busybox >/dev/null 2>&1) &&
	dpkg-deb -x "$dl"/busybox_*.deb "$dl/x" && [ -x "$dl/x/bin/busybox" ]; then
	BUSYBOX=$dl/x/bin/busybox
	# Its libraries (libc, libresolv, the loader) at their own paths.
	for lib in $(ldd "$BUSYBOX" | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}'); do
		mkdir -p "$d$(dirname "$lib")"
		cp -L "$lib" "$d$lib"
	done
else
	echo "build-base: the dynamic busybox is not available; using busybox-static (free and uptime will show the host)" >&2
	BUSYBOX=$(command -v busybox || echo /bin/busybox)
fi
cp "$BUSYBOX" "$d/bin/busybox"
for a in $("$d/bin/busybox" --list); do [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
# free and uptime read /proc (the server's own under LXCFS) instead of
# the kernel's host-wide sysinfo().
rm -f "$d/bin/free" "$d/bin/uptime"
cat > "$d/bin/free" <<'FREE'
#!/bin/sh
# free of Capsule's base image: from /proc/meminfo, which LXCFS makes the
# server's own (its memory limit and usage), not sysinfo() (the host's).
unit=k
for a in "$@"; do
	case $a in
	-b | --bytes) unit=b ;;
	-k | --kibi) unit=k ;;
	-m | --mebi) unit=m ;;
	-g | --gibi) unit=g ;;
	-h | --human) unit=h ;;
	*) echo "usage: free [-b|-k|-m|-g|-h]" >&2; exit 1 ;;
	esac
done
exec awk -v unit="$unit" '
function fmt(kb) {
	if (unit == "b") return kb * 1024
	if (unit == "k") return kb
	if (unit == "m") return int(kb / 1024)
	if (unit == "g") return int(kb / 1048576)
	if (kb >= 1048576) return sprintf("%.1fGi", kb / 1048576)
	if (kb >= 1024) return sprintf("%.1fMi", kb / 1024)
	return kb "Ki"
}
{ v[$1] = $2 }
END {
	total = v["MemTotal:"]; free = v["MemFree:"]
	cache = v["Buffers:"] + v["Cached:"] + v["SReclaimable:"]
	used = total - free - cache
	if (used < 0) used = total - free
	avail = ("MemAvailable:" in v) ? v["MemAvailable:"] : free + cache
	printf "%-7s %11s %11s %11s %11s %11s %11s\n", "", "total", "used", "free", "shared", "buff/cache", "available"
	printf "%-7s %11s %11s %11s %11s %11s %11s\n", "Mem:", fmt(total), fmt(used), fmt(free), fmt(v["Shmem:"]), fmt(cache), fmt(avail)
	printf "%-7s %11s %11s %11s\n", "Swap:", fmt(v["SwapTotal:"]), fmt(v["SwapTotal:"] - v["SwapFree:"]), fmt(v["SwapFree:"])
}' /proc/meminfo
FREE
cat > "$d/bin/uptime" <<'UPTIME'
#!/bin/sh
# uptime of Capsule's base image: from /proc/uptime and /proc/loadavg,
# which LXCFS makes the server's own, not sysinfo() (the host's).
read -r up _ </proc/uptime
read -r l1 l5 l15 _ </proc/loadavg
s=${up%.*}
days=$((s / 86400))
hours=$((s % 86400 / 3600))
mins=$((s % 3600 / 60))
p=
[ "$days" -eq 1 ] && p="1 day, "
[ "$days" -gt 1 ] && p="$days days, "
if [ "$hours" -gt 0 ]; then p="$p$hours:$(printf %02d "$mins")"; else p="$p$mins min"; fi
echo " $(date +%H:%M:%S) up $p,  load average: $l1, $l5, $l15"
UPTIME
chmod +x "$d/bin/free" "$d/bin/uptime"
cat > "$d/sbin/capsule-init" <<'INIT'
#!/bin/sh
# PID 1 of a Capsule base-image server: prints a boot log (the console),
# runs what Capsule's agent prepared of the server's user data (package
# userdata: bootcmd at every boot, the rest once, at the first boot) and
# waits; exits cleanly on SIGTERM so "stop" is fast.
trap 'echo "capsule-init: shutting down"; exit 0' TERM INT
echo "Capsule base image (busybox $(busybox | head -1 | cut -d' ' -f2))"
echo "kernel: $(uname -sr)"
echo "hostname: $(hostname)"
echo "cpus: $(nproc)"
ud=/var/lib/capsule/user-data
if [ -x "$ud/boot.sh" ]; then
	echo "capsule-init: running bootcmd"
	"$ud/boot.sh" 2>&1
	echo "capsule-init: bootcmd exited $?"
fi
if [ -x "$ud/once" ] && [ ! -e "$ud/once.done" ]; then
	# Marked first: user data that reboots the server does not run twice.
	: >"$ud/once.done"
	echo "capsule-init: running user data (first boot)"
	("$ud/once" 2>&1; echo "capsule-init: user data exited $?") &
fi
echo "capsule-init: system ready"
while :; do sleep 3600 & wait $!; done
INIT
chmod +x "$d/sbin/capsule-init"
echo "root:x:0:0:root:/root:/bin/sh" > "$d/etc/passwd"
echo "root:x:0:" > "$d/etc/group"
tar -C "$d" -c . | # capsule.base-version: deploy rebuilds an older base image (lib.sh,
# cap_ensure_base_image). 2: capsule-init runs the user data.
docker -H "$DOCKER_HOST_ARG" import --change 'CMD ["/sbin/capsule-init"]' --change "LABEL capsule.base-version=$BASE_VERSION" - "$REF" >/dev/null
docker -H "$DOCKER_HOST_ARG" push "$REF" >/dev/null
echo "$REF"
