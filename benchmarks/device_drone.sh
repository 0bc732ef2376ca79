#!/bin/bash
# The Forest comparison on the GPU host, across calls and sessions: TD3 on mambazoo/DroneForest-v0
# (20 trees, 64x64 depth), encoder model.temporal in {mamba (VMamba: TemporalMamba + attention), none
# (K-frame stack), gru} x seeds {0, 1}, all six side by side at EQUAL env steps
# (configs/drone/gpu_forest.yaml: one encoder shared by actor and critic, 0.65M trainable parameters
# for VMamba; its header has the measured speeds), updates graphed (train.cuda_graph=true; the GRU
# temporal stage too since 2026-12-02, unrolled on CUDA instead of cuDNN: until then it updated eagerly
# at 12-14 env steps/s against the graphed runs' 17-26), 2 env worker processes per run, a checkpoint every
# 5,000 env steps and at the stop (SIGTERM 25 s before SECONDS: the frame it is on), at the end a 50-episode eval.
#
#   bash benchmarks/device_drone.sh [SECONDS]     # default 570; carry ["gpu_carry"] (or its three parts below)
#
# Each call resumes what it finds (benchmarks/device_runs.sh): the run directories still on a warm
# machine (with their replay buffers), else the ones committed under benchmarks/runs/vmamba_td3/
# (checkpoint only: train.refill_replay=true, in every run's overrides, refills the buffer with the
# resumed policy for train.learning_starts steps before the updates go on). So a session is ~3 calls
# chained while warm. Across sessions the limit is the 64 MiB (67.1 MB) working tree a call sends
# (tracked files + what is carried; measure the tracked part with
# `git ls-files -z | xargs -0 du -cb | tail -1`), and carry only what this script needs,
# ["gpu_carry/py312", "gpu_carry/build_pybullet.sh", "gpu_carry/pybullet-3.2.7-trim.tar.gz"]
# (14.2 MB; benchmarks/gpu_carry.sh makes gpu_carry/). The limit counts more than the raw bytes:
# 51.9 MB tracked + 14.2 MB carried (63.0 MiB) was refused on 2026-12-03, 44.8 + 14.2 passed. The
# shipped policies take ~14 MB of the tree (2026-12-04: 32.7 MB tracked with one Forest checkpoint),
# so three ~10.5 MB checkpoints fit beside them, not six. So either a comparison finishes inside one
# session, or ONE SEED's three runs train at a time (SEEDS=0 until done, then SEEDS=1): a triple's
# checkpoints committed under benchmarks/runs/vmamba_td3/ continue in the next session, and three
# processes share the GPU instead of six (the six together reached ~80 updates/s in all, 12-14 a run,
# so a run's steps per session should roughly double; measure the three's rate before sizing
# train.total_frames). When a triple is done, git rm its checkpoints (history keeps them) before the
# next triple's calls, or the tree is over the limit again. Sizing a one-session comparison: model.patch_size=8
# cuts the update's matmul work 3.3x, 21.8 -> 6.7 GFLOP; batch 64 halves it; measure them first with
# `bash benchmarks/device_td3_profile.sh`, then give the choice as EXTRA).
# What comes back ($OUT, 7 files): runs.tgz (every run's config, metrics, eval scalars, attention
# PNGs, device.log, export/best_float16.pt + best.json: the policy of its best eval so far, ~2.5 MB;
# no checkpoints or replay; commit the best exports once for history and git rm them in the next
# commit, as the checkpoints, unless one is shipped: the tree's 64 MiB again) and each run's latest checkpoint, TAG.ckpt_<frame>.pt.part00
# (~10.5 MB: one part), and from a session's first call throughput.tgz (td3_throughput_gpu16.md/.json, BEFORE below).
# Then, here (a checkpoint to commit for the next session only if the tree stays under 64 MiB):
#   tar xzf .../runs.tgz -C benchmarks/runs/vmamba_td3/
#   for f in .../forest_*.ckpt_*.part00; do t=$(basename $f); tag=${t%%.*}; ck=${t#*.}; ck=${ck%.part00}
#     d=$(ls -d benchmarks/runs/vmamba_td3/$tag-* | tail -1); mkdir -p $d/checkpoints
#     rm -f $d/checkpoints/*.pt; cat ${f%.part00}.part* > $d/checkpoints/$ck; done
#   python benchmarks/learning_curves.py benchmarks/runs/vmamba_td3/forest_{mamba,none,gru}_s* \
#     --labels vmamba vmamba framestack framestack gru gru --out benchmarks/results/td3_drone_forest_gpu \
#     --eval-keys return success_rate collision_rate path_length final_distance
#   python agents/vmamba_td3.py --export benchmarks/runs/vmamba_td3/forest_mamba_s0-<time>   # float16, CPU
#   python agents/vmamba_td3.py --eval benchmarks/runs/vmamba_td3/forest_mamba_s0-<time> --episodes 50
# RUNS="gru_s0 mamba_s1 none_s1 gru_s1" names the runs instead (TEMPORAL[_POOL]_sSEED each, POOL a
# model.pool; default: mamba, none and gru x SEEDS), e.g. to finish one run of a triple beside the next.
# GRU_GRAPH=false updates the GRU runs eagerly (if the BEFORE hook's CUDA test of its graphed stage fails).
# EXTRA holds more overrides for every run (e.g. EXTRA="train.total_frames=80000" to extend; train.*
# keys apply on resume; a key given twice is an error). The first call of a session builds pybullet
# (~50-70 s) and runs the throughput rows (BEFORE, <= ~120 s, skipped once runs/device/td3_throughput_gpu16.json
# exists there, or with NO_BEFORE=1):
#   python3 benchmarks/td3_throughput.py --config configs/drone/seed_vmamba.yaml --envs 16 --seconds 5
#     --updates 20 --frames 288 env.num_envs=16 train.frames_per_batch=96 train.cuda_graph=true device=cuda
# A later call's BEFORE also runs the eval of a run whose training finished but whose final eval a stop
# cut off (its resume would only say "nothing to do"): 50 episodes (RESCUE_EPISODES) on the final eval's own
# layouts (--eval-seed: the run's seed + vmamba_td3.EVAL_SEED_OFFSET; until 2026-12-03 the rescue flew
# --eval's held-out ones, seed + 12345), the result line in
# RUN/eval_rescue.txt, also written as the run's eval/ scalars at its last frame (what learning_curves.py reads).
#
# Smoke on a CPU machine (no GPU):
#   mkdir -p /tmp/site && touch /tmp/site/.mambazoo_ready    # device_runs.sh would install py3.12 wheels
#   OUT=/tmp/dd_out DEVICE=cpu GRAPH=false PYBULLET=0 TP_CONFIG=configs/drone/quick_vmamba.yaml TP_ENVS=2 \
#   MAMBAZOO_CPU_SCAN=0 RESCUE_EPISODES=2 EXTRA="train.total_frames=400 train.learning_starts=100 \
#   train.checkpoint_every_frames=200 train.updates_per_step=0.05 train.eval_episodes=2 replay.batch_size=8 \
#   env.max_episode_steps=50" nice -n 15 bash benchmarks/device_drone.sh 300
# (NO_BEFORE=1 skips the throughput rows, TP_CONFIG / TP_ENVS change their network and env count.)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
export DEVICE=${DEVICE:-cuda} GRAPH=${GRAPH:-true} OUT=${OUT:-/tmp/out}
TP_CONFIG=${TP_CONFIG:-configs/drone/seed_vmamba.yaml}; TP_ENVS=${TP_ENVS:-16}   # the throughput rows' network, envs
mkdir -p "$OUT"

if [ "${1:-}" = --before ]; then   # device_runs.sh's BEFORE hook (runs in the repo root, after setup)
  mkdir -p runs/device
  if [ "${NO_BEFORE:-0}" != 1 ] && [ ! -f runs/device/td3_throughput_gpu16.json ]; then
    timeout -s INT -k 15 150 python3 benchmarks/td3_throughput.py --config "$TP_CONFIG" --envs "$TP_ENVS" \
      --seconds 5 --updates 20 --frames 192 --tag gpu16 --out runs/device \
      env.num_envs="$TP_ENVS" train.frames_per_batch=96 train.learning_starts=480 train.cuda_graph=$GRAPH \
      device=$DEVICE 2>&1 | grep -v INFO | tail -15
    # one file (a call brings back 8: runs.tgz, six checkpoints, this)
    tar czf "$OUT/throughput.tgz" -C runs/device td3_throughput_gpu16.md td3_throughput_gpu16.json 2>/dev/null \
      || echo "throughput rows: no result (see above)"
  fi
  # the graphed GRU temporal stage's CUDA test, once per warm machine (its log line comes back in the
  # call's output): if it fails, run the next calls with GRU_GRAPH=false (the GRU runs update eagerly)
  if [ "$DEVICE" = cuda ] && [ "$GRAPH" = true ] && [ ! -f runs/device/gru_graph_test.txt ]; then
    timeout 180 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_vmamba.py -k temporal_gru 2>&1 \
      | tail -3 | tee runs/device/gru_graph_test.txt
  fi
  for dir in runs/device/vmamba_td3/forest_*-*; do   # finished runs whose final eval a stop cut off
    [ -d "$dir" ] || continue
    ck=$(ls "$dir"/checkpoints/ckpt_*.pt 2>/dev/null | tail -1); [ -n "$ck" ] || continue
    done_at=$(basename "$ck" .pt); done_at=$((10#${done_at#ckpt_}))
    total=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['train']['total_frames'])" "$dir/config.yaml")
    # the final eval is logged at the last frame (intermediate ones, train.eval_every_frames, come before it)
    last_eval=$(tail -1 "$dir/metrics/scalars/eval/return.csv" 2>/dev/null | cut -d, -f1)
    if [ "$done_at" -ge "$total" ] && [ "${last_eval:-0}" != "$done_at" ] && [ ! -f "$dir/eval_rescue.txt" ]; then
      echo "[$(basename "$dir")] finished at $done_at without its final eval: --eval, ${RESCUE_EPISODES:-50} episodes"
      # the seed of its in-training evals' episodes (the final eval's own layouts); only here: it imports torch
      eval_seed=$(python3 -c "import sys, yaml; from agents.vmamba_td3 import EVAL_SEED_OFFSET as o
print(yaml.safe_load(open(sys.argv[1]))['seed'] + o)" "$dir/config.yaml")
      timeout -s KILL 240 python3 agents/vmamba_td3.py --eval "$dir" --episodes "${RESCUE_EPISODES:-50}" \
        --eval-seed "$eval_seed" --out "$dir/eval_rescue" \
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
    m = re.search(r"ckpt_(\d+)\.pt over \d+ episodes(?: \(seed \d+\))?: (.*)", line)
    rows = (out / "return.csv").read_text().split() if (out / "return.csv").is_file() else []
    if not m or (rows and rows[-1].split(",")[0] == str(int(m.group(1)))):   # logged already
        continue
    out.mkdir(parents=True, exist_ok=True)
    for key, value in re.findall(r"(\w+) (-?[\d.]+(?:e-?\d+)?)(?:,|$)", m.group(2)):
        with open(out / f"{key}.csv", "a") as f:                  # after the intermediate evals
            f.write(f"{int(m.group(1))},{float(value)}\n")
    print(f"{txt.parent.name}: rescued eval logged ({m.group(2)[:120]})")
PY
  exit 0
fi

SECS=${1:-570}
# RUNS (the header): TEMPORAL[_POOL]_sSEED each; default the three encoders x SEEDS
runs=${RUNS:-$(for t in mamba none gru; do for s in ${SEEDS:-0 1}; do echo -n "${t}_s$s "; done; done)}
specs=()
for run in $runs; do
  seed=${run##*_s}; kind=${run%_s*}; temporal=${kind%%_*}; pool=auto; [ "$kind" != "$temporal" ] && pool=${kind#*_}
  case "$temporal" in
    mamba|none|gru) ;; *) echo "RUNS: '$run' is not TEMPORAL[_POOL]_sSEED (TEMPORAL mamba, none or gru)"; exit 2 ;;
  esac
  graph=$GRAPH; [ $temporal = gru ] && graph=${GRU_GRAPH:-$GRAPH}
  specs+=("forest_${run}|--config configs/drone/gpu_forest.yaml model.temporal=$temporal model.pool=$pool seed=$seed train.cuda_graph=$graph train.refill_replay=true device=$DEVICE ${EXTRA:-}")
done
BEFORE="bash $HERE/device_drone.sh --before" OMP_NUM_THREADS=1 AGENT=vmamba_td3 PACK_ALL=1 \
  bash "$HERE/device_runs.sh" "$SECS" "${specs[@]}"
