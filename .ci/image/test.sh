#!/usr/bin/env bash
# The image, run for real (make image-test, as root): imported into a private containerd and run with runc,
# as its non-root user with the DaemonSet's capabilities: `twtrace version` must name this build and this
# platform, `twtrace probe` must find a backend for every hook on this kernel. The image's labels, user and
# both platforms' binaries (architecture, file capabilities) are checked in the OCI archive.
# Usage: test.sh IMAGE VERSION OCI-ARCHIVE
set -euo pipefail
image=$1 version=$2 archive=$3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CAPS=(CAP_BPF CAP_PERFMON CAP_SYSLOG CAP_SYS_ADMIN CAP_SYS_PTRACE CAP_DAC_READ_SEARCH) # deploy/kubernetes/daemonset.yaml's
declare -A ELF_MACHINE=([amd64]=3e00 [arm64]=b700) # e_machine, little-endian: EM_X86_64, EM_AARCH64

fail() { echo "image-test: FAIL: $*" >&2; exit 1; }
trap 'echo "image-test: FAIL: line $LINENO: $BASH_COMMAND" >&2' ERR
[[ $(id -u) == 0 ]] || fail "needs root (containerd)"
command -v jq >/dev/null && command -v capsh >/dev/null ||
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq libcap2-bin; } >&2

TMP=$(mktemp -d /tmp/twtrace-image-test.XXXXXX)
cleanup() { "$HERE/../containerd/containerd.sh" stop "$TMP/containerd"; rm -rf "$TMP"; }
trap cleanup EXIT

# --- the archive: one index, both platforms, labels, user, binaries --------------------------------
mkdir "$TMP/oci" && tar -xf "$archive" -C "$TMP/oci"
blob() { echo "$TMP/oci/blobs/${1/://}"; } # digest -> file
list=$(jq -r '.manifests[0].digest' "$TMP/oci/index.json")
for arch in amd64 arm64; do
  manifest=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.os == "linux" and .platform.architecture == $a) | .digest' "$(blob "$list")")
  [[ -n $manifest ]] || fail "no linux/$arch manifest in $archive"
  config=$(blob "$(jq -r .config.digest "$(blob "$manifest")")")
  [[ $(jq -r '.config.Labels["org.opencontainers.image.version"]' "$config") == "$version" ]] || fail "linux/$arch: label org.opencontainers.image.version is not $version"
  [[ $(jq -r '.config.User' "$config") == 65532:65532 ]] || fail "linux/$arch: user is $(jq -r .config.User "$config"), want 65532:65532"
  [[ $(jq -c '.config.Entrypoint' "$config") == '["/twtrace"]' ]] || fail "linux/$arch: entrypoint is $(jq -c .config.Entrypoint "$config"), want [\"/twtrace\"]"
  mkdir -p "$TMP/layer-$arch"
  for layer in $(jq -r '.layers[].digest' "$(blob "$manifest")"); do
    tar --xattrs --xattrs-include='security.*' -xzf "$(blob "$layer")" -C "$TMP/layer-$arch"
  done
  bin=$TMP/layer-$arch/twtrace
  [[ $(od -An -t x1 -j 18 -N 2 "$bin" | tr -d ' ') == "${ELF_MACHINE[$arch]}" ]] || fail "linux/$arch: /twtrace is not an $arch ELF"
  caps=$(getcap "$bin")
  for c in "${CAPS[@]}"; do [[ ${caps,,} == *"${c,,}"* ]] || fail "linux/$arch: /twtrace lacks file capability $c: $caps"; done
  echo "image-test: linux/$arch: version label $version, user 65532:65532, $arch binary with file capabilities"
done

# --- run it in containerd ----------------------------------------------------------------------------
addr=$("$HERE/../containerd/containerd.sh" start "$TMP/containerd")
ctr=(ctr -a "$addr" -n twtrace-image-test)
"${ctr[@]}" images import --platform "linux/$(go env GOARCH 2>/dev/null || dpkg --print-architecture)" "$archive" >/dev/null
# ctr run replaces the image's whole command line (entrypoint included) with the arguments it is given.
run() { # name args... -> the container's stdout; its exit status
  local caps=() c
  for c in "${CAPS[@]}"; do caps+=(--cap-add "$c"); done
  "${ctr[@]}" run --rm "${caps[@]}" "$image:$version" "twtrace-$$-$1" /twtrace "${@:2}"
}

out=$(run version version) || fail "twtrace version exited $?: $out"
echo "$out" | sed 's/^/  /'
platform=linux/$(dpkg --print-architecture)
[[ $(head -n1 <<<"$out") == "twtrace $version" ]] || fail "version printed '$(head -n1 <<<"$out")', want 'twtrace $version'"
[[ $out == *" $platform"* ]] || fail "version does not say $platform"

out=$(run probe probe) || fail "twtrace probe exited $? in the container: $out"
echo "$out" | sed 's/^/  /'
json=$(run probe-json probe -o json) || fail "twtrace probe -o json exited $?"
for hook in state timewait reset; do
  b=$(jq -r --arg h "$hook" '.hooks[] | select(.hook == $h) | .backend // empty' <<<"$json")
  [[ -n $b ]] || fail "probe chose no backend for hook $hook: $json"
done

# Tracing for real, seen from the host: user 65532 holding exactly the five capabilities, from the file's.
id=twtrace-$$-watch
caps=() && for c in "${CAPS[@]}"; do caps+=(--cap-add "$c"); done
"${ctr[@]}" run -d --log-uri "file://$TMP/watch.log" "${caps[@]}" "$image:$version" "$id" /twtrace watch --duration 300s >/dev/null
trap '"${ctr[@]}" task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; cleanup' EXIT
pid=$("${ctr[@]}" task ls | awk -v id="$id" '$1 == id { print $2 }')
[[ -n $pid && -r /proc/$pid/status ]] || fail "no process for task $id"
# until runc's init has exec'd /twtrace, the process holds the spec's capabilities, not the file's
for i in $(seq 300); do [[ $(cat "/proc/$pid/comm" 2>/dev/null) == twtrace ]] && break; sleep 0.1; done
[[ $(cat "/proc/$pid/comm" 2>/dev/null) == twtrace ]] || fail "task $id did not exec /twtrace within 30 s"
uid=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")
eff=$(capsh --decode="$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status")" | sed 's/.*=//' | tr ',' '\n' | sort | paste -sd,)
want=$(printf '%s\n' "${CAPS[@],,}" | sort | paste -sd,)
[[ $uid == 65532 ]] || fail "twtrace watch runs as uid $uid in the container, want 65532"
[[ $eff == "$want" ]] || fail "twtrace watch holds capabilities $eff, want $want"
# ctr's spec sets no_new_privs, as the DaemonSet's allowPrivilegeEscalation: false does; file capabilities
# still apply because the runtime put the added capabilities in the permitted set before exec.
nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status")
[[ $nnp == 1 ]] || fail "twtrace watch runs without no_new_privs ($nnp): this no longer checks the DaemonSet's setting"
# Its "tracing" line comes once the backends are chosen and attached (about a second here; a loaded machine is slower).
for i in $(seq 600); do grep -qs ' INF tracing ' "$TMP/watch.log" && break; sleep 0.1; done
grep -qs ' INF tracing ' "$TMP/watch.log" || fail "twtrace watch did not say it was tracing within 60 s: $(cat "$TMP/watch.log")"
grep -qs '^prog_type' /proc/"$pid"/fdinfo/* || fail "twtrace watch says it is tracing but holds no BPF program"
# SIGKILL: as the container's pid 1, twtrace ignores SIGTERM until its handler is installed, after the trial loads
"${ctr[@]}" task kill -s SIGKILL "$id"
for i in $(seq 100); do [[ $("${ctr[@]}" task ls | awk -v id="$id" '$1 == id { print $3 }') == RUNNING ]] || break; sleep 0.1; done
"${ctr[@]}" task delete "$id" >/dev/null
"${ctr[@]}" container delete "$id"
echo "image-test: twtrace watch ran as uid $uid with $eff (no_new_privs) and held BPF programs"
sed 's/^/  /' "$TMP/watch.log"

# Without the capabilities the binary's file capabilities cannot be granted: exec is refused.
if "${ctr[@]}" run --rm "$image:$version" "twtrace-$$-nocaps" /twtrace version >/dev/null 2>&1; then
  fail "the image ran without the capabilities its binary requires: are the file capabilities gone?"
fi
echo "image-test: passed (containerd $(ctr --version | awk '{print $3}'), runc, user 65532, capabilities ${CAPS[*]})"
