# Fetching Debian packages of any suite and architecture without installing them, from the archive
# this machine's own apt sources name (never a host name written in the repo). Source it, then:
#   DEBIAN_CACHE=dir  private apt indices, one per suite and architecture (reused across runs)
#   DEBIAN_TMP=dir    a temporary directory for the sources files (outside the repo), mode 755
#   debian_fetch SUITE ARCH PACKAGE-OR-GLOB DEST   downloads the .deb into DEST, prints its path
# shellcheck shell=bash

# The Debian archive URI already configured here: the source that serves the machine's own codename.
debian_archive_uri() {
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

# apt options for the private index of one suite and architecture; the system's apt state is untouched.
_debian_apt_opts() { # suite arch
  local d=$DEBIAN_CACHE/$1.$2
  echo -o "Dir::Etc::SourceList=$DEBIAN_TMP/$1.$2.list" -o Dir::Etc::SourceParts=/dev/null \
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o Dir::State::status=/dev/null \
    -o "APT::Architecture=$2" -o "APT::Architectures=$2" \
    -o Acquire::Check-Valid-Until=false -o Acquire::Languages=none \
    -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
}

# Refreshes an index once per run (DEBIAN_TMP lives as long as the run).
_debian_update() { # suite arch
  local d=$DEBIAN_CACHE/$1.$2 uri
  [[ -e $DEBIAN_TMP/$1.$2.updated ]] && return 0
  uri=$(debian_archive_uri | head -n1)
  [[ -n $uri ]] || { echo "no Debian archive URI found in /etc/apt/sources.list{,.d}" >&2; return 1; }
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  echo "deb [arch=$2 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $1 main" >"$DEBIAN_TMP/$1.$2.list"
  # shellcheck disable=SC2046
  apt-get -q $(_debian_apt_opts "$1" "$2") update </dev/null >&2 || return 1
  touch "$DEBIAN_TMP/$1.$2.updated"
}

# The package name itself, or the newest (version sort) name in the suite matching the glob.
_debian_resolve() { # suite arch name-or-glob
  local n
  [[ $3 == *[*?[]* ]] || { echo "$3"; return; }
  # shellcheck disable=SC2046
  apt-cache $(_debian_apt_opts "$1" "$2") pkgnames "${3%%[*?[]*}" | while read -r n; do
    if [[ $n == $3 ]]; then echo "$n"; fi
  done | sort -V | tail -n1
}

debian_fetch() { # suite arch package-or-glob dest-dir -> path of the .deb
  local pkg lock
  [[ -n ${DEBIAN_CACHE:-} && -n ${DEBIAN_TMP:-} ]] || { echo "debian_fetch: set DEBIAN_CACHE and DEBIAN_TMP" >&2; return 1; }
  mkdir -p "$DEBIAN_CACHE" "$4"
  # The cache may be shared by several checkouts of this repo: one apt at a time per index.
  lock=$DEBIAN_CACHE/$1.$2.lock
  (
    flock 9
    _debian_update "$1" "$2" || exit 1
    pkg=$(_debian_resolve "$1" "$2" "$3")
    [[ -n $pkg ]] || { echo "no package matches $3 in $1 ($2)" >&2; exit 1; }
    chown _apt "$4" 2>/dev/null || true # apt's sandbox user writes the download
    # shellcheck disable=SC2046
    (cd "$4" && apt-get -q $(_debian_apt_opts "$1" "$2") download "$pkg/$1" </dev/null >&2) || exit 1
    ls -t "$4"/"${pkg}"_*.deb | head -n1
  ) 9>"$lock"
}
