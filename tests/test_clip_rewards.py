"""RLlib's ``environment(clip_rewards=...)`` (issue 19 item 8): the rewards an algorithm learns
from are clipped where a sampled batch enters the learner; the runners' episode returns
(training and evaluation metrics) stay the env's own; bad values are refused at construction."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from lightning_rl.algorithms.bc import BC
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.data.experience import results_to_tensordict
from lightning_rl.env_runners.env_runner import EnvRunner
from lightning_rl.errors import ConfigError

REWARDS = (5.0, -0.5)  # alternating; an episode is 4 steps: return 9.0


class BigRewardEnv(gym.Env):
    """4-step episodes with rewards 5.0, -0.5, 5.0, -0.5 whatever the action."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config=None) -> None:
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        reward = REWARDS[self.t % 2]
        self.t += 1
        return np.zeros(2, np.float32), reward, self.t >= 4, False, {}


def _learned_rewards(clip_rewards) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """(rewards as sampled, rewards the learner gets, episode returns the runner reported)."""
    ppo = PPO(BigRewardEnv, clip_rewards=clip_rewards, train_batch_size=8, minibatch_size=8)
    runner = EnvRunner(ppo.env_runner_spec(num_envs=1))
    result = runner.sample(8, state=ppo.policy_state())
    sampled = result.data["next"]["reward"].clone()
    batch = ppo.process_rollout(results_to_tensordict([result]))
    return sampled, batch["next", "reward"], result.stats.returns


@pytest.mark.parametrize(
    ("setting", "expected"), [(True, (1.0, -1.0)), (2.0, (2.0, -0.5)), (None, REWARDS), (False, REWARDS)]
)
def test_training_rewards_are_clipped_reported_returns_are_not(setting, expected):
    sampled, learned, returns = _learned_rewards(setting)
    assert sampled.flatten().tolist() == list(REWARDS) * 4
    assert learned.flatten().tolist() == list(expected) * 4
    assert returns == [9.0, 9.0]


def test_training_and_evaluation_metrics_stay_unclipped(tmp_path):
    algo = (
        PPOConfig()
        .environment(BigRewardEnv, clip_rewards=True)
        .env_runners(num_env_runners=0)
        .training(train_batch_size=16, minibatch_size=16, num_epochs=1)
        .evaluation(evaluation_duration=2)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        result = algo.train()
        assert result["env_runners"]["episode_return_mean"] == 9.0
        assert algo.evaluate()["env_runners"]["episode_return_mean"] == 9.0
    finally:
        algo.stop()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "yes", [1.0, 2.0]])
def test_bad_clip_rewards_are_refused(bad):
    with pytest.raises(ConfigError, match="clip_rewards must be None or False"):
        PPO(BigRewardEnv, clip_rewards=bad)


def test_offline_algorithms_refuse_clip_rewards():
    with pytest.raises(ConfigError, match="BC learns from offline data"):
        BC("CartPole-v1", clip_rewards=True)
    assert BC("CartPole-v1", clip_rewards=False).hparams.clip_rewards is False
