#!/usr/bin/env bash
# Kernel matrix: boots twtrace's test binaries under every kernel in .ci/vmtest/kernels (QEMU TCG, amd64 and
# arm64) and prints arch x kernel x backend -> passed / failed / not available / not implemented.
# Run from anywhere: bash .ci/vmtest/run.sh
#
# Environment:
#   VMTEST_KERNELS       kernels to run: names ("6.1" is every arch's 6.1) or arch/name ("arm64/6.12"); default all
#   VMTEST_ARCHES        architectures to run, e.g. "arm64" (default: all in the kernels file)
#   LONG_KERNELS         the kernels that run the long tests (default "amd64/6.1 arm64/6.12"); others get TWTRACE_SKIP_LONG=1
#   VMTEST_JOBS          VMs booted at once (default 2: single-threaded TCG keeps one host CPU busy per VM)
#   VMTEST_TIMEOUT       seconds per VM (default 2700; arm64 ones get VMTEST_TIMEOUT_ARM64, default 3000)
#   VMTEST_BACKENDS      backends to run (default "fentry kprobe tracepoint"); the matrix shows only these
#   VMTEST_RUN           a -test.run pattern for the test binaries (no spaces), to repeat one failure
#   VMTEST_BINARIES_DIR  use <arch>/{tracer.test,twtrace-cmd.test,snapshot.test,twtrace} from this directory instead of building them
#   VMTEST_ICOUNT_AMD64, VMTEST_ICOUNT_ARM64
#                        QEMU -icount options (default "shift=0,sleep=off"; empty: the guest follows the host's clock)
set -euo pipefail
shopt -s inherit_errexit # so a failing go build inside $(...) stops the run

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$HERE/cache
OUT=$HERE/out
read -r -a BACKENDS <<<"${VMTEST_BACKENDS:-fentry kprobe tracepoint}"
BINARIES=(tracer.test twtrace-cmd.test snapshot.test twtrace)
# sock_diag for TCP (twtrace stat, the timewait view, doctor), veth (the connect tests' routed namespaces);
# on arm64 also the results channel, a virtio console (qemu's virt machine has one UART): Debian builds some
# of them as modules, with their dependencies.
declare -A MODULES=([amd64]="tcp_diag veth" [arm64]="tcp_diag veth virtio_pci virtio_console")
CACHE_FORMAT=3 # bump when fetch_kernel keeps more of a package
declare -A VCPUS
LONG_KERNELS=${LONG_KERNELS:-amd64/6.1 arm64/6.12}
JOBS=${VMTEST_JOBS:-2}
# Guest time is counted in executed instructions (1 ns each), idle time skipped: a VM the host preempts for
# 20 ms does not see 20 ms pass, so twtrace's 10 ms windows hold however loaded the shared host is (following
# the host's clock, a VM failed a few of those tests at load average 4 to 10; counting, none did). x86 guests
# hang bringing up a second CPU under -icount with QEMU 7.2: the kernels file gives them one vCPU.
declare -A ICOUNT=([amd64]=${VMTEST_ICOUNT_AMD64-shift=0,sleep=off} [arm64]=${VMTEST_ICOUNT_ARM64-shift=0,sleep=off})
declare -A TIMEOUT=([amd64]=${VMTEST_TIMEOUT:-2700} [arm64]=${VMTEST_TIMEOUT_ARM64:-3000}) # arm64 6.1 took 1,637 s, load 12; amd64 6.12 1,600 s (2026-12-02)
# Options the guest needs built in (tcp, loopback and ring buffers come with NET/INET/BPF_SYSCALL).
REQUIRED_CONFIG=(CONFIG_NET_NS CONFIG_INET CONFIG_BPF_SYSCALL CONFIG_DEBUG_INFO_BTF CONFIG_DEVTMPFS
  CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP)
declare -A CONSOLE_CONFIG=([amd64]=CONFIG_SERIAL_8250_CONSOLE [arm64]=CONFIG_SERIAL_AMBA_PL011_CONSOLE)

log() { printf '==> %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# "arch name suite package-or-glob vcpus", one line per selected kernel.
kernel_lines() {
  local arch name suite pkg cpus
  while read -r arch name suite pkg cpus; do
    [[ -z $arch || $arch == \#* ]] && continue
    [[ -n ${VMTEST_ARCHES:-} && " $VMTEST_ARCHES " != *" $arch "* ]] && continue
    [[ -n ${VMTEST_KERNELS:-} && " $VMTEST_KERNELS " != *" $name "* && " $VMTEST_KERNELS " != *" $arch/$name "* ]] && continue
    echo "$arch $name $suite $pkg ${cpus:-2}"
  done <"$HERE/kernels"
}

is_static() { ! LC_ALL=C readelf -l "$1" | grep -q 'program interpreter'; }

ensure_tools() { # arches...
  local missing=() a
  for a in "$@"; do
    case $a in
      amd64) command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86) ;;
      arm64) command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm) ;;
      *) die "unknown arch $a" ;;
    esac
  done
  command -v cpio >/dev/null || missing+=(cpio)
  command -v xz >/dev/null || missing+=(xz-utils)
  command -v zstd >/dev/null || missing+=(zstd)
  command -v modinfo >/dev/null || missing+=(kmod)
  command -v readelf >/dev/null || missing+=(binutils)
  command -v flock >/dev/null || missing+=(util-linux)
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# --- kernels and busybox ---------------------------------------------------

# shellcheck source=../lib/debian.sh
. "$HERE/../lib/debian.sh"

# cache/<arch>/<name>/{vmlinuz,config,spec,package,modules/,modules.list}; re-fetched only when the kernels
# line changes or MODULES names one the cache never looked for (a module added needs no CACHE_FORMAT bump).
fetch_kernel() { # arch name suite package-or-glob
  local dir=$CACHE/$1/$2 tmp=$TMP/$1-$2 deb
  [[ -s $dir/vmlinuz && $(cat "$dir/spec" 2>/dev/null) == "$3 $4 $CACHE_FORMAT" ]] &&
    modules_looked_for "$dir" "${MODULES[$1]}" && return 0
  log "$1/$2: downloading $4 ($3)"
  deb=$(debian_fetch "$3" "$1" "$4" "$tmp")
  dpkg -x "$deb" "$tmp/root"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$tmp"/root/boot/vmlinuz-* "$dir/vmlinuz"
  cp "$tmp"/root/boot/config-* "$dir/config"
  keep_modules "$tmp/root" "$dir/modules" "${MODULES[$1]}"
  basename "$deb" >"$dir/package"
  echo "$3 $4 $CACHE_FORMAT" >"$dir/spec"
  rm -rf "$tmp"
}

# The initramfs has no module tree: the modules the tests need, and the modules they depend on (modinfo),
# are kept decompressed as NN-name.ko, NN being the load order init follows. Built-in ones are not found.
keep_modules() { # unpacked-package-root dest-dir "module..."
  local root=$1 dest=$2 m n=0
  local -A kept=()
  mkdir -p "$dest"
  keep() {
    local f d tmp
    [[ -n ${kept[$1]:-} ]] && return 0
    kept[$1]=1
    f=$(find "$root/lib/modules" "$root/usr/lib/modules" -name "$1.ko*" 2>/dev/null | head -n 1 || true) # usr/: merged-/usr packages
    [[ -n $f ]] || return 0
    tmp=$dest/.$1.ko
    case $f in
      *.xz) xz -dc "$f" >"$tmp" ;;
      *.zst) zstd -qdc "$f" >"$tmp" ;;
      *) cp "$f" "$tmp" ;;
    esac
    for d in $(modinfo -F depends "$tmp" | tr ',' ' '); do keep "$d"; done
    mv "$tmp" "$dest/$(printf '%02d' "$n")-$1.ko"
    n=$((n + 1))
  }
  for m in $3; do keep "$m"; done
  printf '%s\n' $3 >"$(dirname "$dest")/modules.list"
}

modules_looked_for() { # cache-dir "module..."
  local m
  for m in $2; do
    grep -qx "$m" "$1/modules.list" 2>/dev/null || return 1
  done
}

# Debian's static busybox for the guest's architecture, from the machine's own suite.
fetch_busybox() { # arch
  local dir=$CACHE/$1/busybox codename deb
  [[ -x $dir/busybox ]] && return 0
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  deb=$(debian_fetch "$codename" "$1" busybox-static "$TMP/busybox-$1")
  dpkg -x "$deb" "$TMP/busybox-$1/root"
  mkdir -p "$dir"
  cp "$TMP/busybox-$1/root/bin/busybox" "$dir/busybox"
  is_static "$dir/busybox" || die "$dir/busybox is not statically linked"
}

check_config() { # id
  local opt
  for opt in "${REQUIRED_CONFIG[@]}" "${CONSOLE_CONFIG[${1%%/*}]}"; do
    grep -qx "$opt=y" "$CACHE/$1/config" || log "WARNING: $1: $opt is not built in"
  done
}

# --- guest -----------------------------------------------------------------

build_binaries() { # arch -> directory holding BINARIES
  if [[ -n ${VMTEST_BINARIES_DIR:-} ]]; then
    echo "$VMTEST_BINARIES_DIR/$1"
    return
  fi
  mkdir -p "$OUT/bin/$1"
  (
    cd "$HERE/../.."
    export CGO_ENABLED=0 GOARCH=$1
    go test -c -o "$OUT/bin/$1/tracer.test" ./tracer
    go test -c -o "$OUT/bin/$1/twtrace-cmd.test" ./cmd/twtrace
    go test -c -o "$OUT/bin/$1/snapshot.test" ./internal/snapshot
    go build -o "$OUT/bin/$1/twtrace" ./cmd/twtrace
  ) >&2
  echo "$OUT/bin/$1"
}

# One initramfs per architecture; busybox installs its applets at boot (it cannot run here to list them).
build_initramfs() { # arch binaries-dir
  local root=$OUT/initramfs-$1 b
  rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp}
  ln -s bin "$root/sbin"
  cp "$CACHE/$1/busybox/busybox" "$root/bin/busybox"
  ln -s busybox "$root/bin/sh"
  for b in "${BINARIES[@]}"; do
    [[ -x $2/$b ]] || die "missing $2/$b"
    is_static "$2/$b" || die "$2/$b is not statically linked"
    cp "$2/$b" "$root/$b"
  done
  install -m 755 "$HERE/init.sh" "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs-$1.cpio.gz"
  rm -rf "$root"
}

# modules_cpio packs one kernel's modules as an archive the kernel unpacks after the
# common initramfs (concatenated archives are part of the initramfs format).
modules_cpio() { # id -> path
  local root=$TMP/modules-${1//\//-} out=$OUT/modules-${1//\//-}.cpio.gz
  rm -rf "$root" && mkdir -p "$root/lib/modules"
  cp "$CACHE/$1"/modules/*.ko "$root/lib/modules/" 2>/dev/null || true
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  echo "$out"
}

# The machine per architecture. Results come from a second channel (<id>.status), never from the console
# log a panic could also write to: the second UART on x86, a virtio console on arm64 (virt has one UART).
declare -A CONSOLE=([amd64]=ttyS0 [arm64]=ttyAMA0) RESULT_DEV=([amd64]=/dev/ttyS1 [arm64]=/dev/hvc0)
qemu_machine() { # arch console-log status-file -> arguments, one per line
  case $1 in
    amd64)
      # single-threaded TCG: multi-threaded TCG oopsed on 6.12 patching tracepoint call sites across vCPUs.
      # -cx16: guests double-faulted on TCG's cmpxchg16b (SLUB's per-CPU fast path) with corrupted flags;
      # without it SLUB takes its other path.
      printf '%s\n' qemu-system-x86_64 -accel tcg,thread=single -cpu "${VMTEST_CPU:-max,-cx16}" \
        -serial "file:$2" -serial "file:$3" ;;
    arm64)
      # single-threaded TCG as on x86. neoverse-n1 (Graviton2's core) boots faster under TCG than "max",
      # whose SVE and pointer authentication are costly to emulate.
      printf '%s\n' qemu-system-aarch64 -M virt -accel tcg,thread=single -cpu "${VMTEST_CPU_ARM64:-neoverse-n1}" \
        -serial "file:$2" \
        -device virtio-serial-pci -chardev "file,id=results,path=$3" -device virtconsole,chardev=results ;;
  esac
}

boot_kernel() { # id (arch/name)
  local id=$1 arch=${1%%/*} file=${1//\//-} long=0 rc=0 n machine=()
  [[ " $LONG_KERNELS " == *" $id "* ]] && long=1
  rm -f "$OUT/$file.log" "$OUT/$file.status"
  cat "$OUT/initramfs-$arch.cpio.gz" "$(modules_cpio "$id")" >"$OUT/initrd-$file.gz"
  mapfile -t machine < <(qemu_machine "$arch" "$OUT/$file.log" "$OUT/$file.status")
  [[ -n ${ICOUNT[$arch]} ]] && machine+=(-icount "${ICOUNT[$arch]}")
  timeout "${TIMEOUT[$arch]}" "${machine[@]}" -smp "${VCPUS[$id]}" -m 2G \
    -nographic -monitor none -nic none -no-reboot \
    -kernel "$CACHE/$id/vmlinuz" -initrd "$OUT/initrd-$file.gz" \
    -append "console=${CONSOLE[$arch]} panic=-1 random.trust_cpu=on vmtest.kernel=$id vmtest.long=$long vmtest.result=${RESULT_DEV[$arch]} vmtest.backends=$(IFS=,; echo "${BACKENDS[*]}") vmtest.run=${VMTEST_RUN:-}" \
    </dev/null || rc=$?
  ((rc == 0)) || log "$id: qemu exited with $rc (124 = timeout after ${TIMEOUT[$arch]}s)"
  n=$(grep -c RESULT "$OUT/$file.status" || true)
  ((n == ${#BACKENDS[@]})) || log "$id: only $n of ${#BACKENDS[@]} results reported (crash or timeout?), see $OUT/$file.log"
  ((n == ${#BACKENDS[@]}))
}

# An emulated kernel sometimes dies under TCG with faults no test can cause (a double fault
# inside SLUB's cmpxchg16b fast path, seen on 6.12): a VM that reported no verdict for some
# backend is booted once more, and said so. A reported failure is not booted again (init.sh
# runs a failed test once more itself, and says so).
boot_kernel_retrying() { # id
  local file=${1//\//-}
  boot_kernel "$1" && return
  grep -q "RESULT .* failed" "$OUT/$file.status" 2>/dev/null && return
  cp "$OUT/$file.log" "$OUT/$file.crashed.log"
  log "$1: the VM died before reporting every backend (console kept in $OUT/$file.crashed.log); booting it once more"
  boot_kernel "$1" || true
}

run_vm() { # id
  local t=$SECONDS
  log "$1: booting $(cat "$CACHE/$1/package")"
  boot_kernel_retrying "$1"
  log "$1: done in $((SECONDS - t))s (console: $OUT/${1//\//-}.log)"
  echo "$1 $((SECONDS - t))" >>"$OUT/times.txt"
}

cell() { # id backend -> passed | failed | not available | not implemented
  local r
  r=$(tr -d '\r' <"$OUT/${1//\//-}.status" 2>/dev/null |
    awk -v k="$1" -v b="$2" '$1 == "RESULT" && $2 == k && $3 == b { r = $4 } END { print r }')
  case $r in
    passed) echo passed ;;
    retried) echo "passed (retried)" ;;
    unavailable) echo "not available" ;;
    unimplemented) echo "not implemented" ;;
    *) echo failed ;; # also when the VM died before reporting
  esac
}

matrix() { # ids...
  local id b
  printf '%-6s %-7s' arch kernel
  printf ' %-16s' "${BACKENDS[@]}"
  printf ' %s\n' seconds
  for id in "$@"; do
    printf '%-6s %-7s' "${id%%/*}" "${id#*/}"
    for b in "${BACKENDS[@]}"; do printf ' %-16s' "$(cell "$id" "$b")"; done
    printf ' %s\n' "$(awk -v k="$id" '$1 == k { s = $2 } END { print s }' "$OUT/times.txt")"
  done
  echo "host   $(uname -r): covered by 'make test' (tracepoint backend)"
}

# The failed tests' own lines from a VM's console, so that a red CI log says what failed
# without the console file: each "--- FAIL" with the test output above it, and any panic.
failures() { # id
  local log=$OUT/${1//\//-}.log
  grep -qE '^(--- FAIL|panic:|FAIL)' "$log" 2>/dev/null || return 0
  log "$1: failures (whole console: $log)"
  tr -d '\r' <"$log" | awk '
    /^=== vmtest:/ { bin = $0 }
    /^=== RUN/ { n = 0 }
    { ctx[n++ % 40] = $0 }
    /^--- FAIL|^panic:|^FAIL\t/ {
      print bin
      for (i = (n > 40 ? n - 40 : 0); i < n; i++) print "    " ctx[i % 40]
      n = 0
    }' | head -n 400 >&2
}

main() {
  local start=$SECONDS t ids=() order=() arches=() arch name suite pkg cpus bin failed=0 id
  mkdir -p "$CACHE" "$OUT"
  TMP=$(mktemp -d) && chmod 755 "$TMP" # apt's sandbox user downloads below it
  trap 'rm -rf "$TMP"' EXIT
  DEBIAN_CACHE=$CACHE/apt DEBIAN_TMP=$TMP
  [[ -f $OUT/times.txt ]] && mv "$OUT/times.txt" "$OUT/times.previous.txt"

  while read -r arch name suite pkg cpus; do
    ids+=("$arch/$name")
    VCPUS[$arch/$name]=$cpus
    [[ " ${arches[*]} " == *" $arch "* ]] || arches+=("$arch")
  done < <(kernel_lines)
  ((${#ids[@]})) || die "no kernels selected"
  ensure_tools "${arches[@]}"

  t=$SECONDS
  for id in "${ids[@]}"; do
    read -r arch name suite pkg cpus < <(kernel_lines | awk -v a="${id%%/*}" -v n="${id#*/}" '$1 == a && $2 == n')
    fetch_kernel "$arch" "$name" "$suite" "$pkg"
    check_config "$id"
  done
  for arch in "${arches[@]}"; do fetch_busybox "$arch"; done
  log "kernels ready in $((SECONDS - t))s"

  t=$SECONDS
  for arch in "${arches[@]}"; do
    bin=$(build_binaries "$arch")
    build_initramfs "$arch" "$bin"
  done
  log "binaries and initramfs ready in $((SECONDS - t))s"

  # The slowest VMs first, by the previous run's times, or on a fresh clone by times.reference (a
  # full run on a quiet CI machine; never measured counts as slowest), so that the last to start
  # are short and the jobs end close together.
  times=$OUT/times.previous.txt
  [[ -s $times ]] || times=$HERE/times.reference
  mapfile -t order < <(for id in "${ids[@]}"; do
    echo "$(awk -v k="$id" '$1 == k { s = $2 } END { print (s == "" ? 999999 : s) }' "$times") $id"
  done | sort -rn -s -k1,1 | cut -d' ' -f2)
  log "booting ${#order[@]} VMs, $JOBS at a time: ${order[*]}"
  for id in "${order[@]}"; do
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || true; done
    run_vm "$id" &
  done
  wait

  matrix "${ids[@]}" | tee "$OUT/matrix.txt"
  grep -q failed "$OUT/matrix.txt" && failed=1
  for id in "${ids[@]}"; do failures "$id"; done
  # tests that failed and then passed alone: named in the log, every time, so that a flaky test is seen and fixed
  cat "$OUT"/*.status 2>/dev/null | tr -d '\r' | grep '^FLAKY' | sed 's/^FLAKY/==> passed only when run again:/' >&2 || true
  log "total wall time $((SECONDS - start))s"
  return $failed
}

main "$@"
