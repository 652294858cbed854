"""PPO's learner connector (torchrl GAE) against a hand computation, truncation included."""

from __future__ import annotations

import pytest
import torch

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.data.experience import results_to_tensordict
from lightning_rl.env_runners import EnvRunner
from tests.envs import CountingEnv


def hand_gae(rewards, values, next_values, terminated, done, gamma, lam):
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1.0 - terminated[t]) - values[t]
        running = delta + gamma * lam * (1.0 - done[t]) * running
        advantages[t] = running
    return advantages


def rollout(algo: PPO, steps: int):
    runner = EnvRunner(algo.env_runner_spec(num_envs=2))
    result = runner.sample(steps, state=algo.policy_state())
    return results_to_tensordict([result])


@pytest.mark.parametrize("terminate", [True, False])
def test_gae_matches_hand_computation(terminate):
    algo = PPO(CountingEnv, {"lengths": [3, 4], "terminate": terminate}, gamma=0.9, lambda_=0.8, seed=0)
    batch = rollout(algo, 9)
    with torch.no_grad():
        values = algo.module.value_net(batch["observation"]).squeeze(-1)
        next_values = algo.module.value_net(batch["next", "observation"]).squeeze(-1)
        out = algo.process_rollout(batch.clone())
    for env in range(2):
        expected = hand_gae(
            batch["next", "reward"][env, :, 0].tolist(),
            values[env].tolist(),
            next_values[env].tolist(),
            batch["next", "terminated"][env, :, 0].float().tolist(),
            batch["next", "done"][env, :, 0].float().tolist(),
            0.9,
            0.8,
        )
        assert torch.allclose(out["advantage"][env, :, 0], torch.tensor(expected), atol=1e-5)
        assert torch.allclose(out["value_target"][env, :, 0], torch.tensor(expected) + values[env], atol=1e-5)


def test_truncated_steps_bootstrap_from_the_final_observation_and_terminated_do_not():
    # A constant critic V = 2 makes every delta easy to write down by hand.
    for terminate, expected_last_delta in [(True, 1.0 - 2.0), (False, 1.0 + 0.5 * 2.0 - 2.0)]:
        algo = PPO(CountingEnv, {"lengths": [3], "terminate": terminate}, gamma=0.5, lambda_=0.0, seed=0)
        head = algo.module.value_net.head[-1]
        with torch.no_grad():
            head.weight.zero_()
            head.bias.fill_(2.0)
        out = algo.process_rollout(rollout(algo, 3))
        # lambda = 0: advantage = one-step TD error; mid-episode delta = 1 + 0.5 * 2 - 2 = 0.
        assert out["advantage"][0, :, 0].tolist() == pytest.approx([0.0, 0.0, expected_last_delta])
