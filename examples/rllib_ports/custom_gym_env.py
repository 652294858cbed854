"""Port of RLlib's ``examples/envs/custom_gym_env.py``: PPO on a custom gymnasium corridor env.

RLlib's target: ``env_runners/episode_return_mean`` 0.9 within 50 iterations / 100k env steps
(RLlib reports 0.91 at 28k steps). Changed: imports, and RLlib's script helpers replaced by a
plain ``algo.train()`` loop (``_loop.py``) with the same stop criteria.

    python examples/rllib_ports/custom_gym_env.py [--corridor-length 10]
"""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
from _loop import example_args, train_until
from gymnasium.spaces import Box, Discrete

from lightning_rl import PPOConfig


class SimpleCorridor(gym.Env):
    """Walk right from S to G (``corridor_length`` cells); -0.01 per step, U(0.5, 1.5) at G."""

    def __init__(self, config: dict | None = None):
        config = config or {}
        self.end_pos = config.get("corridor_length", 7)
        self.cur_pos = 0
        self.action_space = Discrete(2)
        self.observation_space = Box(0.0, self.end_pos, shape=(1,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        random.seed(seed)
        self.cur_pos = 0
        return np.array([self.cur_pos], np.float32), {"env_state": "reset"}

    def step(self, action):
        assert action in [0, 1], action
        if action == 0 and self.cur_pos > 0:
            self.cur_pos -= 1
        elif action == 1:
            self.cur_pos += 1
        terminated = self.cur_pos >= self.end_pos
        reward = random.uniform(0.5, 1.5) if terminated else -0.01
        return np.array([self.cur_pos], np.float32), reward, terminated, False, {}


def main(argv=None) -> dict:
    args = example_args(
        default_reward=0.9,
        default_iters=50,
        default_timesteps=100000,
        argv=argv,
        extra=lambda p: p.add_argument("--corridor-length", type=int, default=10),
    )
    base_config = PPOConfig().environment(
        SimpleCorridor, env_config={"corridor_length": args.corridor_length}
    )
    return train_until(base_config, "custom_gym_env", args)


if __name__ == "__main__":
    main()
