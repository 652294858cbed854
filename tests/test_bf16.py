"""Every built-in algorithm trains under ``Trainer(precision="bf16-mixed")`` with its gradients clipped.

Lightning's mixed-precision plugin refuses to clip the gradients of an optimizer that unscales
them itself (fused Adam), and most algorithms clip by default (PPO's ``grad_clip=0.5``): each run
here is two tiny iterations with clipping on, so a refusal or a dtype mismatch fails the test.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl import registry
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.offline.record import record_episodes

ONLINE = {"env": "CartPole-v1", "num_env_runners": 0, "evaluation_duration": 1, "seed": 0}
OFFLINE = {"env": "CartPole-v1", "evaluation_duration": 1, "seed": 0}

# Tiny settings per built-in algorithm; gradient clipping on wherever the algorithm has it.
TINY: dict[str, dict] = {
    "PPO": {**ONLINE, "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 1, "grad_clip": 0.5},
    "IMPALA": {
        **ONLINE,
        "rollout_fragment_length": 16,
        "train_batch_size": 32,
        "minibatch_size": 16,
        "grad_clip": 40.0,
    },
    "APPO": {
        **ONLINE,
        "rollout_fragment_length": 16,
        "train_batch_size": 32,
        "minibatch_size": 16,
        "grad_clip": 40.0,
    },
    "DQN": {
        **ONLINE,
        "rollout_fragment_length": 32,
        "train_batch_size": 32,
        "num_steps_sampled_before_learning_starts": 0,
        "grad_clip": 10.0,
    },
    "SAC": {
        **ONLINE,
        "rollout_fragment_length": 32,
        "train_batch_size": 32,
        "num_steps_sampled_before_learning_starts": 0,
        "grad_clip": 10.0,
    },
    "BC": {**OFFLINE, "train_batch_size": 64, "dataset_num_iters_per_learner": 2, "grad_clip": 1.0},
    "MARWIL": {**OFFLINE, "train_batch_size": 64, "dataset_num_iters_per_learner": 2, "grad_clip": 1.0},
    "CQL": {**OFFLINE, "train_batch_size": 64, "dataset_num_iters_per_learner": 2, "grad_clip": 1.0},
    "DreamerV3": {
        **ONLINE,
        "model_size": "nano",
        "batch_size_B": 2,
        "batch_length_T": 8,
        "horizon_H": 3,
        "training_ratio": 32,
        "num_steps_sampled_before_learning_starts": 32,
    },
}
OFFLINE_ALGORITHMS = {"BC", "MARWIL", "CQL"}


@pytest.fixture(scope="module")
def tiny_recording(tmp_path_factory) -> str:
    """A few hundred CartPole steps of an untrained PPO, recorded as the offline algorithms' input."""
    path = tmp_path_factory.mktemp("bf16_recording")
    record_episodes(PPO("CartPole-v1", seed=0), path, 400, num_envs=2, seed=0)
    return str(path)


def test_every_built_in_algorithm_is_covered():
    built_in = {
        row["name"]
        for row in registry.list_registered()
        if row["kind"] == "algorithm" and row["source"].startswith("lightning-rl ")
    }
    assert built_in == set(TINY), "add the new algorithm's tiny bf16 settings to TINY"


@pytest.mark.parametrize("name", sorted(TINY))
def test_bf16_mixed_precision_with_gradient_clipping(name, tiny_recording, quiet_trainer_kwargs):
    kwargs = dict(TINY[name])
    if name in OFFLINE_ALGORITHMS:
        kwargs["input_"] = tiny_recording
    algo = registry.get_algorithm_class(name)(**kwargs)
    before = {k: v.detach().clone() for k, v in algo.state_dict().items() if v.is_floating_point()}
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 2, "check_val_every_n_epoch": 2}, precision="bf16-mixed"
    )
    trainer.fit(algo)
    assert trainer.current_epoch == 2
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["evaluation/episode_return_mean"]))
    losses = {k: float(v) for k, v in metrics.items() if k.startswith("learners/") and "loss" in k}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses
    after = algo.state_dict()
    assert all(torch.isfinite(after[k]).all() for k in before), "non-finite weights after bf16 updates"
    assert any(not torch.equal(before[k], after[k]) for k in before), "bf16 updates changed no weight"
