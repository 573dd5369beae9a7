#!/usr/bin/env bash
# Run every CUDA path of densir on this machine's GPU and print a PASS/FAIL table (under 8 minutes
# on one GPU). See scripts/gpu_check.py for the checks and the environment it reads.
#   bash scripts/gpu_check.sh                       # on a GPU machine
#   GPU_CHECK_ALLOW_CPU=1 bash scripts/gpu_check.sh  # the CPU part, to test the script itself
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
