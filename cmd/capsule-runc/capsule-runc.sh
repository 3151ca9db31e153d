#!/bin/sh
# capsule-runc: the OCI runtime Capsule registers with its dockerds
# (--add-runtime capsule=/usr/local/bin/capsule-runc). deploy/lib.sh
# installs this script under that name and the Go wrapper
# (cmd/capsule-runc) beside it as capsule-runc-join.
#
# Only `runc create` (or `run`) needs the Go wrapper, which points the
# container at the network namespace the agent made for it. containerd's
# shim calls the runtime five times per server (create, start, kill and
# delete twice): the four others go straight to runc from here, without
# starting a Go program first (about 1.3 ms of CPU less per call). An
# argument that merely equals "create" sends a call to the wrapper, which
# parses the command line exactly and hands anything else to runc as is.
for arg do
	case $arg in
	create | run) exec "${0%/*}/capsule-runc-join" "$@" ;;
	esac
done
if [ -n "${CAPSULE_RUNC:-}" ]; then
	exec "$CAPSULE_RUNC" "$@"
fi
if command -v runc >/dev/null 2>&1; then
	exec runc "$@"
fi
# The wrapper looks in the usual places and reports where it looked.
exec "${0%/*}/capsule-runc-join" "$@"
