#!/usr/bin/env bash
# The main job: set-up included, then the offline end-to-end demo
# (local teacher -> annotate -> filter -> train two students -> evaluate -> report).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$repo_root/.ci/venv.sh" test
cd "$repo_root"
exec cot-distill demo "$@"
