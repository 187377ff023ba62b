# Helpers shared by the .ci scripts; sourced, never run. The sourcing script sets SCRIPT_NAME first.
# shellcheck shell=bash

export DEBIAN_FRONTEND=noninteractive

log() { echo "$SCRIPT_NAME: $*"; }
die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  exit 1
}

now_us() { echo "${EPOCHREALTIME/[.,]/}"; }
elapsed() { # seconds since $1 (from now_us), two decimals; pure bash, no bc
  local us=$(($(now_us) - $1))
  printf '%d.%02ds' $((us / 1000000)) $((us % 1000000 / 10000))
}

# `start|stop|status` for an engine script defining cmd_start, cmd_stop, cmd_status and LOCK_FILE.
engine_main() {
  case "${1:-}" in
    start | stop)
      # Serialise start/stop so two concurrent callers cannot both launch.
      exec 9>"$LOCK_FILE"
      flock 9
      "cmd_$1"
      ;;
    status) cmd_status ;;
    *)
      echo "usage: $0 start|stop|status" >&2
      exit 2
      ;;
  esac
}
