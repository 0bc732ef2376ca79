#!/bin/bash
# ppo_locomamba runs on the GPU host: benchmarks/device_runs.sh with AGENT=ppo_locomamba (see there).
#   bash benchmarks/device_quadruped.sh SECONDS "TAG|ARGS..." ["TAG|ARGS..." ...]
AGENT=ppo_locomamba exec bash "$(dirname "$0")/device_runs.sh" "$@"
