#!/usr/bin/env bash
# A private containerd for tests, as root, with its CRI plugin: its root, state, sockets, config, runc root and CNI
# config all under DIR, the daemon in a network namespace of its own, so it shares nothing with the machine's
# containerd or another test's, and leaves nothing behind once stopped.
#
#   containerd.sh start DIR   start it (DIR is created if missing); prints its socket, DIR/containerd.sock, once the
#                             CRI plugin is up: `ctr -a DIR/containerd.sock`, and the CRI socket of the pod tests
#   containerd.sh stop DIR    kill every task left in any namespace, stop the daemon and the shims, unmount what
#                             they left, remove DIR
#
# Users: internal/containertest (pods through the CRI API, go test) and .ci/image/test.sh (ctr run, make image-test).
# Pods get an eth0 from the bridge and host-local plugins of containernetworking-plugins (bridge twt0, 198.18.0.0/24,
# a benchmarking range no host uses) inside the daemon's namespace. SANDBOX_IMAGE names each pod's sandbox image
# (default twtrace.test/pause:1): no registry is reachable, so import one under that name into the k8s.io namespace
# first (`ctr -n k8s.io images import`), as containertest does. The log is DIR/containerd.log. Installs containerd,
# runc and the CNI plugins with apt when missing.
# Why containerd: podman run fails here in setrlimit (no CAP_SYS_RESOURCE); containerd's default spec raises no limit.
set -euo pipefail

die() { echo "containerd.sh: $*" >&2; exit 1; }

ensure_tools() {
  command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null &&
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] && return
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc containernetworking-plugins; } >&2
}

cri_up() { ctr -a "$1" plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1 *cri *.* ok'; }

start() { # dir
  local dir=$1 sock
  [[ $(id -u) == 0 ]] || die "needs root"
  ensure_tools
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  sock=$dir/containerd.sock
  if [[ -S $sock ]] && cri_up "$sock"; then echo "$sock"; return 0; fi
  mkdir -p "$dir/cni"
  # The CRI plugin needs an eth0 with an address in each pod: loopback alone does not do.
  cat >"$dir/cni/10-bridge.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "twtrace-test", "plugins": [{"type": "bridge", "bridge": "twt0",
  "isGateway": true, "ipMasq": false, "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam",
  "ranges": [[{"subnet": "198.18.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
CNI
  # Every path containerd would otherwise take from / (root, state, sockets, the opt plugin, runc's root) is under DIR.
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$dir/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "${SANDBOX_IMAGE:-twtrace.test/pause:1}"
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
  for _ in $(seq 600); do
    cri_up "$sock" && { echo "$sock"; return 0; }
    kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$dir/containerd.log" >&2
  stop "$dir"
  die "containerd did not come up with its CRI plugin on $sock within 60 s (its log's end above)"
}

stop() { # dir
  local dir=$1 sock pid ns task f m
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  sock=$dir/containerd.sock
  if [[ -S $sock ]]; then
    for ns in $(ctr -a "$sock" namespaces ls -q 2>/dev/null); do
      for task in $(ctr -a "$sock" -n "$ns" tasks ls -q 2>/dev/null); do
        ctr -a "$sock" -n "$ns" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
      done
    done
  fi
  if [[ -f $dir/containerd.pid ]]; then
    pid=$(cat "$dir/containerd.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  # Shims outlive the daemon by design; each one started for DIR left its pid in DIR's state.
  for f in "$dir"/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [[ -f $f ]] && { kill -9 "$(cat "$f")" 2>/dev/null || true; }
  done
  # snapshots and shm mounts of containers that outlived a failed test, deepest first
  { findmnt -rn -o TARGET | grep -F "$dir/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
}

case ${1:-} in
  start) [[ $# -eq 2 ]] || die "usage: containerd.sh start DIR"; start "$2" ;;
  stop) [[ $# -eq 2 ]] || die "usage: containerd.sh stop DIR"; stop "$2" ;;
  *) die "usage: containerd.sh start DIR | stop DIR" ;;
esac
