#!/usr/bin/env bash
# Keeps a training run going until it finishes, through preemptions: the
# loop to leave running (e.g. under tmux) for spot or preemptible slices.
#
#   watch.sh --name=NAME --zone=ZONE [--project=PROJECT] [--accelerator-type=TYPE]
#            [--spot | --preemptible] [--queued] --model-dir=gs://BUCKET/RUN
#            --gin-file=FILE... [--gin=MACRO=VALUE]... [--env=KEY=VALUE]... [--job=train]
#            [--interval=300] [--max-restarts=20] [--wait-timeout=7200]
#            [--dry-run [--assume-state=STATE] [--assume-job-status=STATUS]]
#
# Each round (every --interval seconds) it reads the slice's state and, when
# the slice is usable, the job's status on worker 0, then:
#   slice missing, PREEMPTED, TERMINATED, STOPPED, SUSPENDED or FAILED:
#       delete what is left, create the slice again, set it up, launch the job;
#   job succeeded: stop watching (exit 0);
#   job failed, stopped (e.g. the VM restarted) or absent: launch it again;
#   not installed (a fresh VM): set up, then launch;
#   job running, slice still being created, or worker 0 unreachable: wait
#   (three unreachable rounds in a row count as a lost slice).
# Our trainer resumes from the latest checkpoint in MODEL_DIR, so every
# relaunch continues the same run. Re-creations and relaunches after the
# first launch count toward --max-restarts.
# With --dry-run it runs one round and prints its commands, taking the
# answers it would read from --assume-state (default READY, or ACTIVE with
# --queued) and --assume-job-status (default running).

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
((${#GIN_FILES[@]} == 0)) || require model-dir
job_command  # fail now, not after an hour in the queue, if nothing to launch

launched=0
restarts=0
unreachable_rounds=0

count_restart() {
  if ((launched)); then
    restarts=$((restarts + 1))
    ((restarts <= TPU_MAX_RESTARTS)) || die "giving up after $TPU_MAX_RESTARTS restarts"
    log "restart $restarts of at most $TPU_MAX_RESTARTS"
  fi
}

relaunch() {
  RESTART_JOB=1
  launch_job && launched=1
}

recreate() {
  count_restart
  if [[ "$SLICE_STATE" != MISSING ]]; then
    delete_slice || log "deleting $TPU_NAME failed; creating anyway"
  fi
  create_slice || return 1
  wait_until_ready || return 1
  setup_workers || return 1
  relaunch
}

# One round; returns 0 once the job has succeeded.
watch_round() {
  read_slice_state
  if is_lost_state "$SLICE_STATE"; then
    log "$TPU_NAME is $SLICE_STATE"
    recreate || log "could not bring $TPU_NAME back this round"
    return 1
  fi
  if [[ "$SLICE_STATE" != "$(ready_state)" ]]; then
    log "$TPU_NAME is $SLICE_STATE; waiting"
    return 1
  fi
  read_job_status
  [[ "$JOB_STATUS" == unreachable ]] || unreachable_rounds=0
  case "$JOB_STATUS" in
    succeeded)
      log "$TPU_JOB succeeded"
      return 0 ;;
    running)
      log "$TPU_JOB is running" ;;
    not-installed)
      count_restart
      { setup_workers && relaunch; } || log "set-up or launch failed; retrying next round" ;;
    failed:*|stopped|absent)
      log "$TPU_JOB is $JOB_STATUS"
      count_restart
      relaunch || log "launch failed; retrying next round" ;;
    unreachable)
      unreachable_rounds=$((unreachable_rounds + 1))
      log "worker 0 unreachable ($unreachable_rounds in a row)"
      if ((unreachable_rounds >= 3)); then
        unreachable_rounds=0
        recreate || log "could not bring $TPU_NAME back this round"
      fi ;;
    *)
      log "unexpected job status '$JOB_STATUS'; waiting" ;;
  esac
  return 1
}

while true; do
  if watch_round; then
    exit 0
  fi
  ((DRY_RUN == 0)) || exit 0
  sleep "$TPU_WATCH_INTERVAL"
done
