#!/bin/bash
# The TD3 drone update profiled on the GPU host (benchmarks/td3_update_profile.py), alone and six at once
# (what benchmarks/device_drone.sh's six runs do to one GPU), then with TESTS=1 `pytest -m cuda tests`
# without mamba-ssm (benchmarks/device_gpu_speed.sh's first half, no kernel build). carry ["gpu_carry"];
# ~3 min (+ ~4 with TESTS=1). PROFILE_ARGS adds to every profile (e.g. --no-tf32, the first call's).
#   [TESTS=1] bash benchmarks/device_td3_profile.sh
# $OUT: profiles.tgz (each profile's .md/.json), gpu_tests_no_mamba_ssm.txt
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
if [ ! -f /tmp/site/.mambazoo_ready ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu_carry/py312/*.whl || exit 1
  touch /tmp/site/.mambazoo_ready
fi
[ -f /tmp/site/.pybullet_ready ] || { bash gpu_carry/build_pybullet.sh gpu_carry > /tmp/pybullet.log 2>&1 && touch /tmp/site/.pybullet_ready; } || { tail /tmp/pybullet.log; exit 1; }
export PYTHONPATH=/tmp/site:$PWD MAMBAZOO_CPU_SCAN=0 OMP_NUM_THREADS=1
echo "setup done at +$(( $(date +%s) - T0 )) s; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
P="python3 benchmarks/td3_update_profile.py --out /tmp/prof --top 25 ${PROFILE_ARGS:-}"
for args in "--config configs/drone/gpu_forest.yaml" "--config configs/drone/gpu_forest.yaml model.temporal=none" \
            "--config configs/drone/gpu_forest.yaml model.temporal=gru" "--config configs/drone/seed_vmamba.yaml"; do
  timeout 150 $P $args 2>&1 | grep -v "INFO\|USDT\|Warning\|warn" | tail -34
done
echo "six at once (gpu_forest, temporal=mamba), at +$(( $(date +%s) - T0 )) s:"
for i in 0 1 2 3 4 5; do
  timeout 150 $P --config configs/drone/gpu_forest.yaml --profile 1 --updates 40 --out /tmp/six$i seed=$i > /tmp/six$i.log 2>&1 &
done
wait
grep -h "eager update\|graphed update\|acting" /tmp/six*.log
tar czf "$OUT/profiles.tgz" -C /tmp/prof .
if [ "${TESTS:-0}" = 1 ]; then
  { python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"
    nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/driver /'; echo "mamba-ssm: not installed"
    timeout 290 python3 -m pytest -m cuda tests -q -rfEs -p no:cacheprovider $(python3 -c "import xdist" 2>/dev/null && echo "-n 4") --durations=8; } > "$OUT/gpu_tests_no_mamba_ssm.txt" 2>&1
  tail -25 "$OUT/gpu_tests_no_mamba_ssm.txt"
fi
echo "done at +$(( $(date +%s) - T0 )) s"
