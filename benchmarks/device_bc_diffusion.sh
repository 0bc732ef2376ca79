#!/bin/bash
# Issue 20's open half on the GPU host: DP3 UNet vs Mamba Policy (diffusion BC), denoisers unet,
# mamba1 and mamba1 without XMamba's attention sub-block (mamba1_noattn: policy.attention=false),
# tasks push + pick_place, seeds 0 + 1: 12 runs side by side on the one H200, at the last grid's
# settings (benchmarks/results/bc_diffusion_gpu_grid.md: widths UNet [64,128,256], Mamba [16,32,64],
# batch 512, lr 1e-3, warm-up 300 then cosine, CUDA graphs), to STEPS (default 3600) steps each,
# across several calls; then the float16 exports come back and are evaluated here on the CPU.
#
#   bash benchmarks/device_bc_diffusion.sh [SECONDS]    # default 570; carry ["gpu_carry"]; timeout_s >= SECONDS + 20
#
# Give SECONDS <= the device time left minus ~40 s: everything comes back only at the end of a call.
# Each call: setup (the py3.12 wheels into /tmp/site, pybullet built from gpu_carry/: ~90 s, first call
# only), the datasets (first call only: agents/bc_diffusion.py generate --episodes 100 --seed 0, both
# tasks at once; 5 episodes took 8 s here (nice, 1 thread; 6 s of it start-up), 15 took 11 s:
# ~0.35 s an episode, so 100 take ~45 s; 2026-12-04, pick_place 100 + 50 held-out: 84 s; since then each
# generate records with --workers GEN_WORKERS processes, byte-identical data: on this 2-core machine 30
# pick_place demos took 20.0 s in one process, 14.9 s in two), then benchmarks/bc_diffusion_grid.py --resume trains
# (or continues) every run until SECONDS - RESERVE (45 s) after the call began. A checkpoint comes every
# 100 steps (CKPT_EVERY), so a stop loses at most that. While the machine stays warm the next call
# continues from its disk (runs/device/bc_grid3).
#
# Why 3600 steps (the arithmetic). The last grid fits "the processes time-slice the GPU, a run's step
# costs what it costs alone": 8 runs x 1600 steps took 456 s; the single-process H100 step times
# (UNet 22.4 ms, mamba1 34.0, mamba2 38.0, bidirectional 42.9 at batch 512) predict 2 x 1600 x 137 ms
# = 440 s; 4 runs x 3000 steps took 421 s (predicted 412). Here one step of every run costs, per
# (task, seed), UNet 22.4 + mamba1 34.0 + mamba1_noattn ~26 (one Mamba + MLP sub-block per XMamba
# block instead of two) = ~82 ms, x 4 = ~330 ms for the 12 runs (up to 362 ms if dropping attention
# saved nothing; the Triton Mamba1 scan, new since that grid, may make mamba1 cheaper).
# Training time in a session: call 1 ~360 s (570 - 135 s setup and data - 45 s reserve - ~30 s start of
# 12 processes and their graph capture), calls 2 and 3 ~475 s each (also minus ~16 s, half a
# checkpoint interval lost at the previous stop): ~1300 s -> 1300 / 0.33 = ~3900 steps a run, if the
# third call gets its full 570 s. So STEPS=3600 (1190 s, ~10% margin) in 3 calls of one session, 30
# device-minutes. 6000-10000 steps for all 12 (2000-3300 s) do not fit a session, and checkpoints
# cannot carry over to the next one (all 12 latest checkpoints are 502 MB, 32 parts of 15 MiB, see
# MODE=ckpt, and a call carries in 64 MiB). The same device time trains ONE task's 6 runs for twice the steps:
# TASKS=push STEPS=7200 in one session, TASKS=pick_place STEPS=7200 in the next (use another ROOT per
# task if both run on one warm machine). Measured 2026-12-04 (benchmarks/results/bc_diffusion_gpu_push7200.md):
# TASKS=push STEPS=7200 took calls of 570, 570 and (FINAL=1) 585 s, 512 + 513 + 523 s of wall and
# 1,623 s of device time; 353 + 494 + 498 s of training; all six runs done with ~30 s to spare.
# TASKS=pick_place STEPS=7200 (benchmarks/results/bc_diffusion_gpu_pick_place7200.md, the same calls): 513 + 513
# + 540 s of wall, 1,626 s of device time, 335 + 489 + 505 s of training; UNet and mamba1_noattn reached 7,200,
# mamba1 6,780 / 6,813 (the first call's setup + data took 174 s; the FINAL call's exports took 12 s of the
# 45 s RESERVE: RESERVE=20 there would have given mamba1 ~25 s more, ~330 steps at its 13 steps/s alone).
# Left open there: the Mamba denoisers' held-out error still fell 3% per 600 steps at 7,200. A session's
# ~1,340 s of training fits TASKS=pick_place DENOISERS=mamba1_noattn STEPS=14400 (two runs; two mamba1 runs
# alone went 12.8-13.5 steps/s, mamba1_noattn steps ~1.2x cheaper: ~16 steps/s, ~900 s). Measured 2026-12-04 (late;
# benchmarks/results/bc_diffusion_gpu_pick_place14400.md): calls of 570, 570 and (FINAL=1 KEEP_CKPT=1 RESERVE=20) 240 s,
# 512 + 514 + 111 s of wall; 375 + 493 + 76 s of training at 15.8-17.9 steps/s a run; setup + data 133 s (pybullet
# 71 s, generate --workers 8); then TASKS=pick_place DENOISERS=unet SEEDS=0 STEPS=14400 FINAL=1 RESERVE=20 ... 480:
# one UNet run alone, 47 steps/s, 14,400 steps in 361 s, 398 s of wall. 1,687 device-s for the four calls.
# Next (push, whose 7,200-step runs logged no held-out error; estimated from these rates, not run): the same
# four calls with TASKS=push, the last one DENOISERS=unet SEEDS="0 1" STEPS=7200 (2 x 7,200 x ~21 ms = ~300 s
# of GPU). Closed-loop success between the ends (the held-out error does not rank it: pick_place's UNet
# scored 66.0% at 7,200 and 54.5% at 14,400 with the same error, most of the drop cubes released into the bin
# then an empty gripper closed, which the env's success rule misses) needs EXTRA="train.eval_every_steps=3600 eval.episodes=50": the
# in-training eval, tested on the CPU only; smoke it first on the GPU (a scratch ROOT, STEPS=200,
# train.eval_every_steps=100 eval.episodes=2), and budget ~40 s an eval (estimated). After each call, the status lines give every run's step and
# the projected training seconds left at the measured rates.
#
# Held-out demos (since 2026-12-04): the first call also generates VAL_EPISODES (default 50; 0: none)
# demos per task with --seed 1 into data/manip_val/<task>, and every new run validates its EMA policy on
# them every VAL_EVERY (300) steps (data.val_path, train.val_every_steps: val/loss, val/open_loop_error in
# its metrics): whether a run memorises its 100 demos or still generalises better, over training
# (bc_diffusion_gpu_push7200.md found the UNet's 0.006 on its demos to be 0.134 on unseen ones at the end).
# Smoke measured 2026-12-04: TASKS=push DENOISERS="unet mamba1" SEEDS=0 ... smoke 200: 31 s, val rows at 20/40/60.
# What comes back ($OUT), each call: runs.tgz (every run's config.yaml, metrics CSVs, per-run training
# logs, grid.log, status.txt; no checkpoints, no exports). When every run has reached STEPS (or with
# FINAL=1: export each run at its latest checkpoint whatever its step, for a session that runs out):
# also exports.tar.partNN, one tar of every run's export/ckpt_<step>_float16.pt split in 15 MiB parts
# (12 exports, measured here at these widths: 4 x 10.9 + 4 x 2.8 + 4 x 2.2 MB = 63.4 MB, 5 parts; so 6
# files in all, the limit is 8; TASKS=push alone: 3 parts).
# KEEP_CKPT=1 (with the exports): the latest training checkpoints too, in 15 MiB parts, if all fit 8 files.
# MODE=ckpt PART_FROM=N (no training): one tar of every run's latest training checkpoint (model, EMA,
# AdamW moments; measured: UNet 86.7 MB, mamba1 21.6, mamba1_noattn 17.1; 12 runs 502 MB = 32 parts)
# split in 15 MiB parts, parts N..N+6 this call, and runs.tgz; the count is printed ("N parts"); call
# again with PART_FROM=N+7 while the machine is warm (5 calls for all 12: only worth it to keep them).
# AFTER_TESTS="tests/test_x.py ..." (FINAL=1 calls): those cuda tests in what is left of SECS, into
# $OUT/gpu_tests_after.txt (4 workers; interrupted at SECS, the file still comes back).
# SEED_RUNS=DIR (in the copied tree, e.g. gpu_carry/bc_grid3): run directories to continue from when
# ROOT has none (only a few checkpoints fit a call's 64 MiB carry).
#
# Then, here (FILES_AT is the call's files_at; the datasets are only needed for --fit):
#   D=runs/manip_grid3; mkdir -p $D && tar xzf FILES_AT/runs.tgz -C $D
#   cat FILES_AT/exports.tar.part* | tar xf - -C $D/bc_diffusion       # RUN/export/ckpt_<step>_float16.pt
#   for t in push pick_place; do python agents/bc_diffusion.py generate --task $t --episodes 100 --out data/manip/$t --seed 0; done
#   R=$(ls -d $D/bc_diffusion/push_mamba1_s0-*); OMP_NUM_THREADS=1 python agents/bc_diffusion.py eval $R --episodes 1 --no-video --out /tmp/warm
#   ls -d $D/bc_diffusion/*/ | xargs -P 2 -I{} sh -c 'OMP_NUM_THREADS=1 nice -n 15 python agents/bc_diffusion.py eval {} --episodes 50 --no-video > {}/eval50.log 2>&1'
#   OMP_NUM_THREADS=1 python benchmarks/bc_diffusion_table.py $D/bc_diffusion/* --fit --out benchmarks/results/bc_diffusion_gpu_grid3.md
# The 1-episode eval first builds the C++ CPU scan (~1 min, cached after), which would otherwise land
# in the first Mamba eval's inference times (seen in the smoke: p95 16.5 s a chunk). 50 episodes of
# up to ~100 steps at ~60-90 ms a chunk: roughly 20 min for the 12 runs, two at a time. mamba1_noattn
# is its own table row. A checkpoint part set: cat FILES_AT/ckpt.tar.part* | tar xf - -C $D/bc_diffusion
#
# Smoke on a CPU machine (no GPU; a scratch clone; 12 tiny runs: a stop, a resume, exports, checkpoint parts):
#   git clone -q /work/main /tmp/bcsmoke && cd /tmp/bcsmoke && mkdir -p /tmp/bcsmoke_site && touch /tmp/bcsmoke_site/.mambazoo_ready
#   smoke() { s=$1; shift; env SITE=/tmp/bcsmoke_site PYBULLET=0 DEVICE=cpu GRAPH=false EPISODES=2 VAL_EPISODES=2 VAL_EVERY=20 STEPS=60 CKPT_EVERY=10 \
#     BATCH=8 WARMUP=5 UNET_DIMS="16 32 64" MAMBA_DIMS="8 16 32" EXTRA=train.log_every_steps=10 "$@" \
#     nice -n 15 bash benchmarks/device_bc_diffusion.sh $s; }
#   smoke 130 OUT=/tmp/bcsmoke_out1    # stops after ~73 s of training, each run at step 10-20 (0/12 done)
#   smoke 400 OUT=/tmp/bcsmoke_out2    # resumes all 12 (a run stopped before its first checkpoint starts again); done, exports: 2 parts
#   smoke 60 OUT=/tmp/bcsmoke_out3 MODE=ckpt; smoke 60 OUT=/tmp/bcsmoke_out4 MODE=ckpt PART_FROM=7   # 8 parts of 15 MiB
# Measured at d805599 on this shared 2-core machine: 4.5 min in all; the second call's training 122 s,
# 0.85-2.7 steps/s a run; the checkpoint parts reassembled byte-identical.
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 OMP_NUM_THREADS=1
SECS=${1:-570}; T0=$(date +%s)
OUT=${OUT:-/tmp/out}; SITE=${SITE:-/tmp/site}; MODE=${MODE:-train}
DEVICE=${DEVICE:-cuda}; GRAPH=${GRAPH:-true}; RESERVE=${RESERVE:-45}
TASKS=${TASKS:-push pick_place}; SEEDS=${SEEDS:-0 1}; DENOISERS=${DENOISERS:-unet mamba1 mamba1_noattn}
STEPS=${STEPS:-3600}; CKPT_EVERY=${CKPT_EVERY:-100}; EPISODES=${EPISODES:-100}
UNET_DIMS=${UNET_DIMS:-64 128 256}; MAMBA_DIMS=${MAMBA_DIMS:-16 32 64}; BATCH=${BATCH:-512}; WARMUP=${WARMUP:-300}
ROOT=${ROOT:-runs/device/bc_grid3}
mkdir -p "$OUT" "$ROOT/bc_diffusion"
say() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }

# --- setup (as benchmarks/device_runs.sh)
. benchmarks/device_site.sh; install_site "$SITE" || exit 1   # py312 wheels (+ diffusers' if carried)
if [ "${PYBULLET:-1}" = 1 ] && [ ! -f "$SITE/.pybullet_ready" ]; then   # generate needs it (the env)
  bash gpu_carry/build_pybullet.sh gpu_carry || exit 1                  # installs into /tmp/site
  touch "$SITE/.pybullet_ready"
fi
export PYTHONPATH=$SITE:$PWD MAMBAZOO_CPU_SCAN=${MAMBAZOO_CPU_SCAN:-0}
python3 -c "import diffusers" 2>/dev/null || { echo "no diffusers on this host: carry gpu_carry/diffusion/ (bash benchmarks/gpu_carry.sh makes it)"; exit 1; }
say "setup done; $(nproc --all) cpus; $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda")')"

pack_records() {   # runs.tgz: configs, metrics, logs; no checkpoints, no exports
  tar czf "$OUT/runs.tgz" --exclude=checkpoints --exclude=export -C "$ROOT" bc_diffusion $(cd "$ROOT" && ls -d logs grid.log status.txt 2>/dev/null)
}
latest_ckpt() { ls "$1"/checkpoints/ckpt_*.pt 2>/dev/null | tail -1; }

pack_ckpt_parts() {   # /tmp/bc_ckpt/ckpt.tar.partNN: every run's latest training checkpoint, 15 MiB parts
  if [ ! -f /tmp/bc_ckpt/.complete ]; then
    rm -rf /tmp/bc_ckpt && mkdir -p /tmp/bc_ckpt
    (cd "$ROOT/bc_diffusion" && for d in */; do c=$(latest_ckpt "${d%/}"); [ -n "$c" ] && echo "$c"; done) > /tmp/bc_ckpt/list
    tar cf - -C "$ROOT/bc_diffusion" -T /tmp/bc_ckpt/list | split -b 15M -d -a 2 - /tmp/bc_ckpt/ckpt.tar.part && touch /tmp/bc_ckpt/.complete
  fi
}

if [ "$MODE" = ckpt ]; then   # the latest training checkpoints, 7 parts a call (+ runs.tgz)
  pack_ckpt_parts
  parts=(/tmp/bc_ckpt/ckpt.tar.part*); from=${PART_FROM:-0}
  say "${#parts[@]} parts of ckpt.tar ($(wc -l < /tmp/bc_ckpt/list) checkpoints); sending parts $from..$(( from + 6 ))"
  for p in "${parts[@]:$from:7}"; do cp "$p" "$OUT/"; done
  pack_records; ls -la "$OUT"; exit 0
fi

rm -rf /tmp/bc_ckpt    # a later MODE=ckpt call packs the checkpoints anew

# --- datasets (first call): every task's demos (seed 0) and its held-out demos (seed 1, VAL_EPISODES,
# data/manip_val/<task>: each new run's validation, val/loss and val/open_loop_error every VAL_EVERY steps)
VAL_EPISODES=${VAL_EPISODES:-50}; VAL_EVERY=${VAL_EVERY:-300}
# every generate records with GEN_WORKERS processes (default: the cores shared by the 2 x tasks generates;
# `nproc --all`, since plain nproc obeys OMP_NUM_THREADS=1): the data do not depend on it
share=$(( $(nproc --all) / (2 * $(echo $TASKS | wc -w)) )); GEN_WORKERS=${GEN_WORKERS:-$(( share > 1 ? share : 1 ))}
for t in $TASKS; do
  [ -f "data/manip/.$t.$EPISODES.done" ] || \
  ( python3 agents/bc_diffusion.py generate --task "$t" --episodes "$EPISODES" --out "data/manip/$t" --seed 0 --quiet --workers "$GEN_WORKERS" \
      > "/tmp/bc_generate_$t.log" 2>&1 && touch "data/manip/.$t.$EPISODES.done"; tail -2 "/tmp/bc_generate_$t.log" ) &
  [ "$VAL_EPISODES" = 0 ] || [ -f "data/manip_val/.$t.$VAL_EPISODES.done" ] || \
  ( python3 agents/bc_diffusion.py generate --task "$t" --episodes "$VAL_EPISODES" --out "data/manip_val/$t" --seed 1 --quiet --workers "$GEN_WORKERS" \
      > "/tmp/bc_generate_val_$t.log" 2>&1 && touch "data/manip_val/.$t.$VAL_EPISODES.done"; tail -1 "/tmp/bc_generate_val_$t.log" ) &
done
wait
for t in $TASKS; do [ -f "data/manip/.$t.$EPISODES.done" ] || { say "dataset $t failed"; exit 1; }
  [ "$VAL_EPISODES" = 0 ] || [ -f "data/manip_val/.$t.$VAL_EPISODES.done" ] || { say "held-out dataset $t failed"; exit 1; }; done
VAL_ARGS=(); [ "$VAL_EPISODES" = 0 ] || VAL_ARGS=(--val-root data/manip_val --val-every "$VAL_EVERY")
say "datasets ready ($GEN_WORKERS recording processes a generate)"

# --- training: every run continued (or started) until SECS - RESERVE
if [ -n "${SEED_RUNS:-}" ] && [ -z "$(ls "$ROOT/bc_diffusion")" ]; then cp -r "$SEED_RUNS"/* "$ROOT/bc_diffusion/"; fi
left=$(( T0 + SECS - RESERVE - $(date +%s) ))
if [ "$left" -gt 30 ]; then
  say "training for up to $left s"
  python3 benchmarks/bc_diffusion_grid.py --tasks $TASKS --denoisers $DENOISERS --seeds $SEEDS --steps "$STEPS" \
    --unet-dims $UNET_DIMS --mamba-dims $MAMBA_DIMS --resume --stop-s "$left" --export none --runs "$ROOT" "${VAL_ARGS[@]}" \
    --set train.batch_size="$BATCH" train.lr=1e-3 train.warmup_steps="$WARMUP" train.checkpoint_every_steps="$CKPT_EVERY" \
          logger=csv device="$DEVICE" train.cuda_graph="$GRAPH" ${EXTRA:-} 2>&1 | tee -a "$ROOT/grid.log" | grep -v "^\[.*start "
fi
say "training stopped"
# the grid rewrites logs/<run>.log each call: keep every call's in logs/<run>.history
for f in "$ROOT"/logs/*.log; do [ -f "$f" ] && { echo "=== call at $(date -u +%FT%TZ)"; cat "$f"; } >> "${f%.log}.history"; done

# --- status: every run's step; the training left at the measured rates
# this call's runs only (ROOT may also hold an earlier call's, e.g. other DENOISERS on the same warm machine)
RUN_NAMES=$(for t in $TASKS; do for d in $DENOISERS; do for s in $SEEDS; do echo -n "${t}_${d}_s$s "; done; done; done)
python3 - "$ROOT" "$STEPS" "$SECS" "$RESERVE" $RUN_NAMES <<'PY' | tee "$ROOT/status.txt"
import csv, sys
from pathlib import Path
root, (steps, secs, reserve), names = Path(sys.argv[1]), map(int, sys.argv[2:5]), set(sys.argv[5:])
n_runs = len(names)
rows = []
for run in sorted((root / "bc_diffusion").glob("*-*")):
    if run.name.split("-")[0] not in names:
        continue
    ck = sorted(run.glob("checkpoints/ckpt_*.pt"))
    f = run / "bc_diffusion" / "scalars" / "train" / "steps_per_s.csv"
    rate = float(list(csv.reader(f.open()))[-1][1]) if f.is_file() else None
    rows.append((run.name, int(ck[-1].stem.split("_")[1]) if ck else 0, rate))
    print(f"{run.name}: step {rows[-1][1]}/{steps}" + (f", last {rate:.2f} steps/s" if rate else ""))
left = [(s, r) for _, s, r in rows if s < steps]
done = len(rows) - len(left)
# the processes time-slice the GPU: with k runs at once, a run at r steps/s costs 1/(k r) s of GPU a step
k = len(left)
if left and all(r for _, r in left):
    eta = sum((steps - s) / (k * r) for s, r in left)
    print(f"{done}/{n_runs} runs done; ~{eta:.0f} s of training left at these rates "
          f"(~{eta / (secs - reserve - 35):.1f} calls of {secs} s)")
else:
    print(f"{done}/{n_runs} runs done")
print("ALL DONE" if done == n_runs else "NOT DONE")
PY

# --- exports when every run is done (or FINAL=1), packed in 15 MiB parts
if grep -q "^ALL DONE" "$ROOT/status.txt" || [ "${FINAL:-0}" = 1 ]; then
  for d in "$ROOT"/bc_diffusion/*-*; do
    c=$(latest_ckpt "$d"); [ -n "$c" ] || continue
    [ -f "$d/export/$(basename "$c" .pt)_float16.pt" ] && continue
    python3 agents/bc_diffusion.py export "$d" --dtype float16 > "$d/export.log" 2>&1 || { say "export of $d failed"; tail -3 "$d/export.log"; } &
  done
  wait
  rm -f "$OUT"/exports.tar.part*
  (cd "$ROOT/bc_diffusion" && ls */export/*_float16.pt) > /tmp/bc_exports.list
  tar cf - -C "$ROOT/bc_diffusion" -T /tmp/bc_exports.list | split -b 15M -d -a 2 - "$OUT/exports.tar.part"
  n=$(ls "$OUT"/exports.tar.part* | wc -l)
  say "$(wc -l < /tmp/bc_exports.list) exports in $n parts"; [ "$n" -le 7 ] || say "WARNING: $n parts + runs.tgz > 8 files"
  # KEEP_CKPT=1: the training checkpoints come back in this call too, when they fit the 8 files
  # (2 mamba1_noattn runs: 2 x 17.1 MB = 3 parts), so a later session can continue the runs (SEED_RUNS)
  if [ "${KEEP_CKPT:-0}" = 1 ]; then
    pack_ckpt_parts; parts=(/tmp/bc_ckpt/ckpt.tar.part*)
    if [ $(( n + ${#parts[@]} + 1 )) -le 8 ]; then cp "${parts[@]}" "$OUT/"; say "${#parts[@]} checkpoint parts ($(wc -l < /tmp/bc_ckpt/list) checkpoints)"
    else say "KEEP_CKPT: ${#parts[@]} checkpoint parts + $n export parts + runs.tgz > 8 files: call again with MODE=ckpt"; fi
  fi
fi
pack_records
# AFTER_TESTS="tests/..." (with FINAL=1): cuda tests in the seconds the call has left, the results already
# under $OUT (a timeout keeps them): a spot check of code changed since the last full `pytest -m cuda`
if [ -n "${AFTER_TESTS:-}" ]; then
  left=$(( T0 + SECS - $(date +%s) ))
  if [ "$left" -gt 20 ]; then
    say "cuda tests for up to $left s: $AFTER_TESTS"
    timeout -s INT "$left" python3 -m pytest -m cuda $AFTER_TESTS -q -rfEs -p no:cacheprovider -n 4 > "$OUT/gpu_tests_after.txt" 2>&1
    tail -3 "$OUT/gpu_tests_after.txt"
  fi
fi
ls -la "$OUT"; say "done"
