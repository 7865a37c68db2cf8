#!/usr/bin/env bash
# Streams a job's log from one worker (or from all of them, interleaved).
#
#   logs.sh --name=NAME --zone=ZONE [--project=PROJECT] [--job=train]
#           [--worker=0 | --worker=all] [--dry-run]
#
# Worker 0 is the one that logs metrics and progress; the others repeat the
# start-up lines and report their own errors. Ctrl-C stops streaming, not the job.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
on_workers "$LOG_WORKER" "bash $WORKER_RUNNER tail --job=$TPU_JOB"
