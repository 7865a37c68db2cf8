#!/usr/bin/env bash
# Prints the slice's state and the job's status on every worker.
#
#   status.sh --name=NAME --zone=ZONE [--project=PROJECT] [--queued] [--job=train] [--dry-run]
#
# Job status per worker: running, succeeded, failed:CODE, stopped (ended
# without recording a status, e.g. the VM restarted) or absent.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
read_slice_state
printf '%s: %s\n' "$TPU_NAME" "$SLICE_STATE" >&2
if [[ "$SLICE_STATE" == "$(ready_state)" ]]; then
  on_workers all "bash $WORKER_RUNNER report --job=$TPU_JOB"
fi
