#!/usr/bin/env bash
# Starts a job on every worker of a slice with one command, detached, so it
# survives the SSH session (follow it with logs.sh).
#
#   launch.sh --name=NAME --zone=ZONE [--project=PROJECT] --model-dir=gs://BUCKET/RUN
#             --gin-file=FILE [--gin-file=FILE]... [--gin=MACRO=VALUE]...
#             [--env=KEY=VALUE]... [--job=train] [--restart] [--dry-run] [-- EXTRA_ARGS]
#   launch.sh --name=NAME --zone=ZONE [--job=NAME] [--env=...] -- COMMAND [ARGS...]
#
# With --gin-file it runs our trainer, `python -m cot_distill.train`, with
# --gin.MODEL_DIR set to --model-dir: MODEL_DIR must be on GCS so that every
# worker writes one checkpoint directory and a restarted run resumes from it.
# Gin paths are relative to the repository root; --gin values are gin
# literals, so strings keep their quotes: --gin=MIXTURE_OR_TASK_NAME="'name'".
# Otherwise it runs COMMAND (e.g. `-- cot-distill evaluate ...`). The job runs
# from ~/cot-distill with the worker's virtualenv on PATH; each worker logs to
# ~/cot-distill-logs/JOB.log. --restart stops a running job of the same name
# first (it gets SIGTERM and checkpoints).

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
((${#GIN_FILES[@]} == 0)) || require model-dir
launch_job
