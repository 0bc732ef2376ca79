"""POPGym-style memory tasks, batched in torch: N envs per tensor op, no Python loop over envs.

Raw API (what envs/pomdp/suite.py wraps for TorchRL and gymnasium):

    task = make_task("repeat_previous", "easy", num_envs=4096, seed=0)
    obs = task.reset()                           # [N, obs_dim] float32; reset(mask[N]) resets a subset
    obs, reward, terminated, truncated = task.step(action)   # action: long [N], or float [N, 1] (pendulum)
    task.oracle_action()                         # the optimal action from the hidden state (tests, baselines)

Tasks and levels follow popgym (proroklab/popgym) where it defines them; card tasks score +-1/K per
rewarded step so an episode's return lies in [-1, 1]:
  repeat_previous       answer the suit of the k-th most recent card, current one included (popgym's
                        hand[-k]: k=1 is the current card); easy/medium/hard = 1/2/3 decks, k 4/32/64
  repeat_first          answer the suit of the episode's first card; 1/8/16 decks
  autoencode            watch a deck's suits (obs: [watching flag, suit one-hot]), then replay them with
                        no card shown; popgym replays in reverse (``order="reverse"``, the default),
                        ``order="forward"`` replays in dealt order; 1/2/3 decks
  count_recall          obs = [dealt card, query card] one-hots; answer how many times the query card has
                        been dealt so far (dealt card included); card = colour/suit/rank with 1/2/4 decks
  stateless_cartpole    gymnasium CartPole-v1 dynamics, obs = [x, theta]; +1/L per step, so surviving
                        the whole episode returns 1.0; L = 200/400/600 (popgym), time limit = truncated
  stateless_pendulum    gymnasium Pendulum-v1 dynamics, obs = [cos, sin]; popgym's reward rescaled to
                        [-1, 1]/L per step; L = 200/150/100 (less time to swing up is harder)
  noisy_stateless_*     the same with N(0, sigma) observation noise, sigma 0.1/0.2/0.3, L = 200

Randomness is per env (a SplitMix-style Weyl sequence through a 32-bit integer hash), not one
torch.Generator shared by the batch: env i of a batch seeded s draws exactly what a single env seeded
s + i draws, so batched and single stepping give the same trajectories, and partial resets of some envs
never shift the random streams of the others.
"""
from __future__ import annotations

import math

import torch

M32 = 0xFFFFFFFF
GOLDEN = 0x9E3779B9
CARDS_PER_DECK = 52


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Integer hash of int64 values in [0, 2^32); the multiplier is < 2^27 so products never overflow."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & M32
    x = ((x >> 16) ^ x) * 0x45D9F3B & M32
    return (x >> 16) ^ x


class EnvRNG:
    """Per-env random streams, SplitMix-style: env i's draws are hash(s_i + m * gamma_i), m = 1, 2, ...

    A Weyl sequence per env (its own start s_i and odd step gamma_i, both hashed from seed + i) through an
    integer hash: one hash per draw, and env i's stream depends only on its own seed and calls.
    """

    def __init__(self, num_envs: int, seed: int, device):
        self.device = device
        self.reseed(seed, num_envs)

    def reseed(self, seed: int, num_envs: int):
        seeds = (int(seed) + torch.arange(num_envs, device=self.device)) & M32    # [N]: env i gets seed + i
        self.state = _hash32(seeds ^ 0x5BD1E995)                                  # [N] Weyl position
        self.gamma = _hash32(_hash32(seeds) ^ GOLDEN) | 1                         # [N] odd Weyl step
        self._steps = {}

    def _jumps(self, n: int) -> torch.Tensor:
        if n not in self._steps:
            self._steps[n] = torch.arange(1, n + 1, device=self.device)           # [n]
        return self._steps[n]

    def uniform(self, n: int, idx: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n] float32 in [0, 1) for all envs (idx None) or envs idx; advances only their streams."""
        state, gamma = (self.state, self.gamma) if idx is None else (self.state[idx], self.gamma[idx])
        if n == 1:
            pos = (state + gamma)[:, None]                                         # [B, 1]
        else:
            pos = state[:, None] + gamma[:, None] * self._jumps(n)                # [B, n], < 2^63
        h = _hash32(pos & M32)
        new_state = pos[:, -1] & M32
        if idx is None:
            self.state = new_state
        else:
            self.state[idx] = new_state
        return (h >> 8).to(torch.float32) * (1.0 / (1 << 24))   # 24 bits: exact in float32

    def normal(self, n: int, idx: torch.Tensor | None = None) -> torch.Tensor:
        """[B, n] standard normal (Box-Muller on ceil(n/2) pairs)."""
        u = self.uniform(2 * ((n + 1) // 2), idx).to(torch.float64)
        u1, u2 = u[:, 0::2], u[:, 1::2]
        r = torch.sqrt(-2.0 * torch.log1p(-u1))                                    # 1-u1 in (0, 1]
        return torch.cat([r * torch.cos(2 * math.pi * u2), r * torch.sin(2 * math.pi * u2)], 1)[:, :n]


def _deal(rem: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Draw one card per row from remaining counts rem [B, S] (in place) -> kind [B].

    Dealing kinds with probability rem/total is exactly a uniformly shuffled deck, without the [N, cards]
    permutation. An empty deck (only after the episode's end) deals kind S-1 and stays empty.
    """
    csum = rem.cumsum(1)                                         # [B, S]
    total = csum[:, -1]                                          # [B]
    x = (u * total).long()                                       # uniform over the remaining cards
    kind = (csum <= x[:, None]).sum(1).clamp_(max=rem.shape[1] - 1)
    rem.scatter_add_(1, kind[:, None], -(total[:, None] > 0).long())
    return kind


class Task:
    """Base: N envs, state tensors [N, ...], an obs tensor [N, obs_dim] rebuilt (never mutated) each step."""

    name = "task"
    obs_dim: int
    n_actions: int = 0            # > 0: discrete actions 0..n-1; 0: continuous [act_low, act_high]^act_dim
    act_dim: int = 1
    act_low, act_high = -1.0, 1.0
    max_steps: int                # longest possible episode

    def __init__(self, num_envs: int, device="cpu", seed: int = 0):
        self.num_envs, self.device = int(num_envs), torch.device(device)
        self.rng = EnvRNG(self.num_envs, seed, self.device)
        self.t = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)   # [N] steps this episode
        self.obs = torch.zeros(self.num_envs, self.obs_dim, device=self.device)

    def reseed(self, seed: int):
        self.rng.reseed(seed, self.num_envs)

    def reset(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reset all envs (mask None) or those where mask [N] is true; returns obs of all envs [N, obs_dim]."""
        if mask is None:
            idx = None
        else:
            mask = mask.reshape(self.num_envs)
            if not bool(mask.any()):
                return self.obs
            idx = None if bool(mask.all()) else mask.nonzero().squeeze(1)
        self.obs = self.obs.clone()    # the caller may hold the old obs (TorchRL keeps it in its data)
        rows = slice(None) if idx is None else idx
        self.t[rows] = 0
        self._reset(idx, rows)
        return self.obs

    def _reset(self, idx, rows):
        raise NotImplementedError

    def step(self, action: torch.Tensor):
        raise NotImplementedError

    def oracle_action(self) -> torch.Tensor:
        raise NotImplementedError

    def obs_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[obs_dim] low and high of the observation (one-hots by default)."""
        return torch.zeros(self.obs_dim), torch.ones(self.obs_dim)


class CardTask(Task):
    """Card games: S card kinds, `decks` decks of 52, reward +-scale per rewarded step."""

    kinds = 4                                                    # suits

    def __init__(self, num_envs, device="cpu", seed=0, decks=1):
        self.decks = int(decks)
        self.num_cards = CARDS_PER_DECK * self.decks
        super().__init__(num_envs, device, seed)
        self.eye = torch.eye(self.kinds, device=self.device)    # one-hot lookup table
        self.full = torch.full((self.kinds,), self.num_cards // self.kinds, dtype=torch.int64,
                               device=self.device)               # [S] cards of each kind per episode

    def _fresh_deal(self, idx, n_rows):
        """A full deck for the reset rows, and its first card: -> (rem [B, S], kind [B])."""
        rem = self.full.expand(n_rows, self.kinds).clone()
        return rem, _deal(rem, self.rng.uniform(1, idx)[:, 0])

    def _n_rows(self, idx):
        return self.num_envs if idx is None else idx.numel()

    def _reward(self, correct, scale, valid=None):
        r = torch.where(correct, scale, -scale)
        return r if valid is None else r * valid


class RepeatPrevious(CardTask):
    name = "repeat_previous"
    n_actions = 4
    obs_dim = 4
    LEVELS = {"easy": dict(decks=1, k=4), "medium": dict(decks=2, k=32), "hard": dict(decks=3, k=64)}

    def __init__(self, num_envs, device="cpu", seed=0, decks=1, k=4):
        self.k = int(k)
        super().__init__(num_envs, device, seed, decks)
        if not 1 <= self.k < self.num_cards:
            raise ValueError(f"k must be in [1, {self.num_cards}), got {k}")
        self.max_steps = self.num_cards - 1
        self.scale = 1.0 / (self.num_cards - self.k)            # rewarded steps: t >= k-1
        self.rem = self.full.repeat(self.num_envs, 1)           # [N, 4] cards left per suit
        self.hist = torch.zeros(self.num_envs, self.k, dtype=torch.int64, device=self.device)  # [N, k] ring

    def _reset(self, idx, rows):
        rem, card = self._fresh_deal(idx, self._n_rows(idx))
        self.rem[rows] = rem
        self.hist[rows] = 0
        self.hist[rows, 0] = card                                # card seen at time t sits in slot t % k
        self.obs[rows] = self.eye[card]

    def _target(self):
        slot = (self.t + 1) % self.k                             # time t+1-k: the slot the next card overwrites
        return self.hist.gather(1, slot[:, None])[:, 0], slot

    def step(self, action):
        target, slot = self._target()
        valid = (self.t + 1 >= self.k).float()
        reward = self._reward(action.reshape(-1) == target, self.scale, valid)
        card = _deal(self.rem, self.rng.uniform(1)[:, 0])
        self.hist.scatter_(1, slot[:, None], card[:, None])
        self.t += 1
        self.obs = self.eye[card]
        terminated = self.t >= self.num_cards - 1
        return self.obs, reward, terminated, torch.zeros_like(terminated)

    def oracle_action(self):
        return self._target()[0]


class RepeatFirst(CardTask):
    name = "repeat_first"
    n_actions = 4
    obs_dim = 4
    LEVELS = {"easy": dict(decks=1), "medium": dict(decks=8), "hard": dict(decks=16)}

    def __init__(self, num_envs, device="cpu", seed=0, decks=1):
        super().__init__(num_envs, device, seed, decks)
        self.max_steps = self.num_cards - 1
        self.scale = 1.0 / (self.num_cards - 1)
        self.rem = self.full.repeat(self.num_envs, 1)            # [N, 4]
        self.first = torch.zeros(self.num_envs, dtype=torch.int64, device=self.device)  # [N]

    def _reset(self, idx, rows):
        rem, card = self._fresh_deal(idx, self._n_rows(idx))
        self.rem[rows] = rem
        self.first[rows] = card
        self.obs[rows] = self.eye[card]

    def step(self, action):
        reward = self._reward(action.reshape(-1) == self.first, self.scale)
        card = _deal(self.rem, self.rng.uniform(1)[:, 0])
        self.t += 1
        self.obs = self.eye[card]
        terminated = self.t >= self.num_cards - 1
        return self.obs, reward, terminated, torch.zeros_like(terminated)

    def oracle_action(self):
        return self.first


class Autoencode(CardTask):
    """Times 0..C-2 watch (card dealt each step, no reward); the obs at C-1 shows the last card with the
    watching flag off; the actions at times C-1..2C-2 replay the C cards (+-1/C each); 2C-1 steps."""

    name = "autoencode"
    n_actions = 4
    obs_dim = 5                                                  # [watching, suit one-hot]
    LEVELS = {"easy": dict(decks=1), "medium": dict(decks=2), "hard": dict(decks=3)}

    def __init__(self, num_envs, device="cpu", seed=0, decks=1, order="reverse"):
        if order not in ("reverse", "forward"):
            raise ValueError(f"order must be 'reverse' (popgym) or 'forward', got {order!r}")
        self.reverse = order == "reverse"
        super().__init__(num_envs, device, seed, decks)
        C = self.num_cards
        self.max_steps = 2 * C - 1
        self.scale = 1.0 / C
        self.rem = self.full.repeat(self.num_envs, 1)            # [N, 4]
        # [N, C+1]: the dealt suits; column C is a sink for the writes of envs already replaying
        self.seq = torch.zeros(self.num_envs, C + 1, dtype=torch.int64, device=self.device)

    def _reset(self, idx, rows):
        rem, card = self._fresh_deal(idx, self._n_rows(idx))
        self.rem[rows] = rem
        self.seq[rows] = 0
        self.seq[rows, 0] = card
        self.obs[rows, 0] = 1.0
        self.obs[rows, 1:] = self.eye[card]

    def _target(self):
        C = self.num_cards
        j = self.t - (C - 1)                                     # index of the answer, < 0 while watching
        pos = (C - 1 - j) if self.reverse else j
        return self.seq.gather(1, pos.clamp(0, C - 1)[:, None])[:, 0], j >= 0

    def step(self, action):
        C = self.num_cards
        target, playing = self._target()
        reward = self._reward(action.reshape(-1) == target, self.scale, playing.float())
        watching = ~playing
        card = _deal(self.rem, self.rng.uniform(1)[:, 0])       # deck is empty (no-op) while replaying
        self.seq.scatter_(1, torch.where(watching, self.t + 1, C)[:, None], card[:, None])
        self.t += 1
        self.obs = torch.cat([(self.t < C - 1).float()[:, None],
                              self.eye[card] * watching.float()[:, None]], 1)
        terminated = self.t >= 2 * C - 1
        return self.obs, reward, terminated, torch.zeros_like(terminated)

    def oracle_action(self):
        target, playing = self._target()
        return target * playing


class CountRecall(CardTask):
    name = "count_recall"
    LEVELS = {"easy": dict(decks=1, card="colors"), "medium": dict(decks=2, card="suits"),
              "hard": dict(decks=4, card="ranks")}
    KINDS = {"colors": 2, "suits": 4, "ranks": 13}

    def __init__(self, num_envs, device="cpu", seed=0, decks=1, card="colors"):
        if card not in self.KINDS:
            raise ValueError(f"card must be one of {list(self.KINDS)}, got {card!r}")
        self.kinds = self.KINDS[card]
        self.obs_dim = 2 * self.kinds                            # [dealt one-hot, query one-hot]
        super().__init__(num_envs, device, seed, decks)
        # a count can reach every card of a kind: popgym's Discrete(C/S) misses the top value
        self.n_actions = self.num_cards // self.kinds + 1
        self.max_steps = self.num_cards - 1
        self.scale = 1.0 / (self.num_cards - 1)
        n, S = self.num_envs, self.kinds
        self.vrem, self.qrem = self.full.repeat(n, 1), self.full.repeat(n, 1)   # [N, S] value / query decks
        self.counts = torch.zeros(n, S, dtype=torch.int64, device=self.device)   # [N, S] dealt so far
        self.query = torch.zeros(n, dtype=torch.int64, device=self.device)       # [N]

    def _deal_pair(self, vrem, qrem, counts, u):
        value, query = _deal(vrem, u[:, 0]), _deal(qrem, u[:, 1])
        counts.scatter_add_(1, value[:, None], torch.ones_like(value)[:, None])
        return value, query

    def _reset(self, idx, rows):
        B = self._n_rows(idx)
        vrem, qrem = self.full.expand(B, self.kinds).clone(), self.full.expand(B, self.kinds).clone()
        counts = torch.zeros(B, self.kinds, dtype=torch.int64, device=self.device)
        value, query = self._deal_pair(vrem, qrem, counts, self.rng.uniform(2, idx))
        self.vrem[rows], self.qrem[rows], self.counts[rows], self.query[rows] = vrem, qrem, counts, query
        self.obs[rows] = torch.cat([self.eye[value], self.eye[query]], 1)

    def step(self, action):
        reward = self._reward(action.reshape(-1) == self.oracle_action(), self.scale)
        value, self.query = self._deal_pair(self.vrem, self.qrem, self.counts, self.rng.uniform(2))
        self.t += 1
        self.obs = torch.cat([self.eye[value], self.eye[self.query]], 1)
        terminated = self.t >= self.num_cards - 1
        return self.obs, reward, terminated, torch.zeros_like(terminated)

    def oracle_action(self):
        return self.counts.gather(1, self.query[:, None])[:, 0]


class StatelessCartPole(Task):
    """gymnasium CartPole-v1 (Euler, float64 state like gymnasium) with the velocities hidden."""

    name = "stateless_cartpole"
    n_actions = 2
    obs_dim = 2
    LEVELS = {"easy": dict(max_steps=200), "medium": dict(max_steps=400), "hard": dict(max_steps=600)}
    GRAVITY, M_CART, M_POLE, HALF_LEN, FORCE, TAU = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    X_MAX, TH_MAX = 2.4, 12 * 2 * math.pi / 360
    OBS_HIGH = (2 * X_MAX, 2 * TH_MAX)                           # popgym's observation box

    def __init__(self, num_envs, device="cpu", seed=0, max_steps=200, noise_sigma=0.0):
        self.max_steps, self.noise_sigma = int(max_steps), float(noise_sigma)
        super().__init__(num_envs, device, seed)
        self.state = torch.zeros(self.num_envs, 4, dtype=torch.float64, device=self.device)  # x, xd, th, thd
        self.high = torch.tensor(self.OBS_HIGH, dtype=torch.float64, device=self.device)

    def obs_bounds(self):
        high = torch.tensor(self.OBS_HIGH, dtype=torch.float32)
        return -high, high

    def _observe(self, state, idx):
        obs = state[:, 0::2]                                     # [B, 2]: x, theta
        if self.noise_sigma > 0:
            obs = torch.maximum(torch.minimum(obs + self.noise_sigma * self.rng.normal(2, idx), self.high),
                                -self.high)
        return obs.to(torch.float32)

    def _reset(self, idx, rows):
        state = (self.rng.uniform(4, idx).to(torch.float64) - 0.5) * 0.1   # U(-0.05, 0.05), as gymnasium
        self.state[rows] = state
        self.obs[rows] = self._observe(state, idx)

    def step(self, action):
        x, xd, th, thd = self.state.unbind(1)
        force = torch.where(action.reshape(-1) == 1, self.FORCE, -self.FORCE)
        cos, sin = torch.cos(th), torch.sin(th)
        total, pml = self.M_CART + self.M_POLE, self.M_POLE * self.HALF_LEN
        temp = (force + pml * thd * thd * sin) / total
        thacc = (self.GRAVITY * sin - cos * temp) / (self.HALF_LEN * (4.0 / 3.0 - self.M_POLE * cos * cos / total))
        xacc = temp - pml * thacc * cos / total
        self.state = torch.stack([x + self.TAU * xd, xd + self.TAU * xacc,
                                  th + self.TAU * thd, thd + self.TAU * thacc], 1)
        self.t += 1
        terminated = (self.state[:, 0].abs() > self.X_MAX) | (self.state[:, 2].abs() > self.TH_MAX)
        truncated = (self.t >= self.max_steps) & ~terminated
        self.obs = self._observe(self.state, None)
        reward = torch.full((self.num_envs,), 1.0 / self.max_steps, device=self.device)
        return self.obs, reward, terminated, truncated

    def oracle_action(self):
        """Full-state linear feedback (push right when the pole leans/falls right), bang-bang."""
        x, xd, th, thd = self.state.unbind(1)
        return (0.05 * x + 0.2 * xd + 2.0 * th + 0.6 * thd > 0).long()


class StatelessPendulum(Task):
    """gymnasium Pendulum-v1 (float64 state) with the angular velocity hidden; th = 0 is upright."""

    name = "stateless_pendulum"
    obs_dim = 2
    act_low, act_high = -2.0, 2.0
    LEVELS = {"easy": dict(max_steps=200), "medium": dict(max_steps=150), "hard": dict(max_steps=100)}
    G, MASS, LENGTH, DT, MAX_SPEED, MAX_TORQUE = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0
    MAX_COST = math.pi ** 2 + 0.1 * 8.0 ** 2 + 0.001 * 2.0 ** 2   # 16.2736..., popgym's reward low

    def __init__(self, num_envs, device="cpu", seed=0, max_steps=200, noise_sigma=0.0):
        self.max_steps, self.noise_sigma = int(max_steps), float(noise_sigma)
        super().__init__(num_envs, device, seed)
        self.th = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)    # [N]
        self.thd = torch.zeros(self.num_envs, dtype=torch.float64, device=self.device)   # [N]

    def obs_bounds(self):
        return -torch.ones(2), torch.ones(2)

    def _observe(self, th, idx):
        obs = torch.stack([torch.cos(th), torch.sin(th)], 1)
        if self.noise_sigma > 0:
            obs = (obs + self.noise_sigma * self.rng.normal(2, idx)).clamp(-1.0, 1.0)
        return obs.to(torch.float32)

    def _reset(self, idx, rows):
        u = self.rng.uniform(2, idx).to(torch.float64)
        th, thd = (2 * u[:, 0] - 1) * math.pi, 2 * u[:, 1] - 1   # U(-pi, pi), U(-1, 1) as gymnasium
        self.th[rows], self.thd[rows] = th, thd
        self.obs[rows] = self._observe(th, idx)

    def step(self, action):
        u = action.reshape(-1).to(torch.float64).clamp(-self.MAX_TORQUE, self.MAX_TORQUE)
        th, thd = self.th, self.thd
        ang = torch.remainder(th + math.pi, 2 * math.pi) - math.pi
        cost = ang * ang + 0.1 * thd * thd + 0.001 * u * u
        thdd = 3 * self.G / (2 * self.LENGTH) * torch.sin(th) + 3.0 / (self.MASS * self.LENGTH ** 2) * u
        thd = thd + thdd * self.DT
        self.thd = thd.clamp(-self.MAX_SPEED, self.MAX_SPEED)
        self.th = th + self.thd * self.DT
        self.t += 1
        half = self.MAX_COST / 2                                 # popgym: [-max_cost, 0] -> [-1, 1], / L
        reward = ((half - cost) / half / self.max_steps).to(torch.float32)
        truncated = self.t >= self.max_steps
        self.obs = self._observe(self.th, None)
        return self.obs, reward, torch.zeros_like(truncated), truncated

    def oracle_action(self):
        """Energy-pumping swing-up, then a PD stabiliser near the top; needs the hidden velocity."""
        ang = torch.remainder(self.th + math.pi, 2 * math.pi) - math.pi
        thd = self.thd
        energy = 0.5 * thd * thd + 15.0 * torch.cos(ang)        # 15 = 3g/2l; upright at rest: 15
        pump = torch.where((15.0 - energy) * thd >= 0, 2.0, -2.0)
        pd = -(10.0 * ang + 2.0 * thd)
        u = torch.where(torch.cos(ang) > 0.85, pd, pump).clamp(-2.0, 2.0)
        return u.to(torch.float32)[:, None]


class NoisyStatelessCartPole(StatelessCartPole):
    name = "noisy_stateless_cartpole"
    LEVELS = {lvl: dict(max_steps=200, noise_sigma=s) for lvl, s in zip(("easy", "medium", "hard"), (0.1, 0.2, 0.3))}


class NoisyStatelessPendulum(StatelessPendulum):
    name = "noisy_stateless_pendulum"
    LEVELS = {lvl: dict(max_steps=200, noise_sigma=s) for lvl, s in zip(("easy", "medium", "hard"), (0.1, 0.2, 0.3))}


TASKS = {cls.name: cls for cls in (RepeatPrevious, RepeatFirst, Autoencode, CountRecall, StatelessCartPole,
                                   StatelessPendulum, NoisyStatelessCartPole, NoisyStatelessPendulum)}
LEVELS = ("easy", "medium", "hard")


def make_task(task: str, level: str = "easy", num_envs: int = 1, device="cpu", seed: int = 0, **kwargs) -> Task:
    """A batched task; kwargs override the level's parameters (e.g. k=8, order="forward")."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    cls = TASKS[task]
    if level not in cls.LEVELS:
        raise ValueError(f"level must be one of {list(cls.LEVELS)}, got {level!r}")
    return cls(num_envs, device=device, seed=seed, **{**cls.LEVELS[level], **kwargs})
