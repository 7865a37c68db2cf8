#!/usr/bin/env bash
# Creates a TPU VM slice, directly or through a queued resource, and waits
# until it is usable.
#
#   create.sh --name=NAME --zone=ZONE [--project=PROJECT]
#             [--accelerator-type=v4-8] [--runtime-version=VERSION]
#             [--spot | --preemptible] [--queued] [--wait-timeout=7200]
#             [--dry-run]
#
# The runtime version defaults to the image for the accelerator generation:
# tpu-ubuntu2204-base (v2-v4), v2-alpha-tpuv5-lite (v5e), v2-alpha-tpuv5
# (v5p), v2-alpha-tpuv6e (v6e). --queued asks for capacity through a queued
# resource NAME-qr (required for large spot slices); its TPU VM is NAME.
# Every flag can also be set through the environment (TPU_NAME, TPU_ZONE,
# TPU_PROJECT, TPU_ACCELERATOR_TYPE, ...: see tpu_scripts/README.md).

set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_flags "$@"
require name zone
create_slice
wait_until_ready || die "$TPU_NAME did not become usable"
