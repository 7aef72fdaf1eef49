#!/usr/bin/env bash
# A private containerd for tests, as root: its root, state, sockets and config under one directory, so
# that it shares nothing with another instance (or another checkout's test) on the machine.
#
#   containerd.sh start DIR [--cri]   start it; prints the address for `ctr -a` (also in DIR/address)
#                                     once it answers. --cri keeps the CRI plugin (pod tests need it;
#                                     CNI plugins from containernetworking-plugins live in /usr/lib/cni)
#   containerd.sh stop DIR            stop it, unmount what it left, remove DIR
#
# Installs containerd and runc with apt when missing. Its log is DIR/containerd.log.
# Why containerd: podman run fails here in setrlimit (no CAP_SYS_RESOURCE); containerd's default spec
# raises no limit.
set -euo pipefail

die() { echo "containerd.sh: $*" >&2; exit 1; }

ensure_tools() {
  command -v containerd >/dev/null && command -v ctr >/dev/null && command -v runc >/dev/null && return
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd runc; } >&2
}

start() { # dir [--cri]
  local dir=$1 cri=${2:-} disabled='"io.containerd.grpc.v1.cri"' i
  [[ $(id -u) == 0 ]] || die "needs root"
  ensure_tools
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ $cri == --cri ]] && disabled=
  # Every path containerd would otherwise take from / (root, state, sockets, the opt plugin) is under DIR.
  cat >"$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [$disabled]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
EOF
  containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
  echo $! >"$dir/containerd.pid"
  echo "$dir/containerd.sock" >"$dir/address"
  for i in $(seq 600); do
    ctr -a "$dir/containerd.sock" version >/dev/null 2>&1 && { cat "$dir/address"; return 0; }
    kill -0 "$(cat "$dir/containerd.pid")" 2>/dev/null || { tail -n 20 "$dir/containerd.log" >&2; die "containerd exited"; }
    sleep 0.1
  done
  tail -n 20 "$dir/containerd.log" >&2
  die "containerd did not answer on $dir/containerd.sock within 60 s"
}

stop() { # dir
  local dir=$1 pid m
  [[ -d $dir ]] || return 0
  dir=$(cd "$dir" && pwd)
  if [[ -f $dir/containerd.pid ]]; then
    pid=$(cat "$dir/containerd.pid")
    if kill "$pid" 2>/dev/null; then
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  # snapshots and shm mounts of containers that outlived a failed test, deepest first
  { findmnt -rn -o TARGET | grep -F "$dir/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$dir"
}

case ${1:-} in
  start) [[ $# -ge 2 ]] || die "usage: containerd.sh start DIR [--cri]"; start "$2" "${3:-}" ;;
  stop) [[ $# -eq 2 ]] || die "usage: containerd.sh stop DIR"; stop "$2" ;;
  *) die "usage: containerd.sh start DIR [--cri] | stop DIR" ;;
esac
