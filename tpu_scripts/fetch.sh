#!/usr/bin/env bash
# Copies a run's results from MODEL_DIR on GCS (and the job log from worker 0
# when --name is given) to a local directory.
#
#   fetch.sh --model-dir=gs://BUCKET/RUN --destination=DIR [--with-checkpoints]
#            [--name=NAME --zone=ZONE [--project=PROJECT] [--job=train]] [--dry-run]
#
# Copies the operative config, model_config.json, metrics.jsonl, TensorBoard
# events and evaluation outputs; checkpoint directories are skipped unless
# --with-checkpoints (a T5 XXL checkpoint with optimizer state is ~90 GB).
# Uses `gcloud storage rsync`, so re-running copies only what changed.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require model-dir destination
run mkdir -p "$DESTINATION"
rsync_flags=(--recursive)
if ((WITH_CHECKPOINTS == 0)); then
  rsync_flags+=("--exclude=$CHECKPOINT_PATH_PATTERN")
fi
run gcloud storage rsync "${rsync_flags[@]}" "$MODEL_DIR" "$DESTINATION"
if [[ -n "$TPU_NAME" ]]; then
  require zone
  location_flags
  run mkdir -p "$DESTINATION/logs"
  run gcloud compute tpus tpu-vm scp "$TPU_NAME:cot-distill-logs/$TPU_JOB.log" \
    "$DESTINATION/logs/" "${LOCATION_FLAGS[@]}" --worker=0
fi
