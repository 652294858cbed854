"""MARWIL: advantage weights against a hand computation, and learning CartPole from recorded data."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from gymnasium import spaces
from tensordict import TensorDict

from lightning_rl.algorithms.marwil import MARWIL, MARWILConfig, MARWILModule
from lightning_rl.callbacks import StopOnReturn
from lightning_rl.errors import ConfigError
from lightning_rl.modules.model_config import DefaultModelConfig
from tests import offline_fixtures
from tests.offline_fixtures import QUIET


@pytest.fixture
def expert_data(tmp_path_factory):
    return offline_fixtures.cartpole_expert_data(tmp_path_factory)


def constant_value_module(value: float, **kwargs) -> MARWILModule:
    module = MARWILModule(
        spaces.Box(-1.0, 1.0, (2,), np.float32),
        spaces.Discrete(2),
        DefaultModelConfig(),
        bc_logstd_coeff=0.0,
        vf_coeff=1.0,
        **kwargs,
    )
    last = module.value_net.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)
    return module


def test_advantage_weights_match_a_hand_computation():
    beta, start, rate, value = 0.5, 4.0, 0.25, 2.0
    module = constant_value_module(
        value,
        beta=beta,
        moving_average_sqd_adv_norm_start=start,
        moving_average_sqd_adv_norm_update_rate=rate,
    )
    batch = TensorDict(
        {
            "observation": torch.randn(3, 2),
            "action": torch.tensor([0, 1, 1]),
            "return_to_go": torch.tensor([1.0, 3.0, 0.5]),
            "bootstrap_discount": torch.tensor([0.81, 0.0, 0.9]),
            "bootstrap_observation": torch.randn(3, 2),
        },
        batch_size=[3],
    )
    # By hand: V = 2 everywhere, so targets = rtg + discount * 2 and A = targets - 2.
    advantages = [1.0 + 0.81 * 2 - 2, 3.0 - 2, 0.5 + 0.9 * 2 - 2]
    squared_mean = sum(a * a for a in advantages) / 3
    c2 = start + rate * (squared_mean - start)
    expected = [math.exp(beta * a / (1e-8 + math.sqrt(c2))) for a in advantages]
    weights, adv, _, sq = module.advantage_weights(batch)
    assert adv.tolist() == pytest.approx(advantages, rel=1e-5)
    assert float(sq.detach()) == pytest.approx(squared_mean, rel=1e-5)
    assert float(module.moving_avg_sqd_adv_norm) == pytest.approx(c2, rel=1e-6)
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    assert not weights.requires_grad
    # The loss: -mean(w * log pi(a|s)) + vf_coeff * 0.5 * mean(A^2); c^2 moves again.
    loss, stats = module.compute_loss(batch)
    c2 = c2 + rate * (squared_mean - c2)
    expected = torch.tensor([math.exp(beta * a / (1e-8 + math.sqrt(c2))) for a in advantages])
    params = module.policy_net(batch["observation"])
    log_prob = module.policy_net.distribution.log_prob(params, batch["action"])
    policy_loss = -(expected * log_prob).mean()
    assert float(stats["policy_loss"].detach()) == pytest.approx(float(policy_loss.detach()), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(policy_loss.detach()) + 0.5 * squared_mean, rel=1e-5)


def test_beta_zero_is_behaviour_cloning_without_a_critic():
    module = MARWILModule(
        spaces.Box(-1.0, 1.0, (2,), np.float32),
        spaces.Box(-1.0, 1.0, (1,), np.float32),
        DefaultModelConfig(),
        beta=0.0,
        bc_logstd_coeff=0.5,
        vf_coeff=1.0,
        moving_average_sqd_adv_norm_start=100.0,
        moving_average_sqd_adv_norm_update_rate=1e-8,
    )
    assert module.value_net is None
    batch = TensorDict({"observation": torch.randn(4, 2), "action": torch.rand(4, 1)}, batch_size=[4])
    with torch.no_grad():
        loss, _ = module.compute_loss(batch)
        loc, scale = module.policy_net(batch["observation"])
    log_prob = module.policy_net.distribution.log_prob((loc, scale), batch["action"])
    assert float(loss) == pytest.approx(float(-(log_prob + 0.5 * scale.log().mean(-1)).mean()), rel=1e-5)


@pytest.mark.learning
def test_marwil_learns_cartpole_from_recorded_expert_data(expert_data):
    pl.seed_everything(0, verbose=False)
    algo = MARWIL(
        "CartPole-v1",
        input_=expert_data["path"],
        lr=1e-3,
        train_batch_size=512,
        dataset_num_iters_per_learner=100,
        evaluation_duration=20,
        seed=0,
    )
    stop = StopOnReturn(475)
    trainer = pl.Trainer(max_epochs=10, callbacks=[stop], **QUIET)
    trainer.fit(algo)
    assert stop.reached_at is not None, f"MARWIL reached only {trainer.callback_metrics}"
    assert algo.num_env_steps_trained_lifetime <= 10 * 100 * 512
    assert "learners/default_policy/vf_loss" in trainer.callback_metrics


def test_marwil_config_and_hyperparameter_errors(expert_data):
    config = MARWILConfig().environment("CartPole-v1").offline_data(input_=expert_data["path"])
    algo = config.training(beta=0.5, vf_coeff=0.1).build_algorithm()
    assert algo.hparams.beta == 0.5 and algo.offline_requirements().returns
    with pytest.raises(ConfigError, match=r"beta must be within \[0, 1\]"):
        MARWIL("CartPole-v1", beta=2.0)
    with pytest.raises(ConfigError, match="dataset_num_iters_per_learner"):
        MARWIL("CartPole-v1", dataset_num_iters_per_learner=0)
    with pytest.raises(ConfigError, match="multi-agent"):
        MARWIL("MultiAgentCartPole")
