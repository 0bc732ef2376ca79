#!/bin/bash
# Sourced by the device scripts (benchmarks/device_*.sh) on the GPU host:
#   install_site SITE    # gpu_carry/py312/*.whl into SITE, then gpu_carry/diffusion/*.whl (if carried)
#                        # each unless the host imports it already; SITE/.mambazoo_ready when done
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
