#!/usr/bin/env bash
# Refreshes the headers the BPF programs compile against.
#   libbpf headers: Debian package libbpf-dev 1:1.1.2-0+deb12u1 (libbpf v1.1.2)
#   vmlinux.h:      bpftool (Debian bpftool 7.1.0) from /sys/kernel/btf/vmlinux of Linux 6.18
# CO-RE relocates field offsets at load time, so one vmlinux.h serves every supported kernel;
# layouts that changed across versions are declared as ___flavour structs in bpf/compat.h.
set -euo pipefail
cd "$(dirname "$0")"

need() { command -v "$1" >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2"; }; }
need bpftool bpftool
[ -f /usr/include/bpf/bpf_helpers.h ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libbpf-dev; }

for h in bpf_helpers.h bpf_helper_defs.h bpf_core_read.h bpf_tracing.h bpf_endian.h; do
	cp /usr/include/bpf/$h bpf/$h
done
bpftool btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h
echo "libbpf $(dpkg-query -W -f='${Version}' libbpf-dev), vmlinux.h from $(uname -r)"
