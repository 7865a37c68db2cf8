#!/usr/bin/env bash
# The test command: set-up included. Extra arguments go to pytest.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/.ci/venv.sh" test
bash "$repo_root/.ci/install_t5x.sh"  # real T5X for tests/test_t5x_*.py (skips without ../shared/vendor)
cd "$repo_root"
exec python -m pytest "$@"
