#!/usr/bin/env bash
# The test command: set-up included. Extra arguments go to pytest.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/.ci/venv.sh" test
cd "$repo_root"
exec python -m pytest "$@"
