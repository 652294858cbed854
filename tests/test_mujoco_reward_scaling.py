"""``NormalizeRewards`` (the learner connector of the shipped PPO MuJoCo configs): rewards divided
by the running std of the discounted return, the rule of SB3's ``VecNormalize(norm_reward=True)``,
written out here step by step in numpy as the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from lightning_rl.connectors.reward_scaling import NormalizeRewards
from lightning_rl.errors import ConfigError


def _batch(rewards: np.ndarray, dones: np.ndarray) -> TensorDict:
    n, t = rewards.shape
    return TensorDict(
        {
            "observation": torch.zeros(n, t, 3),
            "next": {
                "reward": torch.as_tensor(rewards, dtype=torch.float32),
                "done": torch.as_tensor(dones),
            },
        },
        batch_size=[n, t],
    )


def _reference(batches, gamma, epsilon=1e-8, clip=10.0):
    """SB3's VecNormalize reward path, one vector step at a time (its per-step variance update
    differs; this updates once per batch, as the connector does)."""
    returns = None
    all_returns: list[np.ndarray] = []
    out = []
    for rewards, dones in batches:
        returns = np.zeros(rewards.shape[0]) if returns is None else returns
        seen = []
        for t in range(rewards.shape[1]):
            returns = returns * gamma + rewards[:, t]
            seen.append(returns.copy())
            returns[dones[:, t]] = 0.0
        all_returns.extend(seen)
        var = np.concatenate(all_returns).var()
        out.append(np.clip(rewards / np.sqrt(var + epsilon), -clip, clip))
    return out


def test_rewards_are_divided_by_the_running_std_of_the_discounted_return():
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
        rewards = rng.normal(3.0, 1.0, size=(2, 40))
        dones = rng.random((2, 40)) < 0.05
        batches.append((rewards, dones))
    connector = NormalizeRewards(gamma=0.9)
    connector.setup(None, None)
    expected = _reference(batches, gamma=0.9)
    for (rewards, dones), want in zip(batches, expected, strict=True):
        got = connector(_batch(rewards, dones))["next", "reward"]
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)
    # Returns of ~30 (rewards ~3, horizon ~10): the scaled rewards are a few tenths.
    assert 0.05 < float(got.abs().mean()) < 1.0


def test_the_running_statistics_survive_a_checkpoint_round_trip():
    rng = np.random.default_rng(1)
    first = NormalizeRewards(gamma=0.99)
    first(_batch(rng.normal(size=(1, 30)), np.zeros((1, 30), dtype=bool)))
    second = NormalizeRewards(gamma=0.99)
    second.set_state(first.get_state())
    rewards, dones = rng.normal(size=(1, 30)), np.zeros((1, 30), dtype=bool)
    torch.testing.assert_close(
        first(_batch(rewards, dones))["next", "reward"], second(_batch(rewards, dones))["next", "reward"]
    )


@pytest.mark.parametrize("bad", [{"gamma": 1.5}, {"epsilon": -1.0}, {"clip": 0}, {"gamma": "0.9"}])
def test_bad_settings_are_refused_by_name(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        NormalizeRewards(**bad)
