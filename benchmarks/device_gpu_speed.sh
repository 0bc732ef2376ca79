#!/bin/bash
# Issue 19's GPU measurements on the lent host, in two device calls chained while the machine is warm:
#
#   bash benchmarks/device_gpu_speed.sh build     # ~9 min: wheels, `pytest -m cuda` WITHOUT mamba-ssm,
#                                                 #   then mamba-ssm + causal-conv1d built into /tmp/site
#   bash benchmarks/device_gpu_speed.sh measure   # ~7 min: `pytest -m cuda` WITH mamba-ssm, then
#                                                 #   benchmarks/gpu_speed.py (the whole table, one run)
#
# Needs in gpu_carry/ (carry ["gpu_carry"]): py312/ (the wheels), build_kernels.sh and the two kernel
# sdists from ../shared/gpu. The built wheels (66 MB) cannot travel: "measure" must follow "build"
# within the warm window (~30 s), else it says so and stops. Results under $OUT:
# gpu_tests_no_mamba_ssm.txt, gpu_tests_mamba_ssm.txt, gpu_speed.{md,csv}, gpu_speed_{train,acting}.png.
set -u
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
MODE=${1:?build or measure}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
T0=$(date +%s)
CUDA_TESTS="tests/test_triton_scan.py tests/test_triton_conv.py tests/test_cuda_kernels.py tests/test_vmamba.py"
versions() { python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|', torch.cuda.get_device_name())"; nvidia-smi --query-gpu=driver_version --format=csv,noheader | sed 's/^/driver /'; }
case $MODE in
  build)
    mkdir -p /tmp/site /tmp/site_nossm
    python3 -m pip install -q --no-index --no-deps --target /tmp/site_nossm gpu_carry/py312/*.whl || exit 1
    export PYTHONPATH=/tmp/site_nossm:$PWD
    { versions; python3 -m pytest -m cuda $CUDA_TESTS -q -rs -p no:cacheprovider; } > "$OUT/gpu_tests_no_mamba_ssm.txt" 2>&1
    tail -3 "$OUT/gpu_tests_no_mamba_ssm.txt"
    echo "tests without mamba-ssm done at +$(( $(date +%s) - T0 )) s"
    cp -r /tmp/site_nossm/. /tmp/site/
    bash gpu_carry/build_kernels.sh gpu_carry 2>&1 | tail -5
    touch /tmp/site/.kernels_ready
    ;;
  measure)
    [ -f /tmp/site/.kernels_ready ] || { echo "no kernels in /tmp/site: the machine went cold after 'build'; run build again"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
    { versions; python3 -m pytest -m cuda $CUDA_TESTS -q -rs -p no:cacheprovider; } > "$OUT/gpu_tests_mamba_ssm.txt" 2>&1
    tail -3 "$OUT/gpu_tests_mamba_ssm.txt"
    echo "tests with mamba-ssm done at +$(( $(date +%s) - T0 )) s"
    python3 benchmarks/gpu_speed.py --out "$OUT" --info "host=lent H200 (16 cores)" 2>&1 | tail -40
    ;;
  *) echo "usage: $0 build|measure"; exit 2;;
esac
ls -la "$OUT"; echo "done at +$(( $(date +%s) - T0 )) s"
