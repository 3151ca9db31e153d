#!/bin/sh
# Builds Capsule's base image from Debian's busybox-static (no Docker Hub
# needed) and pushes it to the private registry.
# Usage: build-base.sh DOCKER_HOST REGISTRY   (e.g. unix:///run/capsule/docker.sock 127.0.0.1:5050)
set -eu
DOCKER_HOST_ARG=${1:?docker host}
REGISTRY=${2:?registry host:port}
REF="$REGISTRY/capsule/busybox:latest"
BUSYBOX=$(command -v busybox || echo /bin/busybox)
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/bin" "$d/sbin" "$d/etc" "$d/proc" "$d/sys" "$d/dev" "$d/tmp" "$d/root" "$d/var/log" "$d/usr/bin" "$d/usr/sbin"
cp "$BUSYBOX" "$d/bin/busybox"
for a in $("$d/bin/busybox" --list); do [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
cat > "$d/sbin/capsule-init" <<'INIT'
#!/bin/sh
# PID 1 of a Capsule base-image server: prints a boot log (the console)
# and waits; exits cleanly on SIGTERM so "stop" is fast.
trap 'echo "capsule-init: shutting down"; exit 0' TERM INT
echo "Capsule base image (busybox $(busybox | head -1 | cut -d' ' -f2))"
echo "kernel: $(uname -sr)"
echo "hostname: $(hostname)"
echo "cpus: $(nproc)"
echo "capsule-init: system ready"
while :; do sleep 3600 & wait $!; done
INIT
chmod +x "$d/sbin/capsule-init"
echo "root:x:0:0:root:/root:/bin/sh" > "$d/etc/passwd"
echo "root:x:0:" > "$d/etc/group"
tar -C "$d" -c . | docker -H "$DOCKER_HOST_ARG" import --change 'CMD ["/sbin/capsule-init"]' - "$REF" >/dev/null
docker -H "$DOCKER_HOST_ARG" push "$REF" >/dev/null
echo "$REF"
