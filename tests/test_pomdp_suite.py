"""POMDP memory suite (envs/pomdp/tasks.py, envs/pomdp/suite.py): memory is needed and sufficient, the
batch is N independent envs, TorchRL and gymnasium interfaces are valid."""
import math

import gymnasium as gym
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from torchrl.envs.utils import check_env_specs

from envs.pomdp.suite import POMDP_IDS, POMDPEnv, register_pomdp_envs
from envs.pomdp.tasks import TASKS, make_task

CARD_TASKS = ["repeat_previous", "repeat_first", "autoencode", "count_recall"]
N = 256


def card_episode(task: str, level: str = "easy", n: int = N, seed: int = 0):
    """One episode under the oracle: returns [n], and per rewarded step the obs and the target action."""
    tk = make_task(task, level, n, seed=seed)
    obs, ret, rows = tk.reset(), torch.zeros(n), []
    for _ in range(tk.max_steps):
        target = tk.oracle_action()
        prev = obs
        obs, r, term, trunc = tk.step(target)
        ret += r
        rows.append((prev, target, r != 0))
    assert bool(term.all()) and not bool(trunc.any())
    return tk, ret, rows


def best_memoryless_return(tk, rows) -> float:
    """Mean return of the best deterministic map obs -> action, fitted in-sample (so optimistic).

    Card tasks' dynamics ignore the actions, so a memoryless policy's return is a sum over steps of
    +-scale for [policy(obs_t) == target_t]: the best policy takes, per distinct obs, the most frequent
    target among that obs' rewarded steps.
    """
    obs = torch.cat([o[m] for o, _, m in rows])
    target = torch.cat([t[m] for _, t, m in rows])
    _, obs_id = torch.unique(obs, dim=0, return_inverse=True)
    counts = torch.zeros(int(obs_id.max()) + 1, tk.n_actions)
    counts.index_put_((obs_id, target), torch.ones(len(target)), accumulate=True)
    hits = counts.max(1).values.sum()
    return float(tk.scale * (2 * hits - len(target)) / tk.num_envs)


@pytest.mark.parametrize("task", CARD_TASKS)
def test_card_oracle_scores_one_and_memoryless_cannot(task):
    tk, ret, rows = card_episode(task)
    assert torch.allclose(ret, torch.ones(N), atol=1e-4)                 # every env, return 1.0
    best = best_memoryless_return(tk, rows)
    assert best < 0.0, f"{task}: a memoryless policy scores {best:.3f}"   # margin > 1 to the oracle
    # the obvious memoryless guess, "answer what you see", is no better
    if task != "count_recall":
        tk2 = make_task(task, "easy", N, seed=0)
        obs, ret2 = tk2.reset(), torch.zeros(N)
        for _ in range(tk2.max_steps):
            obs, r, _, _ = tk2.step(obs[:, -4:].argmax(1))
            ret2 += r
        assert ret2.mean() < 0.0


def test_card_decks_are_dealt_without_replacement():
    tk = make_task("repeat_first", "easy", 64, seed=3)
    seen = [tk.reset()]
    for _ in range(tk.max_steps):
        seen.append(tk.step(torch.zeros(64, dtype=torch.long))[0])
    assert torch.equal(torch.stack(seen).sum(0), torch.full((64, 4), 13.0))   # 52 cards, 13 per suit


def control_return(task, policy, level="easy", n=128, seed=0):
    tk = make_task(task, level, n, seed=seed)
    obs, ret, alive = tk.reset(), torch.zeros(n), torch.ones(n, dtype=torch.bool)
    for _ in range(tk.max_steps):
        obs, r, term, trunc = tk.step(policy(tk, obs))
        ret += r * alive
        alive &= ~(term | trunc)
    assert not bool(alive.any())
    return ret


@pytest.mark.parametrize("task", ["stateless_cartpole", "noisy_stateless_cartpole"])
def test_cartpole_needs_velocity(task):
    """popgym's episode length (easy: 200 steps, +1/200 per step): the full-state controller always
    lasts 200 steps; memoryless bang-bang controllers on (x, theta), over 24 directions, and a random
    policy fall after ~45 steps at best."""
    oracle = control_return(task, lambda tk, o: tk.oracle_action())
    assert torch.allclose(oracle, torch.ones_like(oracle), atol=1e-4)
    best = 0.0
    for ang in [2 * math.pi * i / 24 for i in range(24)]:
        w = torch.tensor([math.cos(ang), math.sin(ang)])
        best = max(best, control_return(task, lambda tk, o: (o @ w > 0).long()).mean().item())
    gen = torch.Generator().manual_seed(0)
    rand = control_return(task, lambda tk, o: torch.randint(0, 2, (o.shape[0],), generator=gen))
    assert best < 0.4 and rand.mean() < 0.2, (best, rand.mean())



@pytest.mark.parametrize("task", ["stateless_pendulum", "noisy_stateless_pendulum"])
def test_pendulum_needs_velocity(task):
    """Swing-up + PD on the true state vs torque as any clipped linear function of the angle alone."""
    oracle = control_return(task, lambda tk, o: tk.oracle_action()).mean().item()
    best = -1.0
    for k in (0.0, 2.0, 8.0, 16.0, -8.0):
        for c in (0.0, 1.0):
            pol = lambda tk, o: (-k * torch.atan2(o[:, 1], o[:, 0]) + c).clamp(-2, 2)[:, None]  # noqa: E731
            best = max(best, control_return(task, pol).mean().item())
    assert oracle > 0.85 and best < 0.45, (oracle, best)


def _rollout(env, actions):
    td, out = env.reset(), []
    for a in actions:
        td.set("action", a)
        step, td = env.step_and_maybe_reset(td)
        out.append(step.select("observation", ("next", "observation"), ("next", "reward"), ("next", "done"),
                               ("next", "truncated")).clone())
    return torch.stack(out, 1)     # [N, T]


@pytest.mark.parametrize("task", list(TASKS))
def test_batched_equals_single(task):
    """Env i of a batch seeded s == a lone env seeded s + i, through autoresets (past a whole episode)."""
    n, seed = 3, 10
    batch = POMDPEnv(task, num_envs=n, seed=seed)
    steps = batch.task.max_steps + 10
    g = torch.Generator().manual_seed(1)
    actions = [_rand_action(batch, g) for _ in range(steps)]
    together = _rollout(batch, actions)
    for i in range(n):
        alone = _rollout(POMDPEnv(task, num_envs=1, seed=seed + i), [a[i:i + 1] for a in actions])
        for key in together.keys(True, True):
            a, b = together[i][key], alone[0][key]
            if a.dtype.is_floating_point:   # float64 physics: vectorised vs scalar sin/cos may differ by 1 ulp
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            else:
                assert torch.equal(a, b), (task, i, key)
    assert bool(together["next", "done"].any())    # the comparison crossed episode ends


def _rand_action(env, g):
    tk = env.task
    if tk.n_actions:
        return torch.nn.functional.one_hot(torch.randint(0, tk.n_actions, (tk.num_envs,), generator=g), tk.n_actions)
    return torch.rand(tk.num_envs, 1, generator=g) * 4 - 2


@pytest.mark.parametrize("task", ["repeat_previous", "count_recall", "noisy_stateless_cartpole"])
def test_partial_reset_touches_only_masked_envs(task):
    n = 6
    env, twin = POMDPEnv(task, num_envs=n, seed=5), POMDPEnv(task, num_envs=n, seed=5)
    g = torch.Generator().manual_seed(0)
    td, td_twin = env.reset(), twin.reset()
    for _ in range(7):
        a = _rand_action(env, g)
        _, td = env.step_and_maybe_reset(td.set("action", a))
        _, td_twin = twin.step_and_maybe_reset(td_twin.set("action", a))
    mask = torch.tensor([True, False, False, True, False, False])
    t_before = env.task.t.clone()
    td = env.reset(td.set("_reset", mask[:, None]))
    keep = ~mask
    assert torch.equal(td["observation"][keep], td_twin["observation"][keep])
    assert torch.equal(env.task.t[keep], t_before[keep]) and bool((env.task.t[mask] == 0).all())
    # masked envs start over at t = 0, the others carry on exactly as the twin that was not reset
    for _ in range(5):
        a = _rand_action(env, g)
        step, td = env.step_and_maybe_reset(td.set("action", a))
        step_twin, td_twin = twin.step_and_maybe_reset(td_twin.set("action", a))
        assert torch.equal(step["next", "observation"][keep], step_twin["next", "observation"][keep])
        assert torch.equal(step["next", "reward"][keep], step_twin["next", "reward"][keep])


def test_seeding_is_deterministic():
    def traj(seed):
        env = POMDPEnv("noisy_stateless_pendulum", num_envs=4, seed=seed)
        g = torch.Generator().manual_seed(0)
        return _rollout(env, [_rand_action(env, g) for _ in range(20)])["next", "observation"]
    assert torch.equal(traj(0), traj(0)) and not torch.equal(traj(0), traj(1))
    env = POMDPEnv("repeat_previous", num_envs=4, seed=0)
    first = env.reset()["observation"]
    env.set_seed(0)
    assert torch.equal(env.reset()["observation"], first)


@pytest.mark.parametrize("task,categorical", [(t, False) for t in TASKS] + [(t, True) for t in CARD_TASKS])
def test_check_env_specs(task, categorical):
    check_env_specs(POMDPEnv(task, num_envs=4, seed=0, categorical_action_encoding=categorical))


def test_levels_follow_popgym():
    rp = {lvl: (t.num_cards, t.k) for lvl in ("easy", "medium", "hard")
          for t in [make_task("repeat_previous", lvl)]}
    assert rp == {"easy": (52, 4), "medium": (104, 32), "hard": (156, 64)}
    assert [make_task("repeat_first", lvl).num_cards for lvl in ("easy", "medium", "hard")] == [52, 416, 832]
    assert [make_task("count_recall", lvl).n_actions for lvl in ("easy", "medium", "hard")] == [27, 27, 17]
    assert [make_task("stateless_cartpole", lvl).max_steps for lvl in ("easy", "medium", "hard")] == [200, 400, 600]
    assert [make_task("stateless_pendulum", lvl).max_steps for lvl in ("easy", "medium", "hard")] == [200, 150, 100]
    assert [make_task("noisy_stateless_pendulum", lvl).noise_sigma for lvl in ("easy", "hard")] == [0.1, 0.3]
    with pytest.raises(ValueError, match="level"):
        make_task("autoencode", "extreme")


def test_autoencode_forward_order():
    tk = make_task("autoencode", "easy", 8, seed=2, order="forward")
    tk.reset()
    ret = torch.zeros(8)
    for _ in range(tk.max_steps):
        ret += tk.step(tk.oracle_action())[1]
    assert torch.allclose(ret, torch.ones(8), atol=1e-4)


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized")
@pytest.mark.parametrize("env_id", ["mambazoo/POMDP-RepeatPrevious-easy-v0", "mambazoo/POMDP-CountRecall-hard-v0",
                                    "mambazoo/POMDP-NoisyStatelessCartPole-easy-v0",
                                    "mambazoo/POMDP-StatelessPendulum-medium-v0"])
def test_gymnasium_ids(env_id):
    ids = register_pomdp_envs()
    assert register_pomdp_envs() == ids and len(ids) == len(TASKS) * 3 == len(POMDP_IDS)
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    task, level = next(k for k, v in ids.items() if v == env_id)
    assert torch.equal(torch.as_tensor(obs), POMDPEnv(task, level, num_envs=1, seed=3).reset()["observation"][0])
