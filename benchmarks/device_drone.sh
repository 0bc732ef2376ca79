#!/bin/bash
# The first Forest comparison on the GPU host: TD3 on mambazoo/DroneForest-v0 (20 trees, 64x64 depth),
# encoder model.temporal in {mamba (VMamba: TemporalMamba + attention), none (K-frame stack), gru} x
# seeds {0, 1}, all six side by side at EQUAL env steps (configs/drone/gpu_forest.yaml: 1.01M
# parameters, 40k env steps at 0.25 updates/step; its header says why this size fits one session),
# updates graphed (train.cuda_graph=true; the cuDNN GRU is refused and updates eagerly, as logged),
# 2 env worker processes per run (env.num_envs=2: 6 x 3 processes on the 16 cores), a checkpoint every
# 5,000 env steps (a call's stop, SIGKILL at SECONDS, loses at most that much), at the end a
# 50-episode eval (train.eval_episodes) and the float16 export of each actor (EXPORT=1).
#
#   bash benchmarks/device_drone.sh [SECONDS]     # default 570; carry ["gpu_carry"]
#
# Call it again while the machine is warm until every run says "done:" (its log lines come back in
# output_tail): benchmarks/device_runs.sh resumes the run directories it finds there (the replay
# buffers stay on that disk and are lost with the machine, so the six must finish in one session:
# ~3 calls). The budget is a lever: gpu_forest.yaml's 40k steps are sized from an estimate (its header:
# ~60 steps/s a run for the graphed ones, ~40 for the GRU's); the state-only probe needed ~30k+ updates for
# goal seeking alone (benchmarks/results/td3_drone_probe.md). If the first call's "frames ... steps/s"
# lines show clearly more, give the later calls EXTRA="train.total_frames=60000" (or more; train.* keys
# apply on resume, replay.size stays 40k: the newest steps; checked here on a smoke run, 400 -> 500; a key
# given twice is an error, so EXTRA holds keys the specs below do not set). The first call also builds pybullet (~71 s) and runs the throughput rows (BEFORE,
# <= ~90 s, skipped once runs/device/td3_throughput_gpu16.json exists there):
#   python3 benchmarks/td3_throughput.py --config configs/drone/seed_vmamba.yaml --envs 16 --seconds 5
#     --updates 20 --frames 288 env.num_envs=16 train.frames_per_batch=96 train.cuda_graph=true device=cuda
# A later call's BEFORE also runs the eval of a run whose training finished but whose final eval a stop
# cut off (its resume would only say "nothing to do"): 50 episodes (RESCUE_EPISODES), the result line in
# RUN/eval_rescue.txt, also written as the run's eval/ scalars at its last frame (what learning_curves.py reads).
#
# What comes back ($OUT, <= 8 files): runs.tgz (every run's config, metrics, eval scalars, attention
# PNGs, device.log; no checkpoints or replay: CKPT_TAGS=""), exports.tgz.partNN (each run's float16
# export/<tag>.pt of its latest checkpoint, ~4 MB a run) and, from the first call, td3_throughput_gpu16.md/.json. Then, here:
#   cp .../td3_throughput_gpu16.* benchmarks/results/
#   tar xzf runs.tgz -C benchmarks/runs/vmamba_td3/ && cat exports.tgz.part* | tar xzf - -C benchmarks/runs/vmamba_td3/
#   python benchmarks/learning_curves.py benchmarks/runs/vmamba_td3/forest_{mamba,none,gru}_s* \
#     --labels vmamba vmamba framestack framestack gru gru --out benchmarks/results/td3_drone_forest_gpu \
#     --eval-keys return success_rate collision_rate path_length final_distance
# (the glob lists mamba_s0 mamba_s1 none_s0 none_s1 gru_s0 gru_s1, in the labels' order)
#   python agents/vmamba_td3.py --eval benchmarks/runs/vmamba_td3/forest_mamba_s0-<time> --episodes 50   # CPU, the export
#
# Smoke on a CPU machine (no GPU; what was run on the 2-core CPU box, three calls: 300 s, 360 s, 300 s;
# every run started, checkpointed at 200 and 400, was resumed, had its eval rescued, exported, packed):
#   mkdir -p /tmp/site && touch /tmp/site/.mambazoo_ready    # device_runs.sh would install py3.12 wheels
#   OUT=/tmp/dd_out DEVICE=cpu GRAPH=false PYBULLET=0 TP_CONFIG=configs/drone/quick_vmamba.yaml TP_ENVS=2 \
#   MAMBAZOO_CPU_SCAN=0 RESCUE_EPISODES=2 EXTRA="train.total_frames=400 train.learning_starts=100 \
#   train.checkpoint_every_frames=200 train.updates_per_step=0.05 train.eval_episodes=2 replay.batch_size=8 \
#   env.max_episode_steps=50" nice -n 15 bash benchmarks/device_drone.sh 300
# (EXTRA is appended to every run's overrides, on resume too; NO_BEFORE=1 skips the throughput rows,
# TP_CONFIG / TP_ENVS change their network and env count.)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export DEVICE=${DEVICE:-cuda} GRAPH=${GRAPH:-true} OUT=${OUT:-/tmp/out}
TP_CONFIG=${TP_CONFIG:-configs/drone/seed_vmamba.yaml}; TP_ENVS=${TP_ENVS:-16}   # the throughput rows' network, envs
mkdir -p "$OUT"

if [ "${1:-}" = --before ]; then   # device_runs.sh's BEFORE hook (runs in the repo root, after setup)
  mkdir -p runs/device
  if [ "${NO_BEFORE:-0}" != 1 ] && [ ! -f runs/device/td3_throughput_gpu16.json ]; then
    timeout -s INT -k 15 120 python3 benchmarks/td3_throughput.py --config "$TP_CONFIG" --envs "$TP_ENVS" \
      --seconds 5 --updates 20 --frames 288 --tag gpu16 --out runs/device \
      env.num_envs="$TP_ENVS" train.frames_per_batch=96 train.cuda_graph=$GRAPH device=$DEVICE 2>&1 | grep -v INFO | tail -15
    cp runs/device/td3_throughput_gpu16.* "$OUT"/ 2>/dev/null || echo "throughput rows: no result (see above)"
  fi
  for dir in runs/device/vmamba_td3/forest_*-*; do   # finished runs whose final eval a stop cut off
    [ -d "$dir" ] || continue
    ck=$(ls "$dir"/checkpoints/ckpt_*.pt 2>/dev/null | tail -1); [ -n "$ck" ] || continue
    done_at=$(basename "$ck" .pt); done_at=$((10#${done_at#ckpt_}))
    total=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['train']['total_frames'])" "$dir/config.yaml")
    if [ "$done_at" -ge "$total" ] && [ ! -f "$dir/metrics/scalars/eval/return.csv" ] && [ ! -f "$dir/eval_rescue.txt" ]; then
      echo "[$(basename "$dir")] finished at $done_at without its final eval: --eval, ${RESCUE_EPISODES:-50} episodes"
      timeout -s KILL 240 python3 agents/vmamba_td3.py --eval "$dir" --episodes "${RESCUE_EPISODES:-50}" --out "$dir/eval_rescue" \
        > "$dir/eval_rescue.log" 2>&1 && grep "^eval of" "$dir/eval_rescue.log" > "$dir/eval_rescue.txt" &
    fi
  done
  wait
  # the rescued figures as the eval/ scalars the final eval would have logged (learning_curves.py reads them)
  python3 - runs/device/vmamba_td3/forest_*-*/eval_rescue.txt <<'PY'
import re, sys
from pathlib import Path
for txt in map(Path, sys.argv[1:]):
    out = txt.parent / "metrics" / "scalars" / "eval"
    line = txt.read_text() if txt.is_file() else ""
    m = re.search(r"ckpt_(\d+)\.pt over \d+ episodes: (.*)", line)
    if not m or (out / "return.csv").is_file():
        continue
    out.mkdir(parents=True, exist_ok=True)
    for key, value in re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?)(?:,|$)", m.group(2)):
        (out / f"{key}.csv").write_text(f"{int(m.group(1))},{float(value)}\n")
    print(f"{txt.parent.name}: rescued eval logged ({m.group(2)[:120]})")
PY
  exit 0
fi

SECS=${1:-570}
specs=()
for temporal in mamba none gru; do
  for seed in 0 1; do
    specs+=("forest_${temporal}_s${seed}|--config configs/drone/gpu_forest.yaml model.temporal=$temporal seed=$seed train.cuda_graph=$GRAPH device=$DEVICE ${EXTRA:-}")
  done
done
BEFORE="bash $HERE/device_drone.sh --before" OMP_NUM_THREADS=1 AGENT=vmamba_td3 PACK_ALL=1 CKPT_TAGS="" EXPORT=1 \
  bash "$HERE/device_runs.sh" "$SECS" "${specs[@]}"
rc=$?
# Repack. device_runs.sh's runs.tgz holds each run's export/ (the float16 actor and critic, ~4 MB a
# run): ~20 MB for the six, over the 16 MiB a returned file may have. So the exports travel as
# exports.tgz in 15 MiB parts, and runs.tgz is packed again without export/.
dirs=$(cd runs/device/vmamba_td3 2>/dev/null && ls -d forest_*-* 2>/dev/null)
if [ -n "$dirs" ]; then
  rm -f "$OUT/runs.tgz" "$OUT"/exports.tgz.part*
  tar czf "$OUT/runs.tgz" --exclude=checkpoints --exclude=replay --exclude=export --exclude='*.gif' --exclude='*.mp4' \
    -C runs/device/vmamba_td3 $dirs
  exports=$(cd runs/device/vmamba_td3 && ls -d forest_*-*/export 2>/dev/null)
  [ -n "$exports" ] && tar czf - -C runs/device/vmamba_td3 $exports | split -b 15M -d - "$OUT/exports.tgz.part"
  ls -la "$OUT"
fi
exit $rc
