"""A whole training step -- batch sampling, loss, backward, optimiser, EMA -- as one CUDA graph.

Small models on a GPU are bound by kernel launches: a Mamba UNet step is ~10^4 tiny kernels, each
costing the CPU several microseconds to launch while the GPU idles. Capturing the whole step and
replaying it costs one launch. This is PyTorch's "whole network capture" recipe
(https://pytorch.org/docs/stable/notes/cuda.html#whole-network-capture), plus what a real training
loop needs around it:

- the learning rate stays schedulable: the optimiser must be ``capturable`` and its lr a device
  tensor (torch's schedulers ``fill_`` a tensor lr in place, so the graph reads the new value);
- capture needs warm-up iterations that really update the weights, the optimiser moments and the
  EMA, and draw random numbers: all of that is snapshot before and put back after, in place (the
  graph holds these tensors' addresses), and so is the CUDA RNG, so a graphed run starts from
  exactly the state an eager one would;
- checkpoints stay portable: ``portable_optimizer_state`` turns the tensor lr back into a float
  and the capturable flag off, so a graphed run's checkpoint resumes on a CPU and vice versa.

Random numbers inside the graph come from the default CUDA generator (graph-safe: each replay
advances its offset as the eager ops would), which the checkpoints' RNG state includes.

    step = GraphedTrainStep(step_fn, [policy, ema], optim)   # step_fn() -> loss, no zero_grad inside
    loss = step()                                              # replay; loss is a static buffer
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


def make_capturable(optim: torch.optim.Optimizer, device: torch.device) -> None:
    """Switch an (Adam-family) optimiser to capturable mode in place: lr as a device tensor, step
    counters on the device (a resumed state has them on the CPU)."""
    for group in optim.param_groups:
        group["capturable"] = True
        group["lr"] = torch.tensor(float(group["lr"]), device=device)
    for st in optim.state.values():
        if "step" in st:
            st["step"] = st["step"].to(device=device, dtype=torch.float32)


def portable_optimizer_state(state: dict) -> dict:
    """``optim.state_dict()`` of a capturable optimiser -> the same state as an ordinary one would
    save (float lr, capturable off, step counters on the CPU), so checkpoints do not depend on
    whether the run was graphed."""
    groups = [{**g, "lr": float(g["lr"]), "capturable": False} for g in state["param_groups"]]
    per_param = {k: {n: (v.cpu() if n == "step" else v) for n, v in st.items()} for k, st in state["state"].items()}
    return {"state": per_param, "param_groups": groups}


def portable_schedule_state(state):
    """An lr scheduler's state_dict with tensor learning rates (from a capturable optimiser) as floats."""
    if isinstance(state, dict):
        return {k: portable_schedule_state(v) for k, v in state.items()}
    if isinstance(state, list):
        return [portable_schedule_state(v) for v in state]
    return float(state) if torch.is_tensor(state) and state.dim() == 0 else state


class NotCapturable(ValueError):
    """A module that a CUDA graph cannot capture: raised before anything is run, so the caller can
    train eagerly. (A capture that fails midway cannot be undone: it leaves the process's CUDA RNG
    mid-capture, and every later random op fails with "Offset increment outside graph capture".)"""


def uncapturable(modules: list[nn.Module]) -> str | None:
    """Why these modules cannot be captured, or None. cuDNN's RNN kernels (nn.GRU / nn.LSTM) fail
    capture with cudaErrorStreamCaptureInvalidated (seen for training on an H200 and for acting
    on an H100). An RNN inside a module that declares ``graph_safe_rnns = True`` is not one: that
    module runs it without cuDNN on CUDA (networks.models.vmamba.TemporalGRU)."""
    for m in modules:
        safe = [name for name, sub in m.named_modules() if getattr(sub, "graph_safe_rnns", False)]
        for name, sub in m.named_modules():
            if any(prefix == "" or name.startswith(prefix + ".") for prefix in safe):   # inside one
                continue
            if isinstance(sub, nn.RNNBase) and torch.backends.cudnn.enabled:
                return f"{name or type(m).__name__} is a cuDNN {type(sub).__name__}, whose kernels CUDA graphs cannot capture"
    return None


class GraphedTrainStep:
    """Capture ``step_fn`` once (after ``warmup`` eager iterations on a side stream) and replay it.

    step_fn() must do a whole step except zeroing gradients (the captured backward writes fresh
    gradients each replay) and return the loss (any tensor: TD3 returns its losses stacked).
    ``modules`` are every module whose parameters or buffers step_fn changes (the model, its EMA,
    target networks); ``optim`` its optimiser, or a list of them (TD3's actor and critic), already
    capturable.
    """

    def __init__(self, step_fn: Callable[[], Tensor], modules: list[nn.Module],
                 optim: torch.optim.Optimizer | list[torch.optim.Optimizer], warmup: int = 3):
        optims = list(optim) if isinstance(optim, (list, tuple)) else [optim]
        if not all(g.get("capturable") and torch.is_tensor(g["lr"]) for o in optims for g in o.param_groups):
            raise ValueError("GraphedTrainStep needs a capturable optimiser with a tensor lr: call make_capturable first")
        reason = uncapturable(modules)
        if reason:
            raise NotCapturable(reason)
        tensors = [t for m in modules for t in (*m.parameters(), *m.buffers())]
        saved = [t.detach().clone() for t in tensors]
        had_state = [bool(o.state) for o in optims]
        saved_optim = {id(t): t.clone() for o in optims for st in o.state.values() for t in st.values()
                       if torch.is_tensor(t)}
        saved_rng = torch.cuda.get_rng_state()

        def zero_grad():
            for o in optims:
                o.zero_grad(set_to_none=True)

        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):    # lazy init (optimiser state, cuBLAS handles) stays out of the graph
                for _ in range(warmup):
                    zero_grad()
                    step_fn()
            torch.cuda.current_stream().wait_stream(side)
            zero_grad()                        # the graph allocates the gradients it writes
            self.graph = torch.cuda.CUDAGraph()
            # captured on the warm-up's stream: autograd's gradient-accumulation nodes, made during
            # the warm-up, then run on the stream they were made on
            with torch.cuda.graph(self.graph, stream=side):
                self.loss = step_fn()
        except Exception as exc:
            raise RuntimeError(f"CUDA graph capture of the training step failed ({type(exc).__name__}: {exc}); "
                               "this process's CUDA RNG stays mid-capture after that, so the run stops here "
                               "(its checkpoints are untouched): resume it with train.cuda_graph=false") from exc
        finally:  # undo the warm-up in place (the graph keeps pointers to these very tensors)
            torch.cuda.synchronize()
            with torch.no_grad():
                for t, s in zip(tensors, saved):
                    t.copy_(s)
                for o, had in zip(optims, had_state):
                    for st in o.state.values():
                        for t in st.values():
                            if torch.is_tensor(t):
                                if had:
                                    t.copy_(saved_optim[id(t)])
                                else:        # a fresh run: moments and step counters start at zero
                                    t.zero_()
            torch.cuda.set_rng_state(saved_rng)

    def __call__(self) -> Tensor:
        self.graph.replay()
        return self.loss
