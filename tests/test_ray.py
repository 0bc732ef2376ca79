"""Everything Ray, in one test so one local Ray instance (started here) serves it all, also under
pytest-xdist: the sweep runner's --ray path runs a 1-run sweep, and PPO collection through TorchRL's
RayCollector (collector.backend=ray) trains and follows the learner's weights."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = ["threads=1", "logger=none", "env.num_envs=4", "model.embed=8", "model.hidden=8", "model.head_hidden=8",
        "ppo.slice_len=8", "ppo.minibatch_size=32", "ppo.epochs=1", "train.frames_per_batch=64",
        "train.total_frames=128", "train.eval_episodes=2"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (pip install -e '.[ray]', ~240 MB, not in the dev extra): "
                           "the Ray sweep path and collector.backend=ray are untested in this run")
def test_ray_sweep_and_ray_collectors(tmp_path):
    import ray
    from tensordict.nn import set_interaction_type
    from torchrl.envs.utils import ExplorationType
    from torchrl.modules import set_recurrent_mode

    from agents import ppo_memory
    from agents.runtime.config import load_config
    from agents.pomdp.build import Config, MemoryPolicy
    from benchmarks import sweep

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    try:
        # 1. the sweep runner's Ray path: one run as a Ray task
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump({
            "name": "tiny", "results": str(tmp_path / "results"), "run_root": str(tmp_path / "runs"), "seeds": [0],
            "overrides": TINY, "algorithms": {"ppo": {"kinds": ["none"]}},
            "envs": {"cartpole": {"ppo": {"config": "configs/pomdp/stateless_cartpole.yaml"}}}}))
        assert sweep.main([str(path), "--ray", "--committed"]) == 0     # into the sweep file's results
        row = json.loads((tmp_path / "results/runs/ppo__cartpole__none__default__s0.json").read_text())
        assert row["status"] == "ok" and row["frames"] == 128

        # 2. PPO training with two remote collectors (4 envs each)
        overrides = [*TINY, "collector.backend=ray", "collector.num_collectors=2", "model.memory=gru",
                     "env.task=stateless_cartpole", f"run_root={tmp_path}", "logger=none"]
        result = ppo_memory.train(load_config(Config, None, overrides), verbose=False)
        assert result["frames"] == 128 and result["curve"]

        # 3. after update_policy_weights_() the remote policy acts with the learner's new weights:
        # the log-probs it recorded equal the local policy's on the same data
        cfg = load_config(Config, None, [*overrides, "collector.num_collectors=1", "train.total_frames=128"])
        nets = MemoryPolicy(cfg)
        collector = ppo_memory.make_collector(cfg, nets, env_seed=0, total=128)
        batches = iter(collector)
        assert ppo_memory._batch_layout(next(batches)).shape == (4, 16)
        with torch.no_grad():
            for p in nets.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        collector.update_policy_weights_()
        batch = ppo_memory._batch_layout(next(batches))
        collector.shutdown()
        with torch.no_grad(), set_recurrent_mode(True), set_interaction_type(ExplorationType.RANDOM):
            logp = nets.actor_head.get_dist(nets.trunk(batch.clone(False))).log_prob(batch["action"])
        torch.testing.assert_close(logp, batch["action_log_prob"], atol=1e-4, rtol=1e-4)
    finally:
        ray.shutdown()
