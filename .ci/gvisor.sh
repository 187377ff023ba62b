#!/usr/bin/env bash
# Make gVisor (runsc) available to the test Docker daemon as runtime "runsc".
#
# Usage: bash .ci/gvisor.sh
#
# Idempotent: installs runsc only if missing, edits /etc/docker/daemon.json
# only if its runsc entry differs, and reloads dockerd (SIGHUP, never a
# restart: other jobs use the daemon) only if the daemon does not already
# report the wanted runsc entry. Containers opt in per container
# (HostConfig.Runtime = "runsc", `docker run --runtime runsc`).
set -euo pipefail
SCRIPT_NAME=gvisor
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"


DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_PID_FILE=/tmp/agent-backends-dockerd.pid
DOCKERD_LOG=/tmp/agent-backends-dockerd.log
LOCK_FILE=/tmp/agent-backends-gvisor.lock
TEST_IMAGE=agent-backends-test/busybox:latest
RELOAD_TIMEOUT=30 # seconds for dockerd to list runsc after SIGHUP
# --network=none: runsc's own netstack cannot be set up on this kernel, and
#   the tests never need a network.
# --file-access=shared: files written through the archive API (host side)
#   and from inside the sandbox stay consistent (no gofer caching).
RUNSC_ARGS='["--network=none", "--file-access=shared"]'
# The system Python (json), not whatever python3 a pyenv shim resolves to.
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3



[[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, $DAEMON_JSON and signalling dockerd need it)"
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer (bash .ci/docker-engine.sh start)"

# Serialise concurrent runs: two writers of daemon.json could lose an edit.
exec 9>"$LOCK_FILE"
flock 9

# Run apt-get quietly; on failure show its output. DPkg::Lock::Timeout waits
# for a concurrent apt (e.g. podman-engine.sh) instead of failing at once.
apt_quiet() {
  local out rc=0
  out=$(mktemp /tmp/agent-backends-apt.XXXXXX)
  apt-get -q -o DPkg::Lock::Timeout=120 "$@" >"$out" 2>&1 || rc=$?
  ((rc == 0)) || cat "$out" >&2
  rm -f "$out"
  return "$rc"
}

# `apt-get update` only when needed: when apt knows no candidate for runsc,
# or when installing from the current lists fails (stale lists, 404s).
ensure_runsc() {
  if command -v runsc >/dev/null 2>&1; then
    log "runsc present: $(command -v runsc)"
    return 0
  fi
  local start
  start=$(now_us)
  local updated=0
  if ! apt-cache policy runsc 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_quiet update || die "apt-get update failed"
    updated=1
  fi
  if ((updated)); then
    apt_quiet install -y --no-install-recommends runsc || die "apt-get install runsc failed"
  elif ! apt_quiet install -y --no-install-recommends runsc 2>/dev/null; then
    log "install from the current package lists failed; apt-get update and retry"
    apt_quiet update || die "apt-get update failed"
    apt_quiet install -y --no-install-recommends runsc || die "apt-get install runsc failed"
  fi
  command -v runsc >/dev/null 2>&1 || die "runsc installed but not on PATH"
  log "installed runsc ($(dpkg-query -W -f='${Version}' runsc), $(elapsed "$start"))"
}

# Merge {"runtimes": {"runsc": ...}} into daemon.json, keeping every other
# key and runtime. Written via a temp file + rename so dockerd never reads a
# half-written file. Prints "changed" or "unchanged".
merge_daemon_json() {
  "$PY" - "$DAEMON_JSON" "$1" "$RUNSC_ARGS" <<'EOF'
import json, os, sys, tempfile
path, runsc, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
want = {"path": runsc, "runtimeArgs": args}
config = {}
if os.path.exists(path):
    with open(path) as f:
        text = f.read()
    if text.strip():
        try:
            config = json.loads(text)
        except ValueError as exc:
            sys.exit(f"{path} is not valid JSON ({exc}); not touching it")
    if not isinstance(config, dict):
        sys.exit(f"{path} is not a JSON object; not touching it")
runtimes = config.setdefault("runtimes", {})
if runtimes.get("runsc") == want:
    print("unchanged")
    sys.exit(0)
runtimes["runsc"] = want
os.makedirs(os.path.dirname(path), exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".daemon.json.")
with os.fdopen(fd, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
os.chmod(tmp, 0o644)
os.replace(tmp, path)
print("changed")
EOF
}

# Whether the running daemon already reports exactly the wanted runsc entry.
daemon_has_runsc() {
  docker info --format '{{json .Runtimes}}' 2>/dev/null |
    "$PY" -c '
import json, sys
runtimes, want_path, want_args = json.load(sys.stdin), sys.argv[1], json.loads(sys.argv[2])
entry = runtimes.get("runsc") or {}
sys.exit(0 if entry.get("path") == want_path and (entry.get("runtimeArgs") or []) == want_args else 1)
' "$1" "$RUNSC_ARGS"
}

# The dockerd started by docker-engine.sh, only if alive and really dockerd.
dockerd_pid() {
  [[ -s $DOCKERD_PID_FILE ]] || return 1
  local pid
  pid=$(<"$DOCKERD_PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
  echo "$pid"
}

register_runsc() {
  local runsc=$1 start result pid
  start=$(now_us)
  result=$(merge_daemon_json "$runsc") || die "could not update $DAEMON_JSON"
  log "$DAEMON_JSON: runsc entry $result"
  if daemon_has_runsc "$runsc"; then
    log "dockerd already lists runsc; no reload needed"
    return 0
  fi
  # dockerd re-reads the runtimes of daemon.json on SIGHUP: a live reload,
  # running containers and other jobs' API calls are not disturbed.
  pid=$(dockerd_pid) ||
    die "no live dockerd in $DOCKERD_PID_FILE to reload; send it SIGHUP yourself (never restart a shared daemon)"
  kill -HUP "$pid"
  log "sent SIGHUP to dockerd (pid $pid)"
  local deadline=$((SECONDS + RELOAD_TIMEOUT))
  until daemon_has_runsc "$runsc"; do
    if ((SECONDS >= deadline)); then
      echo "gvisor: dockerd did not list runsc within ${RELOAD_TIMEOUT}s; its log says:" >&2
      grep -iE 'reload|runtime|daemon.json' "$DOCKERD_LOG" 2>/dev/null | tail -n 10 >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  log "dockerd lists runsc ($(elapsed "$start"))"
}

# A real container under runsc. gVisor's /proc/version is its own fixed
# string ("Linux version 4.4.0 ..."), never the host's, and its dmesg starts
# with "Starting gVisor": either proves the sandbox is gVisor, not runc.
verify() {
  local start out
  start=$(now_us)
  docker image inspect "$TEST_IMAGE" >/dev/null 2>&1 ||
    die "$TEST_IMAGE missing (bash .ci/build-images.sh)"
  out=$(docker run --rm --runtime runsc --network none \
    --label agent-backends.provision-check=1 "$TEST_IMAGE" \
    sh -c 'echo hi; cat /proc/version; dmesg 2>/dev/null | head -n 1' 2>&1) || {
    echo "$out" >&2
    die "docker run --runtime runsc failed"
  }
  local first version
  first=$(sed -n 1p <<<"$out")
  version=$(sed -n 2p <<<"$out")
  [[ $first == hi ]] || {
    echo "$out" >&2
    die "unexpected output from the runsc container"
  }
  if [[ $version == "$(cat /proc/version)" ]] && ! grep -q gVisor <<<"$out"; then
    echo "$out" >&2
    die "the container sees the host kernel: it did not run under gVisor"
  fi
  log "verified ($(elapsed "$start")): $(tr '\n' '|' <<<"$out" | sed 's/|$//; s/|/ | /g')"
}

main() {
  local start runsc
  start=$(now_us)
  ensure_runsc
  runsc=$(command -v runsc)
  register_runsc "$runsc"
  verify
  log "done ($(elapsed "$start")); select it per container with --runtime runsc / HostConfig.Runtime=\"runsc\""
}

main "$@"
