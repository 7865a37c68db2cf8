#!/usr/bin/env bash
# Installs real T5X and AirIO into the project's test virtualenv, so the tests
# in tests/test_t5x_*.py run our gin files, tasks and checkpoints under T5X
# itself. T5X and AirIO are not on the package index: their unmodified public
# source is vendored (read-only) in ../shared/vendor; we copy it to a temp
# dir (pip builds in place) and `pip install --no-deps` it, plus the few index
# packages T5X imports, pinned by .ci/constraints.txt. The main job's
# environment does not need any of this.
#
# Idempotent: a stamp in the venv records what was installed (the vendor
# README, which names the snapshot commits, and the constraints); nothing is
# reinstalled while they are unchanged.
#
#   bash .ci/install_t5x.sh            # after .ci/venv.sh made .venv
#   COT_DISTILL_VENV=... T5X_VENDOR_DIR=... bash .ci/install_t5x.sh
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${COT_DISTILL_VENV:-$repo_root/.venv}"
vendor="${T5X_VENDOR_DIR:-$repo_root/../shared/vendor}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[t5x] no virtualenv at $venv: run .ci/venv.sh first" >&2
  exit 1
fi
if [ ! -d "$vendor/t5x" ] || [ ! -d "$vendor/airio" ]; then
  echo "[t5x] vendored T5X/AirIO not found under $vendor; T5X tests will skip" >&2
  exit 0
fi
# The index packages T5X and AirIO import that the project does not already
# depend on (versions come from .ci/constraints.txt).
extra_packages=(cached_property chex fiddle jaxtyping jsonlines grain jestimator)
stamp="$venv/.cot-distill-t5x-installed"
want="$(cat "$vendor/README.md" "$repo_root/.ci/constraints.txt" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[t5x] installing vendored T5X + AirIO into $venv (about 2 minutes once)" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$vendor/t5x" "$vendor/airio" "$tmp/"
chmod -R u+w "$tmp"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -c "$repo_root/.ci/constraints.txt" "${extra_packages[@]}" >&2
"${pip[@]}" --no-deps "$tmp/airio" "$tmp/t5x" >&2
echo "$want" > "$stamp"
