#!/bin/bash
# Assemble gpu_carry/ (ignored; what the device calls carry) on THIS machine, from a fresh checkout:
#
#   bash benchmarks/gpu_carry.sh            # ../shared/gpu + gpu_carry/diffusion/ (~25 MB in all)
#
# gpu_carry/ = a copy of ../shared/gpu (py312/ wheels, the pybullet sdist + build_pybullet.sh, the
# kernel sdists + build_kernels.sh; its README says what each is) plus gpu_carry/diffusion/: the
# Python 3.12 wheels diffusers needs (agents/bc_diffusion.py, tests/test_bc_diffusion.py) that the
# GPU host lacks. ../shared/gpu has none of them, and the host reaches no index, so they are
# downloaded here (pip download, pinned below) and installed there by benchmarks/device_site.sh,
# each only if the host cannot import it already (numpy and Pillow are the host's: not carried).
# Without them every diffusion test and run on the host fails with "the diffusion policy needs
# diffusers' schedulers" (seen on 2026-12-02: 5 failed in `pytest -m cuda tests`).
# A call that needs no diffusers (drone, quadruped) can leave gpu_carry/diffusion/ (11 MB) behind, room
# for checkpoints in the 64 MiB a call sends: carry ["gpu_carry/py312", "gpu_carry/build_pybullet.sh",
# "gpu_carry/pybullet-3.2.7-trim.tar.gz"] (14 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/gpu}
[ -d "$SHARED/py312" ] || { echo "no $SHARED/py312: run from a checkout with ../shared beside it (or SHARED=DIR)" >&2; exit 1; }
rm -rf gpu_carry.tmp && mkdir -p gpu_carry.tmp
cp -r "$SHARED"/. gpu_carry.tmp/ && chmod -R u+w gpu_carry.tmp
# diffusers 0.42.1 and what `from diffusers import DDPMScheduler, DDIMScheduler` imports (python -X
# importtime), less numpy/Pillow; hf_xet (4.3 MB) only serves Hub downloads, which nothing here does
WHEELS="diffusers==0.42.1 huggingface_hub==2.4.0 safetensors==0.8.0 regex==2026.11.19 httpx2==2.16.2
  httpcore2==2.16.2 h11==0.16.0 anyio==4.16.0 truststore==0.10.5 lazy_importer==0.1.0 idna==3.20
  certifi==2026.10.19.post1 click==8.5.1 fsspec==2026.9.0 filelock==4.3.1 packaging==26.4
  typing_extensions==4.16.0 requests==2.34.2 urllib3==2.8.0 charset_normalizer==3.5.3 zipp==4.1.2
  pyyaml==6.0.4 tqdm==4.70.1"
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux1_x86_64 -d gpu_carry.tmp/diffusion $WHEELS 2>&1 | grep -v "^WARNING: Location" || true
[ "$(ls gpu_carry.tmp/diffusion/*.whl | wc -l)" -eq "$(echo $WHEELS | wc -w)" ] || { echo "pip download missed wheels" >&2; exit 1; }
rm -rf gpu_carry && mv gpu_carry.tmp gpu_carry
du -sh gpu_carry gpu_carry/diffusion
