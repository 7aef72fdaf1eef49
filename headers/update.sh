#!/usr/bin/env bash
# Refreshes the headers the BPF programs compile against.
#   libbpf headers:  Debian package libbpf-dev 1:1.1.2-0+deb12u1 (libbpf v1.1.2)
#   amd64/vmlinux.h: BTF of Debian's linux-image-6.18.15+deb13-cloud-amd64 6.18.15-1~bpo13+1 (trixie-backports)
#   arm64/vmlinux.h: BTF of Debian's linux-image-6.18.15+deb13-cloud-arm64 6.18.15-1~bpo13+1 (trixie-backports)
#   both dumped with bpftool (Debian bpftool 7.1.0) as C.
# Both architectures come from one kernel version and one method, so the two headers differ only where the
# architectures do (arm64's kprobe registers are struct user_pt_regs, x86's struct pt_regs). vmlinux.h picks one
# by the __TARGET_ARCH_* that bpf2go -target defines. CO-RE relocates field offsets at load time, so each header
# serves every supported kernel of its architecture; layouts that changed across versions are ___flavour
# structs in bpf/compat.h.
#
# How the BTF is taken: Debian ships a vmlinux ELF only in the large -dbg packages, so the image package is
# downloaded (not installed) with apt from the archive this machine's sources name, and its boot image is
# unpacked: x86's bzImage carries a compressed ELF (payload_offset in the setup header), arm64's Image is
# the raw kernel (gzip-compressed on older releases). The kernel's .BTF is then the one run of bytes starting
# with a BTF header (magic 0xeb9f, version 1, header length 24), as long as that header says; bpftool
# parsing all of it is the first check. The second: both kernels booted under QEMU (2026-12-01) exposed a
# /sys/kernel/btf/vmlinux with the very sha256 this script prints for its cut:
#   amd64 03083c407ddb2bbdfec7964ceb6d2037f8b15186a6365075fd8facd522b65d4c
#   arm64 b009e3001b866e8cfb3c613e01692bc73635a65c23a32d1f49fa1e81ffb93f90
set -euo pipefail
cd "$(dirname "$0")"

KERNEL=6.18.15+deb13
SUITE=trixie-backports
ARCHES=(amd64 arm64)

die() { echo "update.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2"; }; }
need bpftool bpftool
need zstd zstd
need xz xz-utils
need lz4 lz4
[ -f /usr/include/bpf/bpf_helpers.h ] || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libbpf-dev; }

TMP=$(mktemp -d) && chmod 755 "$TMP"
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=../.ci/lib/debian.sh
. ../.ci/lib/debian.sh
DEBIAN_CACHE=$TMP/apt DEBIAN_TMP=$TMP

slice() { dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=1M status=none; } # file offset length
u32() { od -An -t u4 -j "$2" -N 4 "$1" | tr -d ' '; } # file offset
has_magic() { [[ $(od -An -t x1 -j "$2" -N $((${#3} / 2)) "$1" | tr -d ' \n') == "$3" ]]; } # file offset hex

decompress() { # file -> stdout
  local f=$1
  if has_magic "$f" 0 1f8b; then gzip -dc "$f"; return; fi
  if has_magic "$f" $((0x202)) 48647253; then # "HdrS": an x86 bzImage; the payload follows the setup sectors
    local setup start payload=$TMP/payload
    setup=$(od -An -t u1 -j $((0x1f1)) -N 1 "$f" | tr -d ' ')
    start=$(((setup + 1) * 512 + $(u32 "$f" $((0x248)))))
    # the payload ends with the 4-byte uncompressed size, which no decompressor expects
    slice "$f" "$start" $(($(u32 "$f" $((0x24c))) - 4)) >"$payload"
    if has_magic "$payload" 0 28b52ffd; then zstd -qdc "$payload"
    elif has_magic "$payload" 0 fd377a585a00; then xz -qdc "$payload"
    elif has_magic "$payload" 0 1f8b; then gzip -dc "$payload"
    elif has_magic "$payload" 0 02214c18; then lz4 -qdc "$payload"
    else die "$f: unknown bzImage payload compression"; fi
    return
  fi
  cat "$f"
}

kernel_btf() { # vmlinuz out
  local img=$TMP/image offs tl so sl
  decompress "$1" >"$img"
  # BTF header, little-endian: magic 9f eb, version 1, flags 0, hdr_len 24, type_off 0
  offs=$(LC_ALL=C grep -obUaP '\x9f\xeb\x01\x00\x18\x00\x00\x00\x00\x00\x00\x00' "$img" | cut -d: -f1)
  [[ $(wc -w <<<"$offs") == 1 ]] || die "$1: expected one BTF header, found at offsets: ${offs:-none}"
  tl=$(u32 "$img" $((offs + 12))) so=$(u32 "$img" $((offs + 16))) sl=$(u32 "$img" $((offs + 20)))
  ((so == tl)) || die "$1: BTF strings do not follow the types (type_len $tl, str_off $so)"
  slice "$img" "$offs" $((24 + so + sl)) >"$2"
}

for h in bpf_helpers.h bpf_helper_defs.h bpf_core_read.h bpf_tracing.h bpf_endian.h; do
	cp /usr/include/bpf/$h bpf/$h
done
for arch in "${ARCHES[@]}"; do
  deb=$(debian_fetch "$SUITE" "$arch" "linux-image-$KERNEL-cloud-$arch" "$TMP/$arch")
  dpkg -x "$deb" "$TMP/$arch/root"
  kernel_btf "$TMP/$arch/root/boot/vmlinuz-$KERNEL-cloud-$arch" "$TMP/$arch.btf"
  mkdir -p "$arch"
  bpftool btf dump file "$TMP/$arch.btf" format c >"$arch/vmlinux.h"
  echo "$arch/vmlinux.h from $(basename "$deb"), BTF sha256 $(sha256sum <"$TMP/$arch.btf" | cut -d' ' -f1)"
done
echo "libbpf $(dpkg-query -W -f='${Version}' libbpf-dev), bpftool $(bpftool version | head -n1)"
