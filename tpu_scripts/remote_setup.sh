#!/usr/bin/env bash
# Runs ON each TPU worker (setup.sh calls it after unpacking the code into
# ~/cot-distill): installs Python if missing, then a virtualenv
# ~/cot-distill-venv holding this package (pinned by .ci/constraints.txt,
# editable, so a later setup.sh only has to replace the code) and jax[tpu].
#
#   remote_setup.sh [--python=python3.11] [--jax-version=0.10.2] [--dry-run]
#
# COT_DISTILL_WORKER_HOME (default $HOME) is where cot-distill and
# cot-distill-venv live.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"

worker_home="${COT_DISTILL_WORKER_HOME:-$HOME}"
repo_dir="$worker_home/cot-distill"
venv_python="$worker_home/cot-distill-venv/bin/python"

if ! command -v "$TPU_WORKER_PYTHON" >/dev/null 2>&1; then
  run sudo apt-get update -q
  run sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    "$TPU_WORKER_PYTHON" "$TPU_WORKER_PYTHON-venv"
fi
if [[ ! -x "$venv_python" ]]; then
  run "$TPU_WORKER_PYTHON" -m venv "$worker_home/cot-distill-venv"
fi
run "$venv_python" -m pip install -q --upgrade pip
run "$venv_python" -m pip install -q -c "$repo_dir/.ci/constraints.txt" -e "$repo_dir"
# jax[tpu] adds libtpu for the same jax/jaxlib version the constraints pin.
run "$venv_python" -m pip install -q "jax[tpu]==$TPU_JAX_VERSION" -f "$LIBTPU_INDEX"
run "$venv_python" -c 'import cot_distill, jax; print("cot-distill ready; jax", jax.__version__)'
