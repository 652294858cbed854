"""PPO's GAE function gives torchrl's estimator's values (it replaced it to keep torchrl.data
out of PPO's import; see lightning_rl/algorithms/ppo/gae.py)."""

from __future__ import annotations

import pytest
import torch
from torchrl.objectives.value.functional import td0_advantage_estimate, vec_generalized_advantage_estimate

from lightning_rl.algorithms.ppo.gae import generalized_advantage_estimate, numpy_scan, torch_scan


def rollout(num_envs: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """Random values and rewards with episode ends: some terminated, some only truncated."""
    g = torch.Generator().manual_seed(seed)
    shape = (num_envs, steps, 1)
    terminated = torch.rand(shape, generator=g) < 0.05
    truncated = (torch.rand(shape, generator=g) < 0.05) & ~terminated
    return {
        "value": torch.randn(shape, generator=g),
        "next_value": torch.randn(shape, generator=g),
        "reward": torch.randn(shape, generator=g),
        "done": terminated | truncated,
        "terminated": terminated,
    }


@pytest.mark.parametrize(("gamma", "lambda_"), [(0.99, 0.95), (0.98, 0.8), (1.0, 1.0), (0.5, 0.0)])
@pytest.mark.parametrize(("num_envs", "steps"), [(8, 32), (1, 500), (3, 1)])
def test_matches_torchrl_estimators(gamma: float, lambda_: float, num_envs: int, steps: int) -> None:
    data = rollout(num_envs, steps, seed=num_envs * 1000 + steps)
    args = (data["value"], data["next_value"], data["reward"], data["done"], data["terminated"])
    advantage, value_target = generalized_advantage_estimate(gamma, lambda_, *args)
    if gamma * lambda_ == 0.0:
        expected = td0_advantage_estimate(gamma, *args)
        expected_target = expected + data["value"]
    else:
        expected, expected_target = vec_generalized_advantage_estimate(
            torch.tensor(gamma), torch.tensor(lambda_), *args, time_dim=-2
        )
    torch.testing.assert_close(advantage, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value_target, expected_target, rtol=1e-5, atol=1e-5)


def test_by_hand_truncation_bootstraps_and_termination_does_not() -> None:
    # One env, three steps: step 0 truncated (bootstraps, ends the recursion), step 2 terminated.
    value = torch.tensor([[[1.0], [2.0], [3.0]]])
    next_value = torch.tensor([[[10.0], [3.0], [100.0]]])
    reward = torch.tensor([[[0.5], [1.0], [2.0]]])
    done = torch.tensor([[[True], [False], [True]]])
    terminated = torch.tensor([[[False], [False], [True]]])
    gamma, lambda_ = 0.5, 0.5
    args = (value, next_value, reward, done, terminated)
    advantage, target = generalized_advantage_estimate(gamma, lambda_, *args)
    delta2 = 2.0 - 3.0  # terminated: no bootstrap
    delta1 = 1.0 + 0.5 * 3.0 - 2.0
    delta0 = 0.5 + 0.5 * 10.0 - 1.0  # truncated: bootstraps from the final observation's value
    expected = torch.tensor([[[delta0], [delta1 + 0.25 * delta2], [delta2]]])
    torch.testing.assert_close(advantage, expected)
    torch.testing.assert_close(target, expected + value)


def test_mismatched_shapes_are_one_clear_error() -> None:
    value = torch.zeros(2, 4, 1)
    with pytest.raises(ValueError, match="one shape"):
        short = torch.zeros(2, 3, 1)
        generalized_advantage_estimate(0.9, 0.9, value, short, value, value.bool(), value.bool())


def test_the_accelerator_scan_matches_the_host_scan() -> None:
    """GAE on a GPU runs the torch scan (no copy to the host); it must equal the numpy one."""
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(4, 64, 1, generator=g)
    decay = 0.9 * (torch.rand(4, 64, 1, generator=g) > 0.05)
    torch.testing.assert_close(torch_scan(delta, decay), numpy_scan(delta, decay))
