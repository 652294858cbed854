"""User networks and user losses plug in through the documented contracts."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from tensordict.nn import TensorDictModule
from torch import nn

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.errors import ConfigError


class TinyEncoder(nn.Module):
    def __init__(self, observation_space, width: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(int(observation_space.shape[0]), width), nn.ReLU())

    def forward(self, obs):
        return self.net(obs)


def tensordict_encoder(observation_space, width: int = 8):
    return TensorDictModule(
        nn.Linear(int(observation_space.shape[0]), width), in_keys=["observation"], out_keys=["features"]
    )


def fit(algo, tmp_path, epochs=2):
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(algo)
    return trainer


@pytest.mark.parametrize("custom", [TinyEncoder, "tests.test_custom_models:TinyEncoder", tensordict_encoder])
def test_a_custom_encoder_from_model_config_is_used_everywhere(custom, tmp_path):
    algo = PPO(
        "CartPole-v1",
        model_config={"custom_model": custom, "custom_model_config": {"width": 8}},
        train_batch_size=64,
        minibatch_size=64,
        num_epochs=1,
    )
    encoder = algo.module.policy_net.encoder
    assert encoder.out_dim == 8
    assert algo.hparams.model_config["custom_model"].endswith(("TinyEncoder", "tensordict_encoder"))
    fit(algo, tmp_path)
    runner_policy = algo.module.policy_spec().build()
    assert type(runner_policy.net.encoder) is type(encoder), "the runners build the same custom encoder"


def test_a_custom_model_that_cannot_be_imported_is_one_clear_error():
    class Local(nn.Module):
        def __init__(self, space):
            super().__init__()
            self.out_dim = 4

    with pytest.raises(ConfigError, match="must be importable"):
        PPO("CartPole-v1", model_config={"custom_model": Local})


class PenalisedPPO(PPO):
    def __init__(self, env=None, env_config=None, *, penalty: float = 1.0, **kwargs):
        super().__init__(env, env_config, **kwargs)

    def compute_policy_loss(self, policy_id, batch):
        loss, stats = super().compute_policy_loss(policy_id, batch)
        (logits,) = self.policies[policy_id].policy_net(batch["observation"])
        stats["logit_penalty"] = logits.pow(2).mean()
        return loss + self.hparams.penalty * stats["logit_penalty"], stats


def test_overriding_one_method_changes_the_loss_and_logs_its_stats(tmp_path):
    torch.manual_seed(0)
    algo = PenalisedPPO("CartPole-v1", penalty=10.0, train_batch_size=64, minibatch_size=64, num_epochs=3)
    trainer = fit(algo, tmp_path, epochs=3)
    assert "learners/default_policy/logit_penalty" in trainer.callback_metrics
    torch.manual_seed(0)
    plain = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=3)
    fit(plain, tmp_path, epochs=3)
    assert not torch.equal(algo.module.policy_net.head.weight, plain.module.policy_net.head.weight)
