#!/usr/bin/env bash
# Start/stop a private Docker daemon for the test suite.
#
# Usage: bash .ci/docker-engine.sh start|stop|status
#
# CI machines have no systemd, so dockerd is launched by hand in the
# background. Container networking is never needed by the tests, so the
# daemon runs with --bridge=none --iptables=false (no bridge, no NAT rules).
# Only the daemon started by this script (pid in $PID_FILE) is ever stopped.
set -euo pipefail
SCRIPT_NAME=docker-engine
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"


LOG_FILE=/tmp/agent-backends-dockerd.log
PID_FILE=/tmp/agent-backends-dockerd.pid
LOCK_FILE=/tmp/agent-backends-dockerd.lock
START_TIMEOUT=60 # seconds to wait for `docker info` to answer
STOP_TIMEOUT=30  # seconds to wait for dockerd to exit after SIGTERM


need_root() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (dockerd and apt-get need it)"
}

# Install docker.io only when dockerd is missing; keep apt quiet but show its
# output if it fails.
ensure_dockerd() {
  command -v dockerd >/dev/null 2>&1 && return 0
  log "dockerd not found; installing docker.io"
  local out
  out=$(mktemp /tmp/agent-backends-apt.XXXXXX)
  if ! { apt-get -q update && apt-get install -y -q --no-install-recommends docker.io; } >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    die "apt-get install docker.io failed"
  fi
  rm -f "$out"
  command -v dockerd >/dev/null 2>&1 || die "docker.io installed but dockerd still not on PATH"
}

engine_answers() { docker info >/dev/null 2>&1; }

# Pid from our pidfile, only if that process is still alive and really is
# dockerd (guards against pid reuse after a crash).
our_pid() {
  [[ -s $PID_FILE ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) == dockerd ]] || return 1
  echo "$pid"
}

wait_for_engine() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    engine_answers && return 0
    # Fail fast if the daemon died instead of waiting out the timeout.
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  engine_answers
}

cmd_start() {
  need_root
  ensure_dockerd
  if engine_answers; then
    log "already running ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo '?'))"
    return 0
  fi

  local pid
  if pid=$(our_pid); then
    # A previous start is still booting (or hung); wait on it rather than
    # launching a second daemon that would fight over /var/run/docker.sock.
    log "dockerd (pid $pid) already launched; waiting for it"
  else
    rm -f "$PID_FILE"
    # setsid+nohup: detach from the CI job's session so the daemon survives
    # this script and is not hit by the job's SIGHUP/SIGINT. 9>&- keeps the
    # lock fd out of the daemon, else it would hold the lock forever.
    setsid nohup dockerd --bridge=none --iptables=false \
      </dev/null >"$LOG_FILE" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$PID_FILE"
    log "launched dockerd (pid $pid, log $LOG_FILE)"
  fi

  if wait_for_engine "$pid"; then
    log "ready after ${SECONDS}s ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo '?'))"
    return 0
  fi

  echo "docker-engine: dockerd did not answer within ${START_TIMEOUT}s; last log lines:" >&2
  tail -n 40 "$LOG_FILE" >&2 || true
  # Don't leave a half-started daemon behind for the next attempt to trip on.
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  exit 1
}

cmd_stop() {
  need_root
  local pid
  if ! pid=$(our_pid); then
    log "no dockerd started by this script is running"
    rm -f "$PID_FILE"
    return 0
  fi
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid"
  # Not our child, so `wait` cannot be used; poll until it is gone.
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "dockerd did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  local pid
  if engine_answers; then
    log "running ($(docker info --format '{{.ServerVersion}}' 2>/dev/null || echo '?'))"
  else
    log "not answering"
  fi
  if pid=$(our_pid); then
    log "started by this script: pid $pid (log $LOG_FILE)"
  fi
  engine_answers
}

engine_main "$@"
