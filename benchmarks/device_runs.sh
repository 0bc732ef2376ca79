#!/bin/bash
# Train (or resume) several runs of one agent side by side on the GPU host within one device call.
#
#   AGENT=vmamba_td3 bash benchmarks/device_runs.sh SECONDS "TAG|ARGS..." ["TAG|ARGS..." ...]
#
# AGENT: agents/<AGENT>.py (default ppo_locomamba; benchmarks/device_quadruped.sh is this script
# with that default). PYBULLET=0 skips the pybullet build (~71 s) for agents that do not need it
# (e.g. vmamba_td3 on mambazoo/PendulumNoVel-v0).
# BEFORE (optional): a command run after setup and before training, e.g. the throughput benchmark.
# Setup on a bare machine: the py3.12 wheels and the pybullet build from gpu_carry/ (copied there
# from ../shared/gpu). Each TAG is one run under runs/device/$AGENT/TAG-<time>: resumed from
# there when the machine is still warm, else from gpu_carry/runs/ (a run brought back by an earlier
# call) or benchmarks/runs/ (the latest checkpoint of a run, committed for a later session), else
# started with ARGS. Every run is stopped SECONDS after this script started (minus the
# time for packing): every agent checkpoints on SIGTERM (agents/runtime/stop.py) and gets it GRACE s
# before (vmamba_td3 25, ppo_locomamba 45, the others 15) to save the frame or step it is on; GRACE=0
# kills instead (what was trained since the last periodic checkpoint, train.checkpoint_every_*, is lost). Then each run is packed into $OUT: TAG.tgz (config, metrics, eval, log) and the latest checkpoint in <= 15 MiB parts
# (TAG.ckpt.partNN), reassembled with `cat`.
# CKPT_TAGS="A B" (default: every TAG) names the runs whose checkpoint travels back: a call brings back
# at most 8 files of 16 MiB, i.e. about three 21 MB checkpoints; the others stay on the warm machine
# for the next call. EXPORT=1 also writes each run's float16 export (--export) into its TAG.tgz.
# PACK_ALL=1 packs every run's record into one runs.tgz instead of one TAG.tgz each (a call brings
# back at most 8 files: more than 8 runs need it; checkpoints still travel as CKPT_TAGS says).
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SECS=${1:?seconds}; shift
AGENT=${AGENT:-ppo_locomamba}
[ -f "agents/$AGENT.py" ] || { echo "AGENT=$AGENT: no agents/$AGENT.py"; exit 2; }
T0=$(date +%s)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
. benchmarks/device_site.sh; install_site /tmp/site || exit 1   # py312 wheels (+ diffusers' if carried)
if [ "${PYBULLET:-1}" = 1 ] && [ ! -f /tmp/site/.pybullet_ready ]; then
  bash gpu_carry/build_pybullet.sh gpu_carry || exit 1
  touch /tmp/site/.pybullet_ready
fi
export PYTHONPATH=/tmp/site:$PWD
# the C++ CPU scan would JIT-build (~1 min) inside the CPU evals here; the GPU path does not need it
export MAMBAZOO_CPU_SCAN=${MAMBAZOO_CPU_SCAN:-0}
echo "setup done at +$(( $(date +%s) - T0 )) s; $(nproc) cpus; $(python3 -c 'import torch; print(torch.__version__, torch.cuda.get_device_name())')"
if [ -n "${BEFORE:-}" ]; then echo "running: $BEFORE"; bash -c "$BEFORE"; echo "before-command done at +$(( $(date +%s) - T0 )) s"; fi
ROOT=runs/device
mkdir -p $ROOT/$AGENT
# every agent checkpoints on SIGTERM at the frame or step it is on (agents/runtime/stop.py): time for the
# batch it is on and the save (ppo_locomamba's 16,384-step batch took 14-16 s on the H200 with 16 envs,
# benchmarks/runs/ppo_locomamba/flatB-*/device.log; ppo_memory's batches and the BC agents' steps take
# a few seconds at most, not measured there: 15 s)
case $AGENT in vmamba_td3) GRACE=${GRACE:-25};; ppo_locomamba) GRACE=${GRACE:-45};; *) GRACE=${GRACE:-15};; esac
# run_until (benchmarks/device_site.sh, sourced above): SIGTERM GRACE s before the deadline, SIGKILL at it
run_dir() { ls -d $ROOT/$AGENT/"$1"-* 2>/dev/null | tail -1; }
STOP=$(( T0 + SECS - 20 ))   # leave time for packing
pids=()
for spec in "$@"; do
  tag=${spec%%|*}; args=${spec#*|}
  dir=$(run_dir "$tag")
  for src in gpu_carry/runs benchmarks/runs; do   # carried back from an earlier call / committed for the next session
    if [ -z "$dir" ] && ls -d $src/$AGENT/"$tag"-* >/dev/null 2>&1; then
      cp -r "$(ls -d $src/$AGENT/"$tag"-* | tail -1)" $ROOT/$AGENT/ && dir=$(run_dir "$tag")
    fi
  done
  if [ -n "$dir" ] && ! ls "$dir"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then
    # stopped before its first checkpoint: nothing to resume (--resume would fail), so start again
    echo "[$tag] $dir has no checkpoint: starting it again"; rm -rf "$dir"; dir=""
  fi
  left=$(( STOP - $(date +%s) ))
  if [ -n "$dir" ]; then
    # on resume, ARGS' key=value overrides apply (say more envs); its --config is the run's own
    over=$(echo "$args" | sed -E 's/--config +[^ ]+//')
    echo "[$tag] resuming $dir for $left s: $over"
    run_until $left "$ROOT/$tag.log" python3 agents/$AGENT.py --resume "$dir" $over &
  else
    echo "[$tag] new run for $left s: $args"
    run_until $left "$ROOT/$tag.log" python3 agents/$AGENT.py $args name=$tag run_root=$ROOT &
  fi
  pids+=($!)
done
wait "${pids[@]}"
echo "training stopped at +$(( $(date +%s) - T0 )) s"
for spec in "$@"; do
  tag=${spec%%|*}; dir=$(run_dir "$tag")
  [ -n "$dir" ] || { echo "[$tag] no run directory"; tail -20 "$ROOT/$tag.log"; continue; }
  grep -E "^frames|error|Error" "$ROOT/$tag.log" | tail -4
  ck=$(ls "$dir"/checkpoints/ckpt_*.pt 2>/dev/null | tail -1)
  # keep only the latest checkpoint of the run (one per run travels back; evals run on the CPU machine)
  [ -n "$ck" ] && for old in "$dir"/checkpoints/ckpt_*.pt; do [ "$old" = "$ck" ] || rm -f "$old"; done
done
for spec in "$@"; do
  tag=${spec%%|*}; dir=$(run_dir "$tag"); [ -n "$dir" ] || continue
  if [ "${EXPORT:-0}" = 1 ] && ls "$dir"/checkpoints/ckpt_*.pt >/dev/null 2>&1; then
    python3 agents/$AGENT.py --export "$dir" --out "$dir/export/$tag.pt" 2>&1 | tail -1 &
  fi
done
wait
rm -f /tmp/runs_pack.tar
for spec in "$@"; do
  tag=${spec%%|*}; dir=$(run_dir "$tag"); [ -n "$dir" ] || continue
  cp "$ROOT/$tag.log" "$dir/device.log"
  if [ "${PACK_ALL:-0}" = 1 ]; then
    tar rf /tmp/runs_pack.tar --exclude=checkpoints --exclude=replay --exclude='*.gif' --exclude='*.mp4' -C "$(dirname "$dir")" "$(basename "$dir")"
  else
    tar czf "$OUT/$tag.tgz" --exclude=checkpoints --exclude=replay --exclude='*.gif' --exclude='*.mp4' -C "$(dirname "$dir")" "$(basename "$dir")"
  fi
  case " ${CKPT_TAGS-$tag} " in *" $tag "*) ;; *) continue;; esac
  ck=$(ls "$dir"/checkpoints/ckpt_*.pt 2>/dev/null | tail -1)
  [ -n "$ck" ] && split -b 15M -d "$ck" "$OUT/$tag.$(basename "$ck").part"
done
[ -f /tmp/runs_pack.tar ] && gzip -c /tmp/runs_pack.tar > "$OUT/runs.tgz" && rm -f /tmp/runs_pack.tar
ls -la "$OUT"; echo "done at +$(( $(date +%s) - T0 )) s"
