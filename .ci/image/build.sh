#!/usr/bin/env bash
# Builds twtrace's image for linux/amd64 and linux/arm64 from the release binaries (make image):
# a manifest list IMAGE:VERSION in podman's storage, and the same as an OCI archive in OUT.
# Usage: build.sh IMAGE VERSION DIST-DIR OUT-DIR
set -euo pipefail
image=$1 version=$2 dist=$3 out=$4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ARCHES=(amd64 arm64)
# What the DaemonSet grants; the effective bit makes exec refuse the binary when the bounding set lacks one.
CAPS=cap_bpf,cap_perfmon,cap_syslog,cap_sys_admin,cap_sys_ptrace,cap_dac_read_search+ep

ctx=$out/context
rm -rf "$ctx" && mkdir -p "$ctx"
platforms=()
for arch in "${ARCHES[@]}"; do
  install -m 0755 "$dist/twtrace-linux-$arch" "$ctx/twtrace-linux-$arch"
  setcap "$CAPS" "$ctx/twtrace-linux-$arch"
  platforms+=("linux/$arch")
done
revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)

podman manifest exists "$image:$version" && podman manifest rm "$image:$version" >/dev/null
podman build --platform "$(IFS=,; echo "${platforms[*]}")" --manifest "$image:$version" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" -f "$ROOT/Containerfile" "$ctx"
rm -f "$out/twtrace-$version.oci.tar"
podman manifest push --all "$image:$version" "oci-archive:$out/twtrace-$version.oci.tar:$image:$version"
echo "image $image:$version (${platforms[*]}); OCI archive $out/twtrace-$version.oci.tar"
