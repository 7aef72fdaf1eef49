#!/usr/bin/env bash
# Starts a private containerd (Debian's package, with its CRI plugin) as root under DIR, for tests that
# need a real container runtime: nothing of the machine's own /etc/containerd, /var/lib/containerd or
# /run/containerd is used, so it can run beside another one and leaves nothing behind once stop.sh ran.
#
#   .ci/containerd/start.sh DIR        # DIR is created if missing; prints the gRPC socket's path
#   .ci/containerd/stop.sh DIR
#
# DIR/containerd.sock is the API (`ctr --address DIR/containerd.sock`, the CRI socket), DIR/containerd.log the
# daemon's log, DIR/cni/ the CNI config directory. The daemon runs in a network namespace of its own, so the
# pods' network (the bridge and host-local plugins of containernetworking-plugins, a bridge twt0 with
# 198.18.0.0/24, a benchmarking range no host uses) touches nothing of the machine's. SANDBOX_IMAGE names the image the CRI plugin
# runs as each pod's sandbox (default registry.k8s.io/pause:3.6); with no registry reachable, import one under
# that name into the k8s.io namespace first (`ctr -n k8s.io images import`). Installs what it uses when missing.
set -euo pipefail

dir=${1:?usage: start.sh DIR}
sandbox_image=${SANDBOX_IMAGE:-registry.k8s.io/pause:3.6}
[ "$(id -u)" = 0 ] || { echo "start.sh: containerd needs root" >&2; exit 1; }

need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -q >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
sock=$dir/containerd.sock
if [ -S "$sock" ] && ctr --address "$sock" version >/dev/null 2>&1; then
	echo "$sock"
	exit 0
fi
mkdir -p "$dir/root" "$dir/state" "$dir/cni" "$dir/opt"
if ! ls "$dir/cni"/*.conflist >/dev/null 2>&1; then
	# The CRI plugin needs an eth0 with an address in each pod, so loopback alone does not do.
	cat >"$dir/cni/10-bridge.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "twtrace-test", "plugins": [{"type": "bridge", "bridge": "twt0",
  "isGateway": true, "ipMasq": false, "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam",
  "ranges": [[{"subnet": "198.18.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
CNI
fi
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$sandbox_image"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    # Without CAP_SYS_RESOURCE (CI containers) the sandbox's default oom_score_adj of -998 cannot be set.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "$dir/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$dir/cni"
TOML

unshare --net -- containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
echo $! >"$dir/containerd.pid"
for _ in $(seq 100); do
	if ctr --address "$sock" plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1 *cri *.* ok'; then
		echo "$sock"
		exit 0
	fi
	kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || break
	sleep 0.1
done
echo "start.sh: containerd did not come up with its CRI plugin; its log ($dir/containerd.log) ends with:" >&2
tail -5 "$dir/containerd.log" >&2
"$(dirname "$0")/stop.sh" "$dir" || true
exit 1
