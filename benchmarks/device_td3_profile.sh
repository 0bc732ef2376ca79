#!/bin/bash
# The TD3 drone update profiled on the GPU host (benchmarks/td3_update_profile.py), alone and six at once
# (what benchmarks/device_drone.sh's six runs do to one GPU), then with TESTS=1 `pytest -m cuda tests`
# without mamba-ssm (benchmarks/device_gpu_speed.sh's first half, no kernel build). carry ["gpu_carry"];
# ~4 min (+ ~2 with TESTS=1). PROFILE_ARGS adds to every profile (e.g. --no-tf32, the first call's);
# EXTRA_ROWS=1 adds the frame-stack, GRU and two-encoder nets, SEED_ROW=1 the seed-size one, SIX the
# six-at-once processes' overrides; TILINGS="BD,BT,warps,stages/BD,warps,stages ..." the Triton scan
# forward/backward tilings tried
# on the gpu_forest VMamba (MAMBAZOO_TRITON_SCAN; networks/ssm/triton_scan.py).
#   [TESTS=1] bash benchmarks/device_td3_profile.sh
# $OUT: profiles.tgz (each profile's .md/.json), gpu_tests_no_mamba_ssm.txt
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
. benchmarks/device_site.sh; install_site /tmp/site || exit 1   # py312 wheels (+ diffusers' if carried)
[ -f /tmp/site/.pybullet_ready ] || { bash gpu_carry/build_pybullet.sh gpu_carry > /tmp/pybullet.log 2>&1 && touch /tmp/site/.pybullet_ready; } || { tail /tmp/pybullet.log; exit 1; }
export PYTHONPATH=/tmp/site:$PWD MAMBAZOO_CPU_SCAN=0 OMP_NUM_THREADS=1
echo "setup done at +$(( $(date +%s) - T0 )) s; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
P="python3 benchmarks/td3_update_profile.py --out /tmp/prof --top 25 ${PROFILE_ARGS:-}"
G=configs/drone/gpu_forest.yaml   # shares one encoder between actor and critic (model.shared_encoder)
# the candidate sizes for a comparison that fits one session (EXTRA_ROWS=1: the baselines and two encoders too)
for args in "--config $G" "--config $G model.patch_size=8" "--config $G replay.batch_size=64" \
            "--config $G model.patch_size=8 replay.batch_size=64" \
            ${EXTRA_ROWS:+"--config $G model.temporal=none" "--config $G model.temporal=gru" \
                          "--config $G model.shared_encoder=false"} \
            ${SEED_ROW:+"--config configs/drone/seed_vmamba.yaml"}; do
  timeout 150 $P $args 2>&1 | grep -v "INFO\|USDT\|Warning\|warn" | grep "trainable parameters"
done
# SS2D's rows are short (stage 1: 256 tokens, stage 4: 4): the scan's default tiling (BD=2 channels x
# BT=1024 steps, clamped to the row; 8 warps) leaves most lanes idle there. Wider BD at the same BT:
for pair in ${TILINGS:-8,1024,8,1/8,4,1 32,1024,8,1/32,4,1}; do   # forward/backward tilings
  fwd=${pair%/*}; bwd=${pair#*/}; name=scan${fwd//,/-}_bwd${bwd//,/-}
  MAMBAZOO_TRITON_SCAN=$fwd MAMBAZOO_TRITON_SCAN_BWD=$bwd timeout 150 $P --config $G --out /tmp/$name 2>&1 \
    | grep "trainable parameters" | sed "s|^|MAMBAZOO_TRITON_SCAN=$fwd MAMBAZOO_TRITON_SCAN_BWD=$bwd: |"
  for f in /tmp/$name/*; do mv "$f" "/tmp/prof/$(basename "${f%.*}")_$name.${f##*.}"; done
done
SIX=${SIX:-model.patch_size=8}   # the six processes' overrides (the likeliest choice)
echo "six at once (gpu_forest $SIX, temporal=mamba), at +$(( $(date +%s) - T0 )) s:"
for i in 0 1 2 3 4 5; do
  timeout 150 $P --config $G --profile 1 --updates 40 --out /tmp/six$i seed=$i $SIX > /tmp/six$i.log 2>&1 &
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
