#!/usr/bin/env bash
# Build the local images the Docker-backed tests run in.
#
# Usage: bash .ci/build-images.sh
#
# No container registry is reachable from CI, so nothing can be pulled:
#   - agent-backends-test/busybox:latest  FROM scratch + Debian's static busybox
#   - agent-backends-test/busybox-notmp:latest  the same with nothing writable at all: no /tmp, no /root
#     (kills, timeouts and background processes must need nothing writable in the image)
#   - agent-backends-test/python:bookworm debootstrap'd minbase + python3 + ripgrep
# Each image is built only when `docker image inspect` says it is missing,
# so re-running is cheap and idempotent.
set -euo pipefail
SCRIPT_NAME=build-images
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"


BUSYBOX_IMAGE=agent-backends-test/busybox:latest
NOTMP_IMAGE=agent-backends-test/busybox-notmp:latest
PYTHON_IMAGE=agent-backends-test/python:bookworm
SUITE=bookworm
DEFAULT_MIRROR=http://deb.debian.org/debian
LOCK_FILE=/tmp/agent-backends-build-images.lock

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)


[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and apt-get need it)"

# Everything temporary lives in one dir under /tmp, removed on any exit.
WORK=$(mktemp -d /tmp/agent-backends-images.XXXXXX)
cleanup() {
  # debootstrap mounts proc/sys inside the target and may leave them mounted
  # if it fails; unmount (deepest first) before deleting anything.
  if [[ -d $WORK ]]; then
    awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$WORK"
  fi
}
trap cleanup EXIT

# Serialise concurrent runs so two jobs don't debootstrap the same image.
exec 9>"$LOCK_FILE"
flock 9

# `apt-get update` at most once per run, and only if something is missing.
APT_UPDATED=0
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
      missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  local out="$WORK/apt.log"
  if ((!APT_UPDATED)); then
    apt-get -q update >"$out" 2>&1 || {
      cat "$out" >&2
      die "apt-get update failed"
    }
    APT_UPDATED=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >"$out" 2>&1 || {
    cat "$out" >&2
    die "apt-get install ${missing[*]} failed"
  }
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# Debian mirror already configured for apt (CI may point at a local mirror or
# snapshot). Prefer the deb822 stanza whose Suites lists plain "$SUITE",
# then any URIs: line, then the first `deb` line of sources.list.
apt_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk -v suite="$SUITE" '
      function flush() {
        if (uris != "" && types ~ /(^| )deb( |$)/ && enabled != "no" &&
            (" " suites " ") ~ (" " suite " ")) {
          split(uris, u, " "); print u[1]
          uris = ""; exit # exit runs END; empty uris stops a second print
        }
        uris = ""; suites = ""; types = ""; enabled = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "uris:"    { $1 = ""; uris = $0 }
      tolower($1) == "suites:"  { $1 = ""; suites = $0 }
      tolower($1) == "types:"   { $1 = ""; types = $0 }
      tolower($1) == "enabled:" { enabled = tolower($2) }
      END { flush() }
    ' "$f")
    [[ -n $uri ]] && break
  done
  if [[ -z $uri ]]; then
    uri=$(awk 'tolower($1) == "uris:" { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  fi
  if [[ -z $uri && -f /etc/apt/sources.list ]]; then
    # `deb [opts] URI suite comp...`: skip the optional [...] block.
    uri=$(awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } print $i; exit }' \
      /etc/apt/sources.list)
  fi
  echo "${uri:-$DEFAULT_MIRROR}"
}

build_busybox() {
  # busybox-static, not busybox: the binary must run in an empty (scratch)
  # image with no libc.
  ensure_pkgs busybox-static
  local ctx="$WORK/busybox-ctx"
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
# Exec form: there is no shell in the image until busybox installs one.
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "-m", "1777", "/tmp"]
RUN ["/bin/busybox", "mkdir", "-p", "/root", "/usr/bin", "/usr/sbin", "/sbin"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
EOF
  # Classic builder (no buildx plugin here; FROM scratch needs no pull) and
  # --network none because the daemon has no bridge network.
  DOCKER_BUILDKIT=0 docker build --network none -t "$BUSYBOX_IMAGE" "$ctx" \
    >"$WORK/busybox-build.log" 2>&1 || {
    cat "$WORK/busybox-build.log" >&2
    die "docker build $BUSYBOX_IMAGE failed"
  }
}

build_notmp() {
  ensure_pkgs busybox-static
  local ctx="$WORK/notmp-ctx"
  mkdir -p "$ctx"
  cp /bin/busybox "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
EOF
  DOCKER_BUILDKIT=0 docker build --network none -t "$NOTMP_IMAGE" "$ctx" >"$WORK/notmp-build.log" 2>&1 || {
    cat "$WORK/notmp-build.log" >&2
    die "docker build $NOTMP_IMAGE failed"
  }
}

build_python() {
  ensure_pkgs debootstrap
  local mirror rootfs="$WORK/rootfs"
  mirror=$(apt_mirror)
  log "debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase --include=python3-minimal,ripgrep \
    "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.out" 2>&1 || {
    tail -n 30 "$WORK/debootstrap.out" >&2
    [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
  }
  # Drop package caches/lists: they only bloat the image.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      - "$PYTHON_IMAGE" >/dev/null
  rm -rf --one-file-system "$rootfs"
}


# Build one image if missing; one status line with the elapsed time either way.
ensure_image() {
  local image=$1 builder=$2 start
  start=$(now_us)
  if image_exists "$image"; then
    log "$image: cached ($(elapsed "$start"))"
    return 0
  fi
  "$builder"
  image_exists "$image" || die "$image missing after build"
  log "$image: built ($(elapsed "$start"))"
}

# The daemon must be up; start is a no-op if it already answers.
bash "$SCRIPT_DIR/docker-engine.sh" start ||
  die "docker daemon not available (see /tmp/agent-backends-dockerd.log)"

ensure_image "$BUSYBOX_IMAGE" build_busybox
ensure_image "$NOTMP_IMAGE" build_notmp
ensure_image "$PYTHON_IMAGE" build_python
