#!/usr/bin/env bash
# Installs this package and jax[tpu] on every worker of a slice.
#
#   setup.sh --name=NAME --zone=ZONE [--project=PROJECT]
#            [--python=python3.11] [--jax-version=0.10.2] [--dry-run]
#
# Ships the committed HEAD of this checkout (uncommitted edits are NOT
# shipped: commit first) as ~/cot-distill on each worker and runs
# tpu_scripts/remote_setup.sh there, which installs Python if missing and an
# editable install into ~/cot-distill-venv. Safe to re-run after new commits.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
setup_workers
