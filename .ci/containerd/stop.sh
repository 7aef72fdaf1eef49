#!/usr/bin/env bash
# Stops what start.sh DIR started: every container task still running in any namespace, the daemon, and the
# mounts it left under DIR (rootfs and shm mounts of killed shims), then removes DIR.
set -uo pipefail

dir=${1:?usage: stop.sh DIR}
[ -d "$dir" ] || exit 0
dir=$(cd "$dir" && pwd)
sock=$dir/containerd.sock
if [ -S "$sock" ]; then
	for ns in $(ctr --address "$sock" namespaces ls -q 2>/dev/null); do
		for task in $(ctr --address "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
			ctr --address "$sock" -n "$ns" tasks kill -s SIGKILL "$task" >/dev/null 2>&1
		done
	done
fi
if [ -f "$dir/containerd.pid" ]; then
	pid=$(cat "$dir/containerd.pid")
	kill "$pid" 2>/dev/null
	for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
fi
# Shims outlive the daemon by design; each one started for DIR left its pid in DIR's state.
for f in "$dir"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
	[ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
done
grep -F " $dir/" /proc/self/mountinfo | awk '{print $5}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
rm -rf "$dir"
