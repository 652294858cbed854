"""MuJoCo (the ``mujoco`` extra): Hopper-v5 as the project creates it passes gymnasium's
``check_env``, and every shipped MuJoCo config (``configs/{sac,ppo}/{hopper,halfcheetah}.yaml``)
builds its algorithm and trainer callbacks from the file and runs a few iterations with finite
losses. Only the batch sizes are shrunk (the networks, connectors and learning settings are
the file's). Learning figures (env steps and seconds to each config's stated target) live in
``benchmarks/mujoco_learning.py``; this only proves the env family and the configs are wired."""

from __future__ import annotations

import importlib
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import lightning_rl
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["sac/hopper.yaml", "sac/halfcheetah.yaml", "ppo/hopper.yaml", "ppo/halfcheetah.yaml"]
# About a hundred env steps and a handful of updates per algorithm, in 2 iterations.
SHRINK = {
    "SAC": dict(
        rollout_fragment_length=32,
        train_batch_size=32,
        training_intensity=16,
        num_steps_sampled_before_learning_starts=64,
        # The file's 1M-transition buffer is allocated at the first write: seconds of zeroing.
        replay_buffer_config={"type": "ReplayBuffer", "capacity": 1000},
    ),
    "PPO": dict(rollout_fragment_length="auto", train_batch_size=128, minibatch_size=64, num_epochs=1),
}


def test_hopper_as_created_by_the_project_passes_check_env():
    env = lightning_rl.make_env("Hopper-v5")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # style hints (float64 observations) are warnings
            check_env(env.unwrapped, skip_render_check=True)
            check_env(env, skip_render_check=True)
    finally:
        env.close()


def _instantiate(spec: dict):
    module_name, _, class_name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**spec.get("init_args", {}))


@pytest.mark.parametrize("config_name", CONFIGS)
def test_shipped_mujoco_config_builds_and_trains(config_name, quiet_trainer_kwargs):
    config = yaml.safe_load((REPO / "configs" / config_name).read_text())
    callbacks = [_instantiate(spec) for spec in config["trainer"]["callbacks"]]
    stops = {type(c): c for c in callbacks}
    assert stops[StopOnReturn].threshold > 0 and stops[StopOnEnvSteps].max_env_steps > 0, "a stated target"
    init_args = dict(config["model"]["init_args"])
    assert init_args["env"] in ("Hopper-v5", "HalfCheetah-v5")
    pl.seed_everything(config["seed_everything"], verbose=False)
    module_name, _, class_name = config["model"]["class_path"].rpartition(".")
    algo_class = getattr(importlib.import_module(module_name), class_name)
    algo = algo_class(**{**init_args, **SHRINK[class_name]})
    trainer = pl.Trainer(**{**quiet_trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0})
    trainer.fit(algo)
    assert algo.num_env_steps_sampled_lifetime >= 96, "the MuJoCo steps were sampled"
    assert trainer.global_step > 0, "the learner updated"
    losses = {k: float(v) for k, v in trainer.callback_metrics.items() if "loss" in k}
    assert losses, f"no loss was logged: {sorted(trainer.callback_metrics)}"
    assert all(math.isfinite(v) for v in losses.values()), losses
