"""Training on your own environment: a gymnasium.Env class, registered by name or passed directly.

    python examples/custom_env.py

Three equivalent ways to point an algorithm at a custom env:

1. pass the class: ``PPOConfig().environment(MyEnv, env_config={...})`` (its ``__init__`` gets
   the env_config dict, with ``worker_index``/``vector_index`` attributes per copy);
2. ``register_env("name", creator)`` then ``.environment("name")`` (RLlib's way; names from
   ``ray.tune.register_env`` resolve too);
3. ship it in a package with a ``lightning_rl.envs`` entry point (see plugins/example_plugin).
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lightning_rl import register_env
from lightning_rl.algorithms.ppo import PPOConfig


class GoLeftEnv(gym.Env):
    """Start at a random cell of a corridor; reaching cell 0 ends the episode with +1."""

    def __init__(self, config: dict | None = None) -> None:
        config = config or {}
        self.size = int(config.get("size", 8))
        self.observation_space = spaces.Box(0.0, float(self.size), (1,), np.float32)
        self.action_space = spaces.Discrete(2)  # 0 = left, 1 = right
        self.position = 0
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = int(self.np_random.integers(1, self.size))
        self.steps = 0
        return np.array([self.position], np.float32), {}

    def step(self, action):
        self.position = max(0, min(self.size - 1, self.position + (1 if action == 1 else -1)))
        self.steps += 1
        terminated = self.position == 0
        truncated = self.steps >= 4 * self.size
        reward = 1.0 if terminated else -0.01
        return np.array([self.position], np.float32), reward, terminated, truncated, {}


register_env("go-left", lambda config: GoLeftEnv(config))

algo = (
    PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
    .environment("go-left", env_config={"size": 8})  # or .environment(GoLeftEnv, ...)
    .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
    .training(train_batch_size=512, minibatch_size=128, num_epochs=4, lr=1e-3)
    .evaluation(evaluation_interval=5, evaluation_duration=16)
    .build_algo()
)
for _ in range(20):
    result = algo.train()
    if "evaluation" in result:
        print(result["training_iteration"], result["evaluation"]["episode_return_mean"])
algo.stop()
