#!/usr/bin/env bash
# Runs ON a TPU worker (launch.sh, logs.sh and watch.sh call it over SSH):
# starts, inspects or stops one detached job.
#
#   remote_run.sh start --job=NAME [--env=KEY=VALUE]... [--restart] -- COMMAND [ARGS...]
#   remote_run.sh status --job=NAME   prints running, succeeded, failed:CODE,
#                                     stopped (ended without a status) or absent
#   remote_run.sh report --job=NAME   the same, as "HOST JOB: STATUS"
#   remote_run.sh stop --job=NAME     SIGTERM to the job's process group (our
#                                     trainer saves a checkpoint), SIGKILL after
#                                     STOP_TIMEOUT_SECONDS (default 600)
#   remote_run.sh tail --job=NAME     follows the job's log
#
# The job runs in ~/cot-distill with ~/cot-distill-venv/bin first on PATH. Its
# output goes to ~/cot-distill-logs/NAME.log and, once it ends, its exit status
# to NAME.exit. COT_DISTILL_WORKER_HOME (default $HOME) moves all three.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

worker_home="${COT_DISTILL_WORKER_HOME:-$HOME}"
repo_dir="$worker_home/cot-distill"
venv_dir="$worker_home/cot-distill-venv"
log_dir="$worker_home/cot-distill-logs"
stop_timeout="${STOP_TIMEOUT_SECONDS:-600}"

action="${1:-}"
case "$action" in -h|--help) usage; exit 0 ;; esac
(($#)) && shift
parse_flags "$@"
((DRY_RUN == 0)) || die "remote_run.sh runs on the worker and has no --dry-run"
log_file="$log_dir/$TPU_JOB.log"
pid_file="$log_dir/$TPU_JOB.pid"
exit_file="$log_dir/$TPU_JOB.exit"

supervisor_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid="$(<"$pid_file")"
  # The pid must still be this job's supervisor (pids are reused, e.g. after
  # the VM restarts).
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "_supervise --job=$TPU_JOB " || return 1
  printf '%s' "$pid"
}

job_status() {
  if [[ -f "$exit_file" ]]; then
    local code
    code="$(<"$exit_file")"
    if [[ "$code" == 0 ]]; then printf 'succeeded'; else printf 'failed:%s' "$code"; fi
  elif supervisor_pid >/dev/null; then
    printf 'running'
  elif [[ -f "$pid_file" ]]; then
    printf 'stopped'
  else
    printf 'absent'
  fi
}

stop_job() {
  local pid
  pid="$(supervisor_pid)" || { log "$TPU_JOB is not running"; return 0; }
  log "stopping $TPU_JOB (process group $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  local waited=0
  while supervisor_pid >/dev/null && ((waited < stop_timeout)); do
    sleep 1
    waited=$((waited + 1))
  done
  if supervisor_pid >/dev/null; then
    log "$TPU_JOB ignored SIGTERM for ${stop_timeout}s; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

start_job() {
  ((${#PASSTHROUGH_ARGS[@]})) || die "start needs -- COMMAND [ARGS...]"
  if [[ "$(job_status)" == running ]]; then
    ((RESTART_JOB)) || die "$TPU_JOB is already running (pass --restart to replace it)"
    stop_job
  fi
  [[ -d "$repo_dir" ]] || die "$repo_dir is missing: run setup.sh first"
  mkdir -p "$log_dir"
  rm -f "$exit_file" "$pid_file"
  local env_flags=()
  local assignment
  for assignment in "${JOB_ENV[@]}"; do
    env_flags+=("--env=$assignment")
  done
  # A new session, so the job survives the SSH session that started it and
  # `stop` can signal its whole process group.
  setsid nohup bash "${BASH_SOURCE[0]}" _supervise "--job=$TPU_JOB" \
    "${env_flags[@]}" -- "${PASSTHROUGH_ARGS[@]}" >/dev/null 2>&1 </dev/null &
  local waited=0
  until [[ -f "$pid_file" ]] || ((waited >= 50)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  [[ -f "$pid_file" ]] || die "$TPU_JOB did not start; see $log_file"
  log "started $TPU_JOB on $(hostname); log: $log_file"
}

# The detached supervisor: runs the job, forwards nothing (the job shares its
# process group, so it gets the same signals), and records the exit status.
supervise() {
  printf '%s' "$$" >"$pid_file.tmp" && mv "$pid_file.tmp" "$pid_file"
  cd "$repo_dir"
  export PATH="$venv_dir/bin:$PATH"
  local assignment
  for assignment in "${JOB_ENV[@]}"; do
    export "${assignment?}"
  done
  printf '=== %s started %s on %s: %s\n' "$TPU_JOB" "$(date -u +%FT%TZ)" "$(hostname)" \
    "$(format_command "${PASSTHROUGH_ARGS[@]}")" >>"$log_file"
  # Stay alive through SIGTERM so the job's own exit status gets recorded.
  trap 'true' TERM
  "${PASSTHROUGH_ARGS[@]}" >>"$log_file" 2>&1 </dev/null &
  local child=$! code=0
  while true; do
    if wait "$child"; then code=0; else code=$?; fi
    kill -0 "$child" 2>/dev/null || break
  done
  printf '=== %s ended %s with status %s\n' "$TPU_JOB" "$(date -u +%FT%TZ)" "$code" >>"$log_file"
  printf '%s' "$code" >"$exit_file.tmp" && mv "$exit_file.tmp" "$exit_file"
}

case "$action" in
  start) start_job ;;
  status) job_status; printf '\n' ;;
  report) printf '%s %s: %s\n' "$(hostname)" "$TPU_JOB" "$(job_status)" ;;
  stop) stop_job ;;
  tail) exec tail -n 200 -F "$log_file" ;;
  _supervise) supervise ;;
  *) usage; exit 2 ;;
esac
