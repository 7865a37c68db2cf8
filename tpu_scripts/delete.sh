#!/usr/bin/env bash
# Deletes the slice (and, with --queued, its queued resource). Checkpoints
# and metrics in MODEL_DIR on GCS are kept; fetch what you need first.
#
#   delete.sh --name=NAME --zone=ZONE [--project=PROJECT] [--queued] [--dry-run]

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
delete_slice
