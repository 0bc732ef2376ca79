#!/bin/bash
# Issue 19's GPU measurements on the lent host, in two device calls chained while the machine is warm:
#
#   bash benchmarks/device_gpu_speed.sh build     # ~8 min: wheels; mamba-ssm + causal-conv1d built into
#                                                 #   /tmp/site in the background (setsid) while
#                                                 #   `pytest -m cuda tests` runs WITHOUT mamba-ssm
#   bash benchmarks/device_gpu_speed.sh measure   # ~8 min: `pytest -m cuda tests` WITH mamba-ssm (-n 4), then
#                                                 #   benchmarks/gpu_speed.py --profile (the whole table, one run)
#   bash benchmarks/device_gpu_speed.sh tests     # ~8 min, one call: "build" then the tests WITH mamba-ssm
#                                                 #   (4 pytest workers on the one GPU), no measurement
#   bash benchmarks/device_gpu_speed.sh ssm_tests # ~2.5 min, after "build": only the tests WITH mamba-ssm
#   TESTS=0 ... measure                           # gpu_speed.py alone (~7.5 min), after ssm_tests: the
#                                                 #   table grew (time-contiguous and Triton-step rows) and
#                                                 #   tests + table no longer fit one 600 s call
#   SWEEP=1 ... build                             # + benchmarks/triton_scan_bench.py's forward and backward
#                                                 #   tiling sweeps (~3-4 min) while the build finishes; the
#                                                 #   fastest pair is then used by "measure" (and printed);
#                                                 #   inputs in the mixers' layout (channels contiguous),
#                                                 #   SWEEP_LAYOUT=time for mamba-ssm's (T contiguous)
#
# Needs gpu_carry/ (carry ["gpu_carry"]; `bash benchmarks/gpu_carry.sh` makes it): py312/ (the wheels),
# diffusion/ (diffusers' wheels, for the BC-diffusion tests), build_kernels.sh and the two kernel
# sdists from ../shared/gpu. The built wheels (66 MB) cannot travel: "measure" must follow "build"
# within the warm window (~30 s), else it says so and stops. "build" stops early (no kernels) when the
# Triton tests fail, since then there is nothing to measure. Results under $OUT:
# gpu_tests_no_mamba_ssm.txt, triton_scan_layout_{channels,time}.md (build: the scan alone, both input
# layouts, default tilings), gpu_tests_mamba_ssm.txt, gpu_speed.{md,csv} (with the "time-contiguous"
# rows of triton_scan.SCAN_INPUTS), gpu_speed_{train,acting}.png, gpu_speed_profile.txt.
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
MODE=${1:?build, ssm_tests, measure or tests}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
CUDA_TESTS="tests"   # every test marked cuda (45: Triton scan/conv, kernels, VMamba, TD3 and BC CUDA graphs)
versions() { python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"; nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/driver /'; }
# cuda_tests NAME SITE [LINE]: every cuda-marked test (4 workers on the one GPU) with SITE's packages,
# the versions (and LINE) at the top of $OUT/gpu_tests_NAME.txt; returns pytest's status
cuda_tests() {
  { versions; [ -n "${3:-}" ] && echo "$3"
    PYTHONPATH=$2:$PWD python3 -m pytest -m cuda $CUDA_TESTS -q -rfEs -p no:cacheprovider -n 4 --durations=8; } > "$OUT/gpu_tests_$1.txt" 2>&1
  local rc=$?
  tail -25 "$OUT/gpu_tests_$1.txt"
  echo "tests ($1, rc $rc) done at +$(( $(date +%s) - T0 )) s"
  return $rc
}
case $MODE in
  build|tests)
    mkdir -p /tmp/site /tmp/site_nossm
    . benchmarks/device_site.sh; install_site /tmp/site_nossm || exit 1   # py312 wheels + diffusers'
    cp -r /tmp/site_nossm/. /tmp/site/
    # the kernel build (~7 min, nvcc) overlaps the tests; it writes only /tmp/w, /tmp/b and /tmp/site
    setsid bash -c "bash gpu_carry/build_kernels.sh gpu_carry > /tmp/kernels.log 2>&1 && touch /tmp/site/.kernels_ready" &
    export PYTHONPATH=/tmp/site_nossm:$PWD
    cuda_tests no_mamba_ssm /tmp/site_nossm
    if grep -qE "^FAILED tests/test_(triton|cuda_kernels|vmamba)" "$OUT/gpu_tests_no_mamba_ssm.txt"; then
      pkill -f build_kernels.sh; pkill -f "pip wheel"; echo "kernel tests failed: no build, nothing to measure"; exit 1
    fi
    # the layout question of benchmarks/results/triton_scan_gap_analysis.md, while the kernels build: the
    # scan alone at the default tilings with its inputs as the layers pass them (channels: transposed
    # [Bt, T, C], strided along T) and time-contiguous (time: what SCAN_INPUTS="contiguous" hands it)
    for lay in channels time; do
      timeout -s INT 150 python3 benchmarks/triton_scan_bench.py --lengths 1024 4096 --torch-max-len 0 --sweep-len 0 \
        --repeats 7 --layout "$lay" --out "$OUT/triton_scan_layout_$lay.md" 2>&1 | tail -5
    done
    echo "layouts done at +$(( $(date +%s) - T0 )) s"
    if [ "${SWEEP:-0}" = 1 ]; then
      # the layout the mixers pass (channels contiguous: the Mamba1 memory and SS2D); SWEEP_LAYOUT=time: mamba-ssm's
      python3 benchmarks/triton_scan_bench.py --lengths 1024 4096 --torch-max-len 0 --repeats 7 --sweep-len 4096 --budget-s 200 \
        --layout "${SWEEP_LAYOUT:-channels}" \
        --out "$OUT/triton_scan.md" --best-env /tmp/triton_best.env 2>&1 | tail -4
      cat /tmp/triton_best.env 2>/dev/null; echo "sweep done at +$(( $(date +%s) - T0 )) s"
    fi
    while [ ! -f /tmp/site/.kernels_ready ] && pgrep -f build_kernels.sh >/dev/null; do sleep 5; done
    tail -4 /tmp/kernels.log; cp /tmp/kernels.log "$OUT/kernels_build.log"
    [ -f /tmp/site/.kernels_ready ] || { echo "kernel build failed"; exit 1; }
    [ "$MODE" = tests ] && cuda_tests mamba_ssm /tmp/site
    ;;
  ssm_tests|measure)   # ssm_tests: the tests only; measure: the tests (unless TESTS=0), then the table
    [ -f /tmp/site/.kernels_ready ] || { echo "no kernels in /tmp/site: the machine went cold after 'build'; run build again"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
    TILING="default kind and tilings (networks/ssm/triton_scan.py)"
    if [ -f /tmp/triton_best.env ]; then . /tmp/triton_best.env; TILING="MAMBAZOO_TRITON_SCAN_KIND=${MAMBAZOO_TRITON_SCAN_KIND:-default} MAMBAZOO_TRITON_SCAN=$MAMBAZOO_TRITON_SCAN MAMBAZOO_TRITON_SCAN_BWD=$MAMBAZOO_TRITON_SCAN_BWD (the sweep's fastest)"; fi
    echo "Triton scan: $TILING"
    [ "$MODE" = measure ] && [ "${TESTS:-1}" = 0 ] || cuda_tests mamba_ssm /tmp/site "Triton scan: $TILING"
    [ "$MODE" = measure ] && python3 benchmarks/gpu_speed.py --out "$OUT" --profile --info "host=lent H200 (16 cores)" "triton scan=$TILING" 2>&1 | tail -60
    ;;
  *) echo "usage: $0 build|ssm_tests|measure|tests"; exit 2;;
esac
ls -la "$OUT"; echo "done at +$(( $(date +%s) - T0 )) s"
