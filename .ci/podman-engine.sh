#!/usr/bin/env bash
# Start/stop a Podman service speaking the Docker API for the test suite.
#
# Usage: bash .ci/podman-engine.sh start|stop|status
#
# `podman system service` serves the Docker Engine API on $SOCK, so the
# library's DockerSandbox(docker_url="unix://$SOCK") runs against Podman.
# start is idempotent: it installs podman if missing, writes the engine
# config, launches the service unless it already answers, and loads the
# test images from Docker into Podman's storage when they are missing there
# (or differ from Docker's). Only the service started by this script (pid in
# $PID_FILE) is ever stopped. The Docker daemon is never touched beyond
# `docker save`.
set -euo pipefail
SCRIPT_NAME=podman-engine
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"


SOCK=/tmp/agent-backends-podman.sock
URL=unix://$SOCK
LOG_FILE=/tmp/agent-backends-podman.log
PID_FILE=/tmp/agent-backends-podman.pid
LOCK_FILE=/tmp/agent-backends-podman.lock
CONTAINERS_CONF=/etc/containers/containers.conf
IMAGES=(agent-backends-test/busybox:latest agent-backends-test/busybox-notmp:latest agent-backends-test/python:bookworm)
START_TIMEOUT=30 # seconds to wait for the socket to answer /_ping
STOP_TIMEOUT=30  # seconds to wait for the service to exit after SIGTERM
# The system Python (tomllib), not whatever python3 a pyenv shim resolves to.
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3



need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (apt-get, $CONTAINERS_CONF and rootful podman need it)"
}

# Run apt-get quietly; on failure show its output. DPkg::Lock::Timeout waits
# for a concurrent apt (e.g. gvisor.sh) instead of failing at once.
apt_quiet() {
  local out rc=0
  out=$(mktemp /tmp/agent-backends-apt.XXXXXX)
  apt-get -q -o DPkg::Lock::Timeout=120 "$@" >"$out" 2>&1 || rc=$?
  ((rc == 0)) || cat "$out" >&2
  rm -f "$out"
  return "$rc"
}

# Install podman only when missing; `apt-get update` only when apt knows no
# candidate or installing from the current lists fails (stale lists).
ensure_podman() {
  command -v podman >/dev/null 2>&1 && return 0
  local start updated=0
  start=$(now_us)
  log "podman not found; installing it"
  if ! apt-cache policy podman 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt_quiet update || die "apt-get update failed"
    updated=1
  fi
  if ((updated)); then
    apt_quiet install -y podman || die "apt-get install podman failed"
  elif ! apt_quiet install -y podman 2>/dev/null; then
    log "install from the current package lists failed; apt-get update and retry"
    apt_quiet update || die "apt-get update failed"
    apt_quiet install -y podman || die "apt-get install podman failed"
  fi
  command -v podman >/dev/null 2>&1 || die "podman installed but not on PATH"
  log "installed podman $(dpkg-query -W -f='${Version}' podman) ($(elapsed "$start"))"
}

# Set our keys in containers.conf, keeping everything else in the file:
#   engine.cgroup_manager = cgroupfs  no systemd here to manage cgroups
#   engine.events_logger = file       journald is absent too
#   engine.runtime = runc             crun fails on this host's hybrid cgroups
#   containers.default_ulimits        podman otherwise raises the limits to
#     the host's maximum, which needs CAP_SYS_RESOURCE that this host's root
#     lacks: every container would fail to start
# A small line editor (no TOML writer in the stdlib): replace the key's line
# (and the continuation lines of a multi-line array) inside its table, else
# add it under the table header, else append the table; then check the result
# with tomllib. Written via temp file + rename. Prints changed/unchanged.
write_config() {
  "$PY" - "$CONTAINERS_CONF" <<'EOF'
import json, os, re, sys, tempfile, tomllib

path = sys.argv[1]
want = {
    "engine": {"cgroup_manager": "cgroupfs", "events_logger": "file", "runtime": "runc"},
    "containers": {"default_ulimits": ["nofile=20000:20000", "nproc=32768:32768"]},
}
text = ""
if os.path.exists(path):
    with open(path) as f:
        text = f.read()
try:
    current = tomllib.loads(text)
except tomllib.TOMLDecodeError as exc:
    sys.exit(f"{path} is not valid TOML ({exc}); not touching it")

def satisfied(config):
    return all(config.get(t, {}).get(k) == v for t, kv in want.items() for k, v in kv.items())

if satisfied(current):
    print("unchanged")
    sys.exit(0)

def depth(line):
    """Net [ minus ] outside strings and comments."""
    d, quote = 0, None
    for ch in line:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch == "[":
            d += 1
        elif ch == "]":
            d -= 1
    return d

lines = text.splitlines()
header = re.compile(r"^\s*\[")
for table, kv in want.items():
    for key, value in kv.items():
        entry = f"{key} = {json.dumps(value)}"
        start = next((i for i, l in enumerate(lines) if re.match(rf"^\s*\[\s*{table}\s*\]\s*(#.*)?$", l)), None)
        if start is None:
            lines += ["", f"[{table}]", entry]
            continue
        end = next((i for i in range(start + 1, len(lines)) if header.match(lines[i])), len(lines))
        at = next((i for i in range(start + 1, end) if re.match(rf"^\s*{key}\s*=", lines[i])), None)
        if at is None:
            lines.insert(start + 1, entry)
            continue
        last, d = at, depth(lines[at].split("=", 1)[1])
        while d > 0 and last + 1 < len(lines):
            last += 1
            d += depth(lines[last])
        lines[at : last + 1] = [entry]

result = "\n".join(lines).lstrip("\n") + "\n"
if not satisfied(tomllib.loads(result)):
    sys.exit(f"could not merge our settings into {path}")
os.makedirs(os.path.dirname(path), exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".containers.conf.")
with os.fdopen(fd, "w") as f:
    f.write(result)
os.chmod(tmp, 0o644)
os.replace(tmp, path)
print("changed")
EOF
}

engine_answers() { [[ $(curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null) == OK ]]; }

# Pid from our pidfile, only if that process is still alive and really is
# podman (guards against pid reuse after a crash).
our_pid() {
  [[ -s $PID_FILE ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == podman ]] || return 1
  echo "$pid"
}

wait_for_engine() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    engine_answers && return 0
    # Fail fast if the service died instead of waiting out the timeout.
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  engine_answers
}

# From /_ping's headers: Podman's /version takes ~0.5 s (it runs conmon and
# runc and looks up their packages), /_ping a millisecond.
engine_version() {
  curl -s -D - -o /dev/null --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null |
    awk -F': *' 'tolower($1) == "libpod-api-version" { l = $2 } tolower($1) == "api-version" { a = $2 }
      END { gsub(/\r/, "", l); gsub(/\r/, "", a); print "Podman " (l ? l : "?") ", API " (a ? a : "?") }'
}

launch_service() {
  local pid start
  start=$(now_us)
  if engine_answers; then
    log "service already answers on $SOCK ($(engine_version))"
    return 0
  fi
  if pid=$(our_pid); then
    # A previous start is still booting (or hung); wait on it rather than
    # launching a second service on the same socket.
    log "podman service (pid $pid) already launched; waiting for it"
  else
    rm -f "$PID_FILE"
    # Nobody answers on it: a leftover socket file would make bind() fail.
    rm -f "$SOCK"
    # setsid+nohup: detach from the CI job's session so the service survives
    # this script and is not hit by the job's SIGHUP/SIGINT. 9>&- keeps the
    # lock fd out of the service, else it would hold the lock forever.
    # --time=0: never exit for idleness.
    setsid nohup podman system service --time=0 "$URL" \
      </dev/null >"$LOG_FILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "launched podman system service (pid $pid, log $LOG_FILE)"
  fi
  if wait_for_engine "$pid"; then
    log "ready on $SOCK after $(elapsed "$start") ($(engine_version))"
    return 0
  fi
  echo "podman-engine: the service did not answer within ${START_TIMEOUT}s; last log lines:" >&2
  tail -n 40 "$LOG_FILE" >&2 || true
  # Don't leave a half-started service behind for the next attempt to trip on.
  kill "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  exit 1
}

# Podman shares no storage with Docker: copy each test image over, with the
# same name, when Podman lacks it or holds an older build (image ids are the
# config digests, equal in both engines for the same image).
sync_images() {
  local image docker_id podman_id start
  for image in "${IMAGES[@]}"; do
    start=$(now_us)
    docker_id=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null) ||
      die "$image is missing in Docker (bash .ci/build-images.sh)"
    docker_id=${docker_id#sha256:}
    podman_id=""
    if podman image exists "$image"; then
      podman_id=$(podman image inspect --format '{{.Id}}' "$image")
      if [[ $podman_id == "$docker_id" ]]; then
        log "$image: present (${docker_id:0:12}, $(elapsed "$start"))"
        continue
      fi
    fi
    docker save "$image" | podman load -q >/dev/null ||
      die "docker save $image | podman load failed"
    # podman load names it after the archive's tag; make sure the exact name
    # resolves (and points at the new image) either way.
    podman tag "$docker_id" "$image"
    log "$image: loaded${podman_id:+ (replacing ${podman_id:0:12})} (${docker_id:0:12}, $(elapsed "$start"))"
  done
}

cmd_start() {
  need_root
  local start result
  start=$(now_us)
  ensure_podman
  result=$(write_config) || die "could not write $CONTAINERS_CONF"
  log "$CONTAINERS_CONF: $result"
  if [[ $result == changed ]] && engine_answers; then
    log "note: a running service keeps its old config until restarted (stop, then start)"
  fi
  launch_service
  sync_images
  log "started in $(elapsed "$start"): DockerSandbox(..., docker_url=\"$URL\")"
}

cmd_stop() {
  need_root
  local pid
  if ! pid=$(our_pid); then
    log "no podman service started by this script is running"
    rm -f "$PID_FILE"
    return 0
  fi
  log "stopping podman service (pid $pid)"
  kill -TERM "$pid"
  # Not our child, so `wait` cannot be used; poll until it is gone.
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "service did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
  rm -f "$PID_FILE"
  engine_answers || rm -f "$SOCK"
  log "stopped (containers it ran keep running; remove them with podman rm -f)"
}

cmd_status() {
  local pid
  if engine_answers; then
    log "running on $SOCK ($(engine_version))"
  else
    log "not answering on $SOCK"
  fi
  if pid=$(our_pid); then
    log "started by this script: pid $pid (log $LOG_FILE)"
  fi
  engine_answers
}

engine_main "$@"
