#!/bin/bash
# Issue 24's memory proof on the GPU host, in one device call: TD3 on Pendulum with the angular velocity
# hidden (mambazoo/PendulumNoVel-v0), 3 seeds x model.memory in {mamba1, gru, lstm, none}, 30k env steps
# each (configs/pendulum/td3_mamba.yaml), all 12 side by side, one torch thread each, updates on the GPU
# (train.cuda_graph: mamba1 and none graphed; cuDNN gru/lstm refused and updated eagerly, as logged),
# a checkpoint every 3,000 frames so that a call's stop (SIGKILL at SECONDS) loses at most that much.
#
#   bash benchmarks/device_pendulum.sh [SECONDS]     # default 570; carry ["gpu_carry"]
#
# Runs that do not reach 30k frames in SECONDS are resumed by calling it again while the machine is warm
# (their replay buffers stay on its disk; benchmarks/device_runs.sh finds the run directories). Every
# run's record (config, metrics, eval, log) comes back in one runs.tgz; the checkpoints stay there.
# Then, here: tar xzf runs.tgz -C benchmarks/runs/vmamba_td3/ and
#   python benchmarks/learning_curves.py benchmarks/runs/vmamba_td3/pend_* --out benchmarks/results/td3_pendulum_novel --eval-keys return
set -u
SECS=${1:-570}
specs=()
for mem in mamba1 gru lstm none; do
  for seed in 0 1 2; do
    specs+=("pend_${mem}_s${seed}|--config configs/pendulum/td3_mamba.yaml model.memory=$mem seed=$seed train.cuda_graph=true train.checkpoint_every_frames=3000")
  done
done
OMP_NUM_THREADS=1 PYBULLET=0 AGENT=vmamba_td3 PACK_ALL=1 CKPT_TAGS="" \
  bash "$(dirname "$0")/device_runs.sh" "$SECS" "${specs[@]}"
