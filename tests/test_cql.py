"""CQL: discrete (DiscreteCQLLoss) on CartPole and continuous (CQLLoss) on a one-step target task."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl.algorithms.cql import CQL, CQLConfig, CQLModule, DiscreteCQLModule
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnReturn
from lightning_rl.errors import ConfigError
from lightning_rl.offline import record_episodes
from tests import offline_fixtures
from tests.envs import TargetEnv
from tests.offline_fixtures import QUIET


@pytest.fixture
def expert_data(tmp_path_factory):
    return offline_fixtures.cartpole_expert_data(tmp_path_factory)


@pytest.mark.learning
def test_discrete_cql_learns_cartpole_from_recorded_expert_data(expert_data):
    pl.seed_everything(0, verbose=False)
    algo = CQL(
        "CartPole-v1",
        input_=expert_data["path"],
        gamma=0.9,
        lr=1e-3,
        critic_lr=1e-3,
        min_q_weight=1.0,
        train_batch_size=256,
        dataset_num_iters_per_learner=500,
        evaluation_duration=10,
        model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "relu"},
        seed=0,
    )
    assert isinstance(algo.module, DiscreteCQLModule)
    stop = StopOnReturn(475)
    trainer = pl.Trainer(max_epochs=6, callbacks=[stop], **QUIET)
    trainer.fit(algo)
    assert stop.reached_at is not None, f"discrete CQL reached only {trainer.callback_metrics}"
    assert "learners/default_policy/cql_loss" in trainer.callback_metrics


@pytest.mark.learning
def test_continuous_cql_learns_from_random_actions(tmp_path):
    # An untrained Gaussian policy's actions (clipped into [-2, 2]): wide, uninformed data.
    record_episodes(PPO(TargetEnv, seed=0), tmp_path, 4000, num_envs=8, seed=1)
    pl.seed_everything(0, verbose=False)
    algo = CQL(
        TargetEnv,
        input_=str(tmp_path),
        actor_lr=1e-3,
        critic_lr=1e-3,
        alpha_lr=1e-3,
        bc_iters=50,
        min_q_weight=1.0,
        train_batch_size=256,
        dataset_num_iters_per_learner=200,
        evaluation_duration=100,
        model_config={"fcnet_hiddens": [64, 64], "fcnet_activation": "relu"},
        seed=0,
    )
    module = algo.module
    assert isinstance(module, CQLModule)
    before = {k: v.clone() for k, v in module.policy_weights().items()}
    stop = StopOnReturn(-0.1)
    trainer = pl.Trainer(max_epochs=10, callbacks=[stop], **QUIET)
    trainer.fit(algo)
    assert stop.reached_at is not None, f"CQL reached only {trainer.callback_metrics}"
    # The runners act with the actor the loss trains (torchrl's parameters are the module's).
    assert any(not torch.equal(before[k], v) for k, v in module.policy_weights().items())


def test_cql_config_and_hyperparameter_errors(expert_data):
    algo = CQLConfig().environment("CartPole-v1").offline_data(input_=expert_data["path"]).build_algorithm()
    requirements = algo.offline_requirements()
    assert requirements.next_observation and not requirements.returns
    with pytest.raises(ConfigError, match="tau"):
        CQL("CartPole-v1", tau=2.0)
    with pytest.raises(ConfigError, match="target_entropy"):
        CQL("Pendulum-v1", target_entropy="high")
    with pytest.raises(ConfigError, match="bc_iters"):
        CQL("Pendulum-v1", bc_iters=-1)
