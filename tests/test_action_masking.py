"""Action masks in single-agent envs: RLlib's ``Dict(observations, action_mask)`` layout trains
with PPO and DQN, illegal actions are never taken, and the masking code is the multi-agent one."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from lightning_rl import DQNConfig, PPOConfig
from lightning_rl.algorithms.multi_agent import RandomPolicy
from lightning_rl.modules.policy_networks import MASKED_LOGIT, StochasticPolicy
from lightning_rl.modules.q_networks import EpsilonGreedyQPolicy

N_ACTIONS = 4


class MaskedTargetEnv(gym.Env):
    """Each step shows a target (one-hot) and a random set of legal actions that includes it.

    Reward: +1 for the target, 0 for another legal action, -1 (and a count in
    ``illegal_actions``) for an illegal one; 10 steps per episode, so the best return is 10.
    The mask is a float ``Box(0, 1)`` as in RLlib's ``ActionMaskEnv`` (all-float Dict
    observations once crashed PPO's GAE), under ``obs_key`` ("observations" is RLlib's).
    """

    illegal_actions: ClassVar[int] = 0
    legal_actions: ClassVar[int] = 0

    def __init__(self, config: dict | None = None) -> None:
        config = dict(config or {})
        self.obs_key = config.get("obs_key", "observations")
        self.observation_space = spaces.Dict(
            {
                self.obs_key: spaces.Box(0.0, 1.0, (N_ACTIONS,), np.float32),
                "action_mask": spaces.Box(0.0, 1.0, (N_ACTIONS,), np.float32),
            }
        )
        self.action_space = spaces.Discrete(N_ACTIONS)
        self.t = 0

    def _draw(self):
        self.target = int(self.np_random.integers(N_ACTIONS))
        self.mask = (self.np_random.random(N_ACTIONS) < 0.5).astype(np.float32)
        self.mask[self.target] = 1.0
        target = np.zeros(N_ACTIONS, np.float32)
        target[self.target] = 1.0
        return {self.obs_key: target, "action_mask": self.mask.copy()}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        self.t += 1
        if self.mask[int(action)] == 0:
            MaskedTargetEnv.illegal_actions += 1
            reward = -1.0
        else:
            MaskedTargetEnv.legal_actions += 1
            reward = 1.0 if int(action) == self.target else 0.0
        return self._draw(), reward, False, self.t >= 10, {}


@pytest.fixture
def counted():
    MaskedTargetEnv.illegal_actions = MaskedTargetEnv.legal_actions = 0
    yield MaskedTargetEnv
    MaskedTargetEnv.illegal_actions = MaskedTargetEnv.legal_actions = 0


def test_ppo_learns_a_masked_env_and_never_takes_an_illegal_action(counted, tmp_path):
    algo = (
        PPOConfig(defaults="native")
        .environment(counted, env_config={"obs_key": "observations"})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4)
        .training(train_batch_size=512, minibatch_size=128, num_epochs=6, lr=3e-3, entropy_coeff=0.0)
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        for _ in range(8):
            result = algo.train()
        evaluation = algo.evaluate()
    finally:
        algo.stop()
    assert counted.legal_actions >= 8 * 512
    assert counted.illegal_actions == 0
    assert result["env_runners"]["episode_return_mean"] >= 8.0
    assert evaluation["episode_return_mean"] >= 9.0


def test_dqn_learns_a_masked_env_and_never_takes_an_illegal_action(counted, tmp_path):
    algo = (
        DQNConfig(defaults="native")
        .environment(counted, env_config={"obs_key": "observation"})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4, rollout_fragment_length=25)
        .training(
            num_steps_sampled_before_learning_starts=200,
            epsilon=[[0, 1.0], [800, 0.02]],
            target_network_update_freq=200,
            lr=1e-3,
            training_intensity=8,
        )
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path), logger=False)
        .build_algo()
    )
    try:
        while algo.train()["num_env_steps_sampled_lifetime"] < 1500:
            pass
        evaluation = algo.evaluate()
    finally:
        algo.stop()
    # Epsilon-greedy exploration (fully random at first) draws among the legal actions only.
    assert counted.legal_actions >= 1500
    assert counted.illegal_actions == 0
    assert evaluation["episode_return_mean"] >= 9.0


def _masked_batch(n: int = 256):
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(n, N_ACTIONS, generator=generator) < 0.5).float()
    mask[:, 0] = 1.0
    obs = torch.rand(n, N_ACTIONS, generator=generator)
    return obs, mask


@pytest.mark.parametrize("obs_key", ["observation", "observations"])
def test_every_runner_policy_samples_legal_actions_only(obs_key):
    """Policy nets, Q-networks (greedy and epsilon-greedy) and random opponents share one mask."""
    space = spaces.Dict(
        {obs_key: spaces.Box(0.0, 1.0, (N_ACTIONS,)), "action_mask": spaces.Box(0.0, 1.0, (N_ACTIONS,))}
    )
    actions = spaces.Discrete(N_ACTIONS)
    obs, mask = _masked_batch()
    batch = {obs_key: obs, "action_mask": mask}
    q_policy = EpsilonGreedyQPolicy(space, actions)
    q_policy.set_extra({"epsilon": 1.0})
    policies = [StochasticPolicy(space, actions), q_policy, RandomPolicy(space, actions)]
    generator = torch.Generator().manual_seed(1)
    for policy in policies:
        for explore in (True, False):
            action = policy(batch, explore=explore, generator=generator)["action"]
            assert bool(mask.gather(1, action[:, None].long()).all()), type(policy).__name__
    q_values = q_policy.q_net(batch)
    assert bool((q_values[mask == 0] == MASKED_LOGIT).all())
