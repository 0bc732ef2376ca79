#!/bin/bash
# Sourced by the device scripts (benchmarks/device_*.sh) on the GPU host:
#   install_site SITE    # gpu_carry/py312/*.whl into SITE, then gpu_carry/diffusion/*.whl (if carried)
#                        # each unless the host imports it already; SITE/.mambazoo_ready when done
#   GRACE=G run_until SECONDS LOG CMD...   # CMD for at most SECONDS (below; tests/test_device_scripts.py)
# The py312 wheels (torchrl, tensordict, gymnasium...) are absent from the host: all go in. The
# diffusion wheels (benchmarks/gpu_carry.sh) overlap with what the host's Python has (requests,
# packaging, filelock...): SITE comes first on PYTHONPATH, so installing those would shadow the
# host's own versions; benchmarks/install_missing_wheels.py installs only the missing ones.
install_site() {
  local site=${1:?SITE}
  [ -f "$site/.mambazoo_ready" ] && return 0
  mkdir -p "$site"
  python3 -m pip install -q --no-index --no-deps --target "$site" gpu_carry/py312/*.whl || return 1
  if [ -d gpu_carry/diffusion ]; then
    python3 benchmarks/install_missing_wheels.py --target "$site" gpu_carry/diffusion/*.whl || return 1
  else
    echo "gpu_carry/diffusion/ not carried: no diffusers here (benchmarks/gpu_carry.sh makes it)"
  fi
  touch "$site/.mambazoo_ready"
}

# run_until SECONDS LOG CMD...: CMD (output appended to LOG) for at most SECONDS. With GRACE > 0 (unset: 0) its
# main process alone gets SIGTERM GRACE s before the end (its env worker processes must live until it
# has saved: a signal to the group would break their pipes); at the end (or when it exits) SIGKILL
# goes to its whole process group (setsid), so no worker outlives it. Exit status: CMD's.
run_until() {
  local deadline=$(( $(date +%s) + $1 )) log=$2 termed=0; shift 2
  setsid "$@" >> "$log" 2>&1 &
  local pid=$!
  while kill -0 $pid 2>/dev/null; do
    local now=$(date +%s)
    if [ $now -ge $deadline ]; then echo "[run_until] SIGKILL to $1's group at the deadline" >> "$log"; kill -KILL -- -$pid 2>/dev/null; break; fi
    if [ "${GRACE:-0}" -gt 0 ] && [ $termed = 0 ] && [ $now -ge $(( deadline - GRACE )) ]; then
      echo "[run_until] SIGTERM to $1 (pid $pid), $GRACE s before the deadline" >> "$log"; kill -TERM $pid; termed=1
    fi
    sleep 1
  done
  wait $pid; local rc=$?
  kill -KILL -- -$pid 2>/dev/null   # whatever its group left behind
  return $rc
}
