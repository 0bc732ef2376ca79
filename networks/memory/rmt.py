"""Kind ``rmt``: Recurrent Memory Transformer (Bulatov et al., 2022) over fixed-size segments.

A causal pre-norm transformer runs over one *segment* of ``segment`` steps together with
``num_mem_tokens`` memory tokens; the memory is the recurrent state carried from segment
to segment, trained with backpropagation through the segments (never detached; the seed's
SmolVLA memory, trained on independent samples, never learned to carry anything).

Layout (the key order of one causal attention; ``M`` = num_mem_tokens, ``S`` = segment)::

    mem_at_end=True  (RMT decoder):  [read M | segment S | write M]
    mem_at_end=False:                [read M | segment S]

* read tokens: the memory state, layer-normed (``mem_norm``), plus a learned read-slot
  embedding. Segment tokens attend causally among themselves and to all read tokens.
* write tokens (``mem_at_end=True``): the same normed memory plus a learned write-slot
  embedding, placed after the segment; they see the read tokens, the whole segment and
  the write tokens before them. Their final-layer hidden states are the new memory.
* ``mem_at_end=False``: no write tokens. A causal model cannot let the leading memory
  tokens see the segment without leaking future steps into earlier outputs, so the new
  memory is the final-layer hidden states at the *last M segment positions* (which have
  seen the read memory and the whole segment). Needs ``num_mem_tokens <= segment``.
* ``read_mem_from_cache=True``: the read memory is not run through the layers as tokens;
  every layer attends to keys/values computed by its own projections from the read
  memory (``kv(ln1(mem_norm(mem) + read_slot))``), a fixed prefix like a KV cache. Same
  as ``False`` in the first layer; cheaper (no attention/FF for read tokens), but the
  read tokens are not refined from layer to layer.

The memory is normalised when read, not when written, so ``mem_norm`` and the slot
embeddings take part in every segment (their gradients exist in both modes whatever the
reset pattern) and the carried memory cannot grow from segment to segment.
Positions inside the segment use a learned embedding ``[S, H]``.

State (per sample, ``H`` = hidden_size):

* ``mem`` ``[M, H]``: the memory the current segment reads.
* ``buf`` ``[S, H]``: the last ``S`` in-projected inputs of the episode (a sliding window,
  zero before the episode start); the current unfinished segment is its last ``k`` rows.
* ``pos`` ``[1]``: ``0`` = fresh (the primer's zero state and every reset: the memory is
  the learned initial tokens ``mem_init``, nothing buffered); ``k + 1`` with
  ``0 <= k < S`` = started, ``k`` steps of the current segment buffered. After any step
  ``pos >= 1``, and ``mem`` holds the memory explicitly (``mem_init`` is copied in at the
  first step), so no carried state is ever all zero.

Step mode: the new input joins the window; the transformer runs on [read | the current
partial segment (k+1 tokens) | write]; the output is the one at the newest token, which by
causality equals the sequence-mode output at that position. When the segment completes
(k+1 == S) the memory becomes the written memory and the next segment starts empty.

Sequence mode ``[B, T]``: a segment starts at every reset (``is_init``, or a fresh state at
t=0) and after every completed segment; the carried partial segment at t=0 is rebuilt
from ``buf``. Segments are grouped by their depth in their memory chain (0 = starts from
the carried or initial memory, d = the d-th segment after that); all segments of one
depth, of every row and every episode, go through the layers together (one attention call
per layer), then the next depth reads their written memory. So there are about
``T / segment + 1`` rounds whatever the resets, and the memory is differentiable across
segments. Step and sequence mode run the same segment computation on tensors of the
same shape, so they agree to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

RMT_DEFAULTS = dict(num_heads=4, num_mem_tokens=4, segment=16, ff_mult=4, mem_at_end=True,
                    read_mem_from_cache=False)


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_rmt_options(hidden_size: int, num_heads: int = 4, num_mem_tokens: int = 4,
                      segment: int = 16, ff_mult: int = 4, mem_at_end: bool = True,
                      read_mem_from_cache: bool = False) -> None:
    """Raise ValueError naming the option if the RMT options are not usable."""
    for name, value in (("hidden_size", hidden_size), ("num_heads", num_heads),
                        ("num_mem_tokens", num_mem_tokens), ("segment", segment), ("ff_mult", ff_mult)):
        _positive_int(name, value)
    for name, value in (("mem_at_end", mem_at_end), ("read_mem_from_cache", read_mem_from_cache)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    if hidden_size % num_heads:
        raise ValueError(f"rmt: num_heads={num_heads} must divide hidden_size={hidden_size}")
    if not mem_at_end and num_mem_tokens > segment:
        raise ValueError(f"rmt: with mem_at_end=False the memory is written from the last "
                         f"num_mem_tokens segment positions, so num_mem_tokens={num_mem_tokens} "
                         f"must be <= segment={segment}")


class RMTLayer(nn.Module):
    """Pre-norm block: h = u + Attn(LN(u)); h = h + FF(LN(h)).  u: [N, L, D].

    ``prefix`` [N, P, D] (cached read memory) adds P keys/values in front of u's own.
    ``mask`` [N, 1, L, P + L] bool, True = may attend.
    """

    def __init__(self, d_model: int, num_heads: int, ff_mult: int):
        super().__init__()
        self.h, self.dh = num_heads, d_model // num_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.kv, self.o = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model), nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_mult * d_model), nn.GELU(),
                                nn.Linear(ff_mult * d_model, d_model))

    def forward(self, u, mask, prefix=None):
        N, L, D = u.shape
        a = self.ln1(u)
        src = a if prefix is None else torch.cat([self.ln1(prefix), a], 1)
        q = self.q(a).reshape(N, L, self.h, self.dh).transpose(1, 2)
        k, v = (t.reshape(N, -1, self.h, self.dh).transpose(1, 2) for t in self.kv(src).chunk(2, -1))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = u + self.o(att.transpose(1, 2).reshape(N, L, D))
        return h + self.ff(self.ln2(h))


class RMTCore(nn.Module):
    """Core for kind ``rmt``. State: mem ``[M, H]``, buf ``[segment, H]``, pos ``[1]``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, num_heads: int = 4,
                 num_mem_tokens: int = 4, segment: int = 16, ff_mult: int = 4,
                 mem_at_end: bool = True, read_mem_from_cache: bool = False):
        super().__init__()
        _positive_int("input_size", input_size)
        _positive_int("num_layers", num_layers)
        check_rmt_options(hidden_size, num_heads, num_mem_tokens, segment, ff_mult, mem_at_end,
                          read_mem_from_cache)
        self.hidden, self.num_mem_tokens, self.segment = hidden_size, num_mem_tokens, segment
        self.mem_at_end, self.read_mem_from_cache = mem_at_end, read_mem_from_cache
        self.in_proj = nn.Linear(input_size, hidden_size) if input_size != hidden_size else nn.Identity()
        self.mem_init = nn.Parameter(torch.randn(num_mem_tokens, hidden_size))  # learned initial memory
        self.seg_pos = nn.Parameter(0.02 * torch.randn(segment, hidden_size))
        # Position embeddings of the memory slots: [read] or [read, write].
        self.mem_pos = nn.Parameter(0.02 * torch.randn(2 if mem_at_end else 1, num_mem_tokens, hidden_size))
        self.layers = nn.ModuleList(RMTLayer(hidden_size, num_heads, ff_mult) for _ in range(num_layers))
        self.out_norm, self.mem_norm = nn.LayerNorm(hidden_size), nn.LayerNorm(hidden_size)

    def state_shapes(self):
        return {"mem": (self.num_mem_tokens, self.hidden), "buf": (self.segment, self.hidden), "pos": (1,)}

    # -- one batch of segments -------------------------------------------------------
    def _mask(self, length: torch.Tensor) -> torch.Tensor:
        """[N, 1, Q, K] bool. Keys: [read M | seg S | write M?]; queries: the same minus
        read when it is cached. Causal in that order; segment keys at or past ``length``
        are hidden (a query still sees itself, so padded rows stay finite)."""
        M, S = self.num_mem_tokens, self.segment
        K = 2 * M + S if self.mem_at_end else M + S
        kk = torch.arange(K, device=length.device)
        causal = kk[None, :] <= kk[:, None]  # [q, k]
        seg = kk - M
        valid = (seg < 0) | (seg >= S) | (seg[None, :] < length[:, None])  # [N, K]
        mask = causal & (valid[:, None, :] | torch.eye(K, dtype=torch.bool, device=length.device))
        q0 = M if self.read_mem_from_cache else 0
        return mask[:, None, q0:, :]

    def _segments(self, tokens, length, mem):
        """tokens [N, S, H] (positions >= length are padding), mem [N, M, H] ->
        outputs [N, S, H], written memory [N, M, H]."""
        M, S = self.num_mem_tokens, self.segment
        mem = self.mem_norm(mem)
        read = mem + self.mem_pos[0]
        parts = [tokens + self.seg_pos]
        if not self.read_mem_from_cache:
            parts.insert(0, read)
        if self.mem_at_end:
            parts.append(mem + self.mem_pos[1])
        u = torch.cat(parts, 1)
        mask = self._mask(length)
        prefix = read if self.read_mem_from_cache else None
        for layer in self.layers:
            u = layer(u, mask, prefix)
        o = 0 if self.read_mem_from_cache else M
        y = self.out_norm(u[:, o:o + S])
        written = u[:, o + S:] if self.mem_at_end else u[:, o + S - M:o + S]
        return y, written

    def _decode_pos(self, pos):
        """pos [B, 1] -> started [B] bool, k [B] long (steps of the current segment buffered)."""
        p = pos[:, 0]
        started = p > 0.5
        k = (p - 1).round().clamp(0, self.segment - 1).long()
        return started, torch.where(started, k, torch.zeros_like(k))

    # -- the contract ----------------------------------------------------------------
    def step(self, x, states):
        B, S = x.shape[0], self.segment
        h = self.in_proj(x)
        started, k = self._decode_pos(states["pos"])
        st = started[:, None, None]
        mem = torch.where(st, states["mem"], self.mem_init)
        buf = torch.where(st, states["buf"], torch.zeros_like(states["buf"]))
        window = torch.cat([buf[:, 1:], h[:, None]], 1)  # [B, S, H], newest last
        n = k + 1  # tokens of the current segment, the new one included
        j = torch.arange(S, device=x.device)
        rows = torch.arange(B, device=x.device)
        tokens = window[rows[:, None], (S - n[:, None] + j).clamp(max=S - 1)]  # segment from position 0
        y, written = self._segments(tokens, n, mem)
        done = n == S
        mem = torch.where(done[:, None, None], written, mem)
        pos = torch.where(done, torch.ones_like(n), n + 1).to(h.dtype)[:, None]
        return y[rows, n - 1], {"mem": mem, "buf": window, "pos": pos}

    def sequence(self, x, is_init, states):
        B, T, _ = x.shape
        S, dev = self.segment, x.device
        h = self.in_proj(x)
        started, k0 = self._decode_pos(states["pos"])
        st = started[:, None, None]
        mem0 = torch.where(st, states["mem"], self.mem_init)
        buf0 = torch.where(st, states["buf"], torch.zeros_like(states["buf"]))
        ext = torch.cat([buf0, h], 1)  # [B, S+T, H]; data step t is ext[:, S+t]

        # Where every step sits: its position in its segment, and the segments' chains.
        reset = is_init.clone()
        reset[:, 0] |= ~started  # a fresh carried state is a reset
        t = torch.arange(T, device=dev)
        last_reset = torch.where(reset, t, -S - 1).cummax(1).values  # [B, T]; < -S: none yet
        p = torch.where(last_reset >= 0, t - last_reset, t + k0[:, None]) % S
        start = p == 0
        start[:, 0] = True
        end = torch.ones_like(start)
        end[:, :-1] = start[:, 1:]
        sid = start.long().cumsum(1) - 1  # segment number within the row
        depth_bt = sid - torch.where(reset, sid, torch.zeros_like(sid)).cummax(1).values
        sb, st_ = start.nonzero(as_tuple=True)  # one entry per segment, ordered by (row, time)
        eb, et = end.nonzero(as_tuple=True)
        seg_row, seg_first = sb, S + st_ - p[sb, st_]  # first token's index into ext
        seg_len, seg_depth, seg_fresh = p[eb, et] + 1, depth_bt[sb, st_], reset[sb, st_]
        G = seg_row.shape[0]

        j = torch.arange(S, device=dev)
        slot = torch.empty(G, dtype=torch.long, device=dev)
        ys, ids, after, order = [], [], [], []
        written = None
        for d in range(int(seg_depth.max()) + 1):
            sel = (seg_depth == d).nonzero().squeeze(1)
            slot[sel] = torch.arange(sel.shape[0], device=dev)
            rows = seg_row[sel]
            if d == 0:  # chain starts: the carried memory, or the initial one after a reset
                mem_in = torch.where(seg_fresh[sel, None, None], self.mem_init, mem0[rows])
            else:  # continues the previous (complete) segment of the same row
                mem_in = written[slot[sel - 1]]
            e = seg_first[sel, None] + j  # [N, S] ext indices
            y, written = self._segments(ext[rows[:, None], e.clamp(max=S + T - 1)], seg_len[sel], mem_in)
            keep = (j < seg_len[sel, None]) & (e >= S)  # real data steps (not the carried prefix)
            ys.append(y[keep])
            ids.append((rows[:, None] * T + e - S)[keep])
            after.append(torch.where((seg_len[sel] == S)[:, None, None], written, mem_in))
            order.append(sel)
        y = torch.cat(ys)[torch.cat(ids).argsort()].reshape(B, T, -1)

        # Final state: memory after each row's last segment, window, position.
        mem_after = torch.cat(after)[torch.cat(order).argsort()]  # [G, M, H] by segment id
        last_seg = (sid[:, -1] + 1).cumsum(0) - 1
        tw = torch.arange(T - S, T, device=dev)  # data steps of the final window
        in_episode = (tw[None, :] >= last_reset[:, -1:])[..., None]
        buf = torch.where(in_episode, ext[:, T:], torch.zeros_like(ext[:, T:]))
        pos = ((p[:, -1] + 1) % S + 1).to(h.dtype)[:, None]
        return y, {"mem": mem_after[last_seg], "buf": buf, "pos": pos}


__all__ = ["RMTCore", "RMTLayer", "RMT_DEFAULTS", "check_rmt_options"]
