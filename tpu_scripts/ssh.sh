#!/usr/bin/env bash
# Runs one shell command on every worker (or one), in the foreground.
#
#   ssh.sh --name=NAME --zone=ZONE [--project=PROJECT] [--worker=all] [--dry-run] -- COMMAND [ARGS...]
#
# For one-off work: `-- df -h`, `-- pip list`, or installing T5X next to
# our package (see gin/t5x/README.md). The arguments
# are quoted for the remote shell; to use shell syntax pass one string:
# -- 'cd cot-distill && git log -1'.

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
LOG_WORKER=all
parse_flags "$@"
require name zone
((${#PASSTHROUGH_ARGS[@]})) || die "nothing to run: pass -- COMMAND [ARGS...]"
if ((${#PASSTHROUGH_ARGS[@]} == 1)); then
  remote_command="${PASSTHROUGH_ARGS[0]}"
else
  remote_command="$(format_command "${PASSTHROUGH_ARGS[@]}")"
fi
on_workers "$LOG_WORKER" "$remote_command"
