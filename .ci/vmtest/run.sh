#!/usr/bin/env bash
# Kernel matrix: boots twtrace's test binaries under every kernel in .ci/vmtest/kernels (QEMU TCG)
# and prints kernel x backend -> passed / failed / not available / not implemented. Run from anywhere: bash .ci/vmtest/run.sh
#
# Environment:
#   VMTEST_KERNELS       subset of kernel names to run, e.g. "5.10 6.12" (default: all in the kernels file)
#   LONG_KERNEL          the one kernel that runs the long tests (default 6.1); others get TWTRACE_SKIP_LONG=1
#   VMTEST_TIMEOUT       seconds per kernel VM (default 900: 6.1, with the one-minute tests, needs about 10 minutes)
#   VMTEST_BINARIES_DIR  use tracer.test, twtrace-cmd.test, snapshot.test and twtrace from this directory instead of building them
set -euo pipefail
shopt -s inherit_errexit # so a failing go build inside $(...) stops the run

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=$HERE/cache
OUT=$HERE/out
BACKENDS=(fentry kprobe tracepoint)
BINARIES=(tracer.test twtrace-cmd.test snapshot.test twtrace)
# sock_diag for TCP (twtrace stat, the timewait view, doctor), and veth (the connect tests' routed
# namespaces): Debian builds them as modules
MODULES=(inet_diag tcp_diag veth)
CACHE_FORMAT=2 # bump when fetch_kernel keeps more of a package
declare -A VCPUS
LONG_KERNEL=${LONG_KERNEL:-6.1}
TIMEOUT=${VMTEST_TIMEOUT:-900}
# Options the guest needs built in (tcp, loopback and ring buffers come with NET/INET/BPF_SYSCALL).
REQUIRED_CONFIG=(CONFIG_NET_NS CONFIG_INET CONFIG_BPF_SYSCALL CONFIG_DEBUG_INFO_BTF CONFIG_SERIAL_8250_CONSOLE
  CONFIG_DEVTMPFS CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP)

log() { printf '==> %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# name suite package-or-glob, one line per kernel; VMTEST_KERNELS filters by name.
kernel_lines() {
  local name suite pkg cpus
  while read -r name suite pkg cpus; do
    [[ -z $name || $name == \#* ]] && continue
    [[ -n ${VMTEST_KERNELS:-} && " $VMTEST_KERNELS " != *" $name "* ]] && continue
    echo "$name $suite $pkg ${cpus:-2}"
  done <"$HERE/kernels"
}

is_static() { ! ldd "$1" >/dev/null 2>&1; }

ensure_tools() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  { command -v busybox >/dev/null && is_static "$(command -v busybox)"; } || missing+=(busybox-static)
  command -v cpio >/dev/null || missing+=(cpio)
  command -v xz >/dev/null || missing+=(xz-utils)
  command -v zstd >/dev/null || missing+=(zstd)
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null || apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
}

# --- kernels ---------------------------------------------------------------

# The Debian archive URI already configured on this machine: the source that serves the machine's own codename.
archive_uri() {
  local codename f
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] && awk -v c="$codename" '$1 == "deb" { sub(/\[[^]]*\]/, ""); if ($3 == c) print $2 }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] && awk -v c="$codename" -v RS= '
      { uri = ""; hit = 0; deb = 0; n = split($0, line, "\n")
        for (i = 1; i <= n; i++) {
          split(line[i], w, /[ \t]+/)
          if (w[1] == "Types:") for (j in w) if (w[j] == "deb") deb = 1
          if (w[1] == "URIs:") uri = w[2]
          if (w[1] == "Suites:") for (j in w) if (w[j] == c) hit = 1
        }
        if (deb && hit && uri != "") print uri }' "$f"
  done
  return 0
}

# apt options for a private index of one suite under cache/apt/<suite>; the system's apt state is untouched.
# The sources file lives in a temporary directory so that no archive host name is ever written under the repo.
apt_opts() {
  local d=$CACHE/apt/$1
  echo -o "Dir::Etc::SourceList=$TMP/$1.list" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o Dir::State::status=/dev/null \
    -o Acquire::Check-Valid-Until=false -o Acquire::Languages=none \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
}

declare -A UPDATED # suites whose index this run already refreshed
apt_update() { # suite
  local d=$CACHE/apt/$1 uri
  [[ -n ${UPDATED[$1]:-} ]] && return 0
  uri=$(archive_uri | head -n1)
  [[ -n $uri ]] || die "no Debian archive URI found in /etc/apt/sources.list{,.d}"
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $1 main" >"$TMP/$1.list"
  # shellcheck disable=SC2046
  apt-get -q $(apt_opts "$1") update </dev/null >&2
  UPDATED[$1]=1
}

# The package name itself, or the newest (version sort) name in the suite matching the glob.
resolve_pkg() { # suite name-or-glob
  local n
  [[ $2 == *[*?[]* ]] || { echo "$2"; return; }
  # shellcheck disable=SC2046
  apt-cache $(apt_opts "$1") pkgnames "${2%%[*?[]*}" | while read -r n; do
    if [[ $n == $2 ]]; then echo "$n"; fi
  done | sort -V | tail -n1
}

# cache/<name>/{vmlinuz,config,spec,modules.list}; re-fetched only when the kernels line changes or
# MODULES names one the cache never looked for (modules.list: a module added needs no CACHE_FORMAT bump).
fetch_kernel() { # name suite package-or-glob
  local dir=$CACHE/$1 tmp pkg
  [[ -s $dir/vmlinuz && $(cat "$dir/spec" 2>/dev/null) == "$2 $3 $CACHE_FORMAT" ]] && modules_looked_for "$dir" && return 0
  apt_update "$2"
  pkg=$(resolve_pkg "$2" "$3")
  [[ -n $pkg ]] || die "$1: no package matches $3 in $2"
  log "$1: downloading $pkg ($2)"
  tmp=$TMP/$1 && mkdir -p "$tmp"
  chown _apt "$tmp" 2>/dev/null || true
  # shellcheck disable=SC2046
  (cd "$tmp" && apt-get -q $(apt_opts "$2") download "$pkg/$2" </dev/null >&2)
  dpkg -x "$tmp"/*.deb "$tmp/root"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$tmp"/root/boot/vmlinuz-* "$dir/vmlinuz"
  cp "$tmp"/root/boot/config-* "$dir/config"
  keep_modules "$tmp/root" "$dir/modules"
  basename "$tmp"/*.deb >"$dir/package"
  echo "$2 $3 $CACHE_FORMAT" >"$dir/spec"
  rm -rf "$tmp"
}

modules_looked_for() { # cache-dir
  local m
  for m in "${MODULES[@]}"; do
    grep -qx "$m" "$1/modules.list" 2>/dev/null || return 1
  done
}

# The initramfs has no module tree: the modules the tests need are kept, decompressed,
# and loaded by init in this order. Where the kernel builds them in, none is found.
keep_modules() { # unpacked-package-root dest-dir
  local m f
  mkdir -p "$2"
  for m in "${MODULES[@]}"; do
    f=$(find "$1/lib/modules" "$1/usr/lib/modules" -name "$m.ko*" 2>/dev/null | head -n 1 || true) # usr/: merged-/usr packages
    [[ -n $f ]] || continue
    case $f in
      *.xz) xz -dc "$f" >"$2/$m.ko" ;;
      *.zst) zstd -qdc "$f" >"$2/$m.ko" ;;
      *) cp "$f" "$2/$m.ko" ;;
    esac
  done
  printf '%s\n' "${MODULES[@]}" >"$(dirname "$2")/modules.list"
}

# modules_cpio packs one kernel's modules as an archive the kernel unpacks after the
# common initramfs (concatenated archives are part of the initramfs format).
modules_cpio() { # name -> path
  local root=$TMP/modules-$1 i=0 m
  rm -rf "$root" && mkdir -p "$root/lib/modules"
  for m in "${MODULES[@]}"; do
    [[ -f $CACHE/$1/modules/$m.ko ]] && cp "$CACHE/$1/modules/$m.ko" "$root/lib/modules/$i-$m.ko"
    i=$((i + 1))
  done
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/modules-$1.cpio.gz"
  echo "$OUT/modules-$1.cpio.gz"
}

check_config() { # name
  local opt
  for opt in "${REQUIRED_CONFIG[@]}"; do
    grep -qx "$opt=y" "$CACHE/$1/config" || log "WARNING: $1: $opt is not built in"
  done
}

# --- guest -----------------------------------------------------------------

build_binaries() { # -> directory holding BINARIES
  if [[ -n ${VMTEST_BINARIES_DIR:-} ]]; then
    echo "$VMTEST_BINARIES_DIR"
    return
  fi
  mkdir -p "$OUT/bin"
  (
    cd "$HERE/../.."
    export CGO_ENABLED=0
    go test -c -o "$OUT/bin/tracer.test" ./tracer
    go test -c -o "$OUT/bin/twtrace-cmd.test" ./cmd/twtrace
    go test -c -o "$OUT/bin/snapshot.test" ./internal/snapshot
    go build -o "$OUT/bin/twtrace" ./cmd/twtrace
  ) >&2
  echo "$OUT/bin"
}

build_initramfs() { # binaries-dir
  local root=$OUT/initramfs b applet
  rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp}
  ln -s bin "$root/sbin"
  cp "$(command -v busybox)" "$root/bin/busybox"
  for applet in $(busybox --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
  for b in "${BINARIES[@]}"; do
    [[ -x $1/$b ]] || die "missing $1/$b"
    is_static "$1/$b" || die "$1/$b is not statically linked"
    cp "$1/$b" "$root/$b"
  done
  install -m 755 "$HERE/init.sh" "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz"
  rm -rf "$root"
}

# Results come from ttyS1 (<name>.status), never from the console log a panic could also write to.
boot_kernel() { # name
  local long=0 rc=0 n
  [[ $1 == "$LONG_KERNEL" ]] && long=1
  rm -f "$OUT/$1.log" "$OUT/$1.status"
  cat "$OUT/initramfs.cpio.gz" "$(modules_cpio "$1")" >"$OUT/initrd-$1.gz"
  # single-threaded TCG: multi-threaded TCG oopsed on 6.12 patching tracepoint call sites across vCPUs.
  # -cx16: guests double-faulted on TCG's cmpxchg16b (SLUB's per-CPU fast path) with corrupted flags;
  # without it SLUB takes its other path.
  timeout "$TIMEOUT" qemu-system-x86_64 -accel tcg,thread=single -cpu "${VMTEST_CPU:-max,-cx16}" -smp "${VCPUS[$1]}" -m 2G \
    -nographic -monitor none -nic none -no-reboot \
    -kernel "$CACHE/$1/vmlinuz" -initrd "$OUT/initrd-$1.gz" \
    -serial "file:$OUT/$1.log" -serial "file:$OUT/$1.status" \
    -append "console=ttyS0 panic=-1 random.trust_cpu=on vmtest.kernel=$1 vmtest.long=$long" </dev/null || rc=$?
  ((rc == 0)) || log "$1: qemu exited with $rc (124 = timeout after ${TIMEOUT}s)"
  n=$(grep -c RESULT "$OUT/$1.status" || true)
  ((n == ${#BACKENDS[@]})) || log "$1: only $n of ${#BACKENDS[@]} results reported (crash or timeout?), see $OUT/$1.log"
  ((n == ${#BACKENDS[@]}))
}

# An emulated kernel sometimes dies under TCG with faults no test can cause (a double fault
# inside SLUB's cmpxchg16b fast path, seen on 6.12): a VM that reported no verdict for some
# backend is booted once more, and said so. A reported failure is never retried.
boot_kernel_retrying() { # name
  boot_kernel "$1" && return
  grep -q "RESULT .* failed" "$OUT/$1.status" 2>/dev/null && return
  cp "$OUT/$1.log" "$OUT/$1.crashed.log"
  log "$1: the VM died before reporting every backend (console kept in $OUT/$1.crashed.log); booting it once more"
  boot_kernel "$1" || true
}

cell() { # kernel backend -> passed | failed | not available | not implemented
  local r
  r=$(tr -d '\r' <"$OUT/$1.status" 2>/dev/null |
    awk -v k="$1" -v b="$2" '$1 == "RESULT" && $2 == k && $3 == b { r = $4 } END { print r }')
  case $r in
    passed) echo passed ;;
    unavailable) echo "not available" ;;
    unimplemented) echo "not implemented" ;;
    *) echo failed ;; # also when the VM died before reporting
  esac
}

matrix() { # kernel names...
  local k b
  printf '%-8s' kernel
  printf ' %-16s' "${BACKENDS[@]}"
  echo
  for k in "$@"; do
    printf '%-8s' "$k"
    for b in "${BACKENDS[@]}"; do printf ' %-16s' "$(cell "$k" "$b")"; done
    echo
  done
  echo "host     $(uname -r): covered by 'make test' (tracepoint backend)"
}

main() {
  local start=$SECONDS t names=() name suite pkg bin failed=0
  mkdir -p "$CACHE" "$OUT"
  TMP=$(mktemp -d) && chmod 755 "$TMP" # apt's sandbox user downloads below it
  trap 'rm -rf "$TMP"' EXIT
  ensure_tools

  t=$SECONDS
  while read -r name suite pkg cpus; do
    fetch_kernel "$name" "$suite" "$pkg"
    check_config "$name"
    names+=("$name")
    VCPUS[$name]=$cpus
  done < <(kernel_lines)
  ((${#names[@]})) || die "no kernels selected"
  log "kernels ready in $((SECONDS - t))s"

  t=$SECONDS
  bin=$(build_binaries)
  build_initramfs "$bin"
  log "binaries and initramfs ready in $((SECONDS - t))s"

  for name in "${names[@]}"; do
    t=$SECONDS
    log "$name: booting $(cat "$CACHE/$name/package")"
    boot_kernel_retrying "$name"
    log "$name: done in $((SECONDS - t))s (console: $OUT/$name.log)"
  done

  matrix "${names[@]}" | tee "$OUT/matrix.txt"
  grep -q failed "$OUT/matrix.txt" && failed=1
  log "total wall time $((SECONDS - start))s"
  return $failed
}

main "$@"
