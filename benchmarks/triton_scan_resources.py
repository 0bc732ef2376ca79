"""Static resources of the Triton selective scan's kernels per tiling, for a GPU this machine lacks.

The kernels of networks/ssm/triton_scan.py are compiled for sm_90 (H100/H200) here, without a GPU:
Triton lowers them to PTX and the ptxas it ships (triton/backends/nvidia/bin) assembles them with
-v, which reports registers per thread, spills and the stack. Why: the H200 profile put the
backward at 7x the forward (benchmarks/results/gpu_speed_profile.txt), and a kernel that spills
or holds ~255 registers a thread runs few warps per SM; this tells, between device sessions,
which tilings are worth timing (benchmarks/triton_scan_bench.py times them on the GPU).

    python benchmarks/triton_scan_resources.py                        # the bench's sweep tilings, both kinds
    python benchmarks/triton_scan_resources.py --kind tile --fwd 4,32,4,2 --bwd 4,32,4,2
Writes benchmarks/results/triton_scan_resources.md (--out). Needs triton (no CUDA device).

Both kernel kinds: "tile" ([N, BD, BT] tiles, networks/ssm/triton_scan.py) and "loop" (mamba-ssm's
loop over the states on [BD, BT] tiles, networks/ssm/triton_scan_loop.py).
Columns: registers/thread, spill stores+loads (bytes), shared memory (bytes), convert_layout ops
in the TTGIR (layout changes, each a trip through shared memory) and barriers in the PTX.
Occupancy bound = warps per SM the register file allows (65,536 registers, 2,048 threads).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fwd", nargs="*", default=None, metavar="BD,BT,W,S", help="forward tilings (default: the bench's sweep)")
    p.add_argument("--bwd", nargs="*", default=None, metavar="BD,BT,W,S", help="backward tilings (default: the bench's sweep)")
    p.add_argument("--kind", choices=("tile", "loop", "both"), default="both",
                   help="kernel kind(s); --fwd/--bwd apply to each")
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--unit-stride", action="store_true",
                   help="time strides = 1 (Triton specializes an integer argument equal to 1: inputs contiguous "
                        "along T, as in the bench; the mixer's are strided, the default here)")
    p.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for sm_90")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "triton_scan_resources.md"))
    return p.parse_args(argv)


def compile_kernel(fn, constexprs: dict, warps: int, stages: int, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    # every *_ptr argument a float32 pointer except the int8 reset flags; the rest int32 scalars
    sig = {n: "constexpr" if n in constexprs else ("*i8" if n == "rst_ptr" else "*fp32") if n.endswith("_ptr") else "i32"
           for n in fn.arg_names}
    return triton.compile(ASTSource(fn, sig, constexprs=constexprs), target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=warps, num_stages=stages))


def ptxas_report(ptx: str, arch: int) -> dict:
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}a", src, "-o", os.path.join(d, "k.cubin")],
                           capture_output=True, text=True, timeout=300)
    text = r.stderr
    num = lambda pat: int(m.group(1)) if (m := re.search(pat, text)) else 0  # noqa: E731
    return dict(regs=num(r"Used (\d+) registers"), spill=num(r"(\d+) bytes spill stores") + num(r"(\d+) bytes spill loads"),
                stack=num(r"(\d+) bytes stack frame"))


TIME_STRIDES = ("su_t", "sdt_t", "sz_t", "so_t", "sg_t", "sB_t", "sC_t", "sr_t")


def resources(which: str, cfg: tuple, d_state: int, arch: int, kind: str = "tile", unit_stride: bool = False) -> dict:
    from networks.ssm import triton_scan as ts

    fwd, bwd, tl = ts._kind_kernels(kind)
    BD, BT, W, S = cfg
    ce = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, HAS_RESET=True, SOFTPLUS=True, COMPUTE=tl.float32,
              BD=BD, BN=max(2, 1 << (d_state - 1).bit_length()), BT=BT, NS=S)
    ce.update(dict(HAS_H0=True, SAVE=True) if which == "fwd" else dict(HAS_GLAST=True))
    if unit_stride:
        ce.update({n: 1 for n in TIME_STRIDES if n in (fwd if which == "fwd" else bwd).arg_names})
    k = compile_kernel(fwd if which == "fwd" else bwd, ce, W, S, arch)
    out = ptxas_report(k.asm["ptx"], arch)
    out.update(smem=k.metadata.shared, converts=k.asm["ttgir"].count("convert_layout"),
               barriers=k.asm["ptx"].count("bar.sync") + k.asm["ptx"].count("barrier.sync"))
    regs_per_warp = max(out["regs"], 1) * 32
    out["warps_per_sm"] = min(64, (65536 // regs_per_warp) // W * W)
    return out


def main(argv=None):
    args = parse_args(argv)
    from benchmarks.triton_scan_bench import SWEEPS

    tup = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
    t0 = time.monotonic()
    rows = []
    for kind in ("tile", "loop") if args.kind == "both" else (args.kind,):
        fwd_sweep, bwd_sweep = SWEEPS[kind]
        fwd = [tup(s) for s in args.fwd] if args.fwd is not None else fwd_sweep
        # the backward's BT is its forward's: the bench pairs each backward tiling with every BT
        bwd = [tup(s) for s in args.bwd] if args.bwd is not None else \
            [(bd, bt, w, st) for bt in sorted({c[1] for c in fwd_sweep}) for bd, w, st in bwd_sweep]
        for which, cfgs in (("fwd", fwd), ("bwd", bwd)):
            for cfg in cfgs:
                try:
                    r = resources(which, cfg, args.d_state, args.arch, kind, args.unit_stride)
                except Exception as exc:   # a tiling Triton cannot lower: recorded, the table goes on
                    r = dict(error=f"{type(exc).__name__}: {str(exc)[:100]}")
                rows.append((f"{kind} {which}", cfg, r))
                print(kind, which, cfg, r, flush=True)
    import triton

    lines = ["# Triton scan: static resources per tiling (benchmarks/triton_scan_resources.py)", "",
             f"Command: `{' '.join(['python benchmarks/triton_scan_resources.py', *sys.argv[1:]])}` "
             f"({time.monotonic() - t0:.0f} s); triton "
             f"{triton.__version__}, compiled for sm_{args.arch} on a machine without a GPU, d_state={args.d_state}, "
             "float32, every option on (D, z, delta bias + softplus, resets, h0 / final-state gradient), "
             + ("time strides 1 (contiguous along T, as in the bench)." if args.unit_stride else
                "strides not specialized (the mixer's strided layout; --unit-stride: the bench's contiguous one)."), "",
             "| kernel | BD | BT | warps | stages | registers | spill B | stack B | smem B | convert_layout | barriers | warps/SM bound |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for which, c, r in rows:
        if "error" in r:
            lines.append(f"| {which} | {c[0]} | {c[1]} | {c[2]} | {c[3]} | {r['error']} |||||||")
        else:
            lines.append(f"| {which} | {c[0]} | {c[1]} | {c[2]} | {c[3]} | {r['regs']} | {r['spill']} | {r['stack']} | "
                         f"{r['smem']} | {r['converts']} | {r['barriers']} | {r['warps_per_sm']} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
