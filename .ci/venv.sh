#!/usr/bin/env bash
# Creates (or reuses) the project's virtualenv in .venv and installs the package
# with the pinned, verified dependency set. Sourced by .ci/demo.sh and .ci/test.sh.
# Re-installs only when pyproject.toml or the constraints change.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${COT_DISTILL_VENV:-$repo_root/.venv}"
extras="${1:-test}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv at $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.cot-distill-installed-$extras"
want="$(cat "$repo_root/pyproject.toml" "$repo_root/.ci/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing cot-distill[$extras] into $venv (pinned; takes a few minutes once)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  # torch's CPU wheel: the local index serves it; PyPI users get the same
  # version from the default index.
  "$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -c "$repo_root/.ci/constraints.txt" -e "$repo_root[$extras]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
