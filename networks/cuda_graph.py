"""Acting through a captured CUDA graph, with the recurrent state resident on the GPU.

A policy step at batch 1 is a few dozen tiny kernels; launched from Python each costs
~5-10 us of CPU time, so the GPU idles. ``CudaGraphStep`` captures one step of a
TensorDict module (policy or bare memory) once and replays it:

    step = CudaGraphStep(policy, example_td, feed_keys=["observation", "is_init"])
    out = step(td)          # copies feed_keys in, replays, returns the static outputs
    step.reset_state()      # zero the carried state (or feed is_init=True)

The state keys' ("next", key) outputs are copied back into the input buffers inside the
graph, so the state never leaves the GPU and no TensorDict is built per call. Outputs
are static buffers overwritten by the next call: ``.clone()`` what you keep.

Why not tensordict's ``CudaGraphModule``: it copies the whole input TensorDict in and
clones the output TensorDict out on every call (measured in benchmarks/gpu_speed.py),
which at batch 1 costs more than the replay itself.
"""
from __future__ import annotations

import logging

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase


log = logging.getLogger("mambazoo")


class CudaGraphStep:
    def __init__(self, module, example: TensorDictBase, feed_keys, state_keys=None,
                 warmup: int = 3):
        devices = {t.device.type for t in example.values(True, True)}
        if not torch.cuda.is_available() or devices != {"cuda"}:
            raise ValueError("CudaGraphStep needs an example tensordict with all tensors on CUDA "
                             f"(got {sorted(devices)}); on CPU call the module directly")
        self.module = module
        self.feed_keys = list(feed_keys)
        if state_keys is None:  # TorchRL convention: in_keys that also come out as ("next", key)
            outs = set(getattr(module, "out_keys", []))
            state_keys = [k for k in getattr(module, "in_keys", []) if ("next", k) in outs]
        self.state_keys = list(state_keys)
        missing = [k for k in self.feed_keys + self.state_keys if k not in example.keys(True)]
        if missing:
            raise KeyError(f"example tensordict lacks keys {missing}")
        self.buffers = example.clone()
        with torch.no_grad():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up: autotuning and lazy init stay out of the graph
                for _ in range(warmup):
                    module(self.buffers.clone())
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = module(self.buffers.copy())  # shallow: outputs land beside, not in, the buffers
                for key in self.state_keys:  # advance the resident state in place
                    self.buffers.get(key).copy_(self.out.get(("next", key)))

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        for key in self.feed_keys:
            self.buffers.get(key).copy_(td.get(key), non_blocking=True)
        self.graph.replay()
        return self.out

    def reset_state(self) -> None:
        for key in self.state_keys:
            self.buffers.get(key).zero_()

    def state(self) -> TensorDictBase:
        return self.buffers.select(*self.state_keys)


class CudaGraphPolicy(TensorDictModuleBase):
    """A collector-facing policy that replays a CUDA graph of ``module`` (e.g. a TorchRL actor
    with a recurrent memory) for CUDA inputs and runs it eagerly otherwise.

    The state keys travel in the tensordict (the collector records them for training), so the
    graph does not advance a resident state: every in_key is fed, every out_key is copied out.
    One graph per batch size, captured at first use. Parameters are read by address, so in-place
    optimiser steps are seen by the next replay without re-capture. Sampling inside the graph
    uses CUDA's graph-safe philox generator, but distributions that build tensors from Python
    numbers per call (TorchRL's TanhNormal bounds) copy from the host, which capture forbids:
    graph the deterministic part (trunk -> loc, scale) and sample after it (see
    RecurrentActorCritic.acting_policy). If capture fails anyway, it says so once and acts eagerly.

    Why: an eager step of the LocoMamba policy is several hundred small kernels, whose launch
    cost set the collector's rate (benchmarks/ppo_throughput.py)."""

    def __init__(self, module, in_keys=None, out_keys=None):
        super().__init__()
        self.module = module
        self.in_keys = list(in_keys if in_keys is not None else module.in_keys)
        self.out_keys = list(out_keys if out_keys is not None else module.out_keys)
        self._graphs: dict = {}
        self._failed = False

    def forward(self, td: TensorDictBase) -> TensorDictBase:
        if self._failed or td.device is None or td.device.type != "cuda":
            return self.module(td)
        key = tuple(td.batch_size)
        step = self._graphs.get(key)
        if step is None:
            example = td.select(*self.in_keys).clone()
            try:
                step = self._graphs[key] = CudaGraphStep(self.module, example, feed_keys=self.in_keys,
                                                         state_keys=[])
            except Exception as err:   # an op that cannot be captured: act eagerly, say so once
                torch.cuda.synchronize()
                self._failed = True
                log.warning("CUDA graph capture of the policy failed (%s: %s); acting eagerly",
                            type(err).__name__, str(err).splitlines()[0][:200])
                return self.module(td)
        out = step(td)
        for k in self.out_keys:
            td.set(k, out.get(k).clone())
        return td
