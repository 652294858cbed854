"""Plugging your own network into any algorithm: the encoder contract.

    python examples/custom_model.py

A custom model is an ``nn.Module`` built as ``custom_model(observation_space, **custom_model_config)``
that maps an observation batch ``[B, ...]`` to features ``[B, F]`` (give it an ``out_dim``
attribute, or it is measured on a sample). The algorithm adds its heads (policy distribution,
value, Q-values ...) on top, so the same encoder serves PPO, DQN, SAC, BC and the rest. A
TensorDictModule works the same way. Define the class at module level of an importable module
when you use Ray runners, which rebuild it from its import path.

To change more than the encoder, subclass the algorithm and override
``build_policy_module`` (see ``examples/ppo_custom_loss.py`` for the loss).
"""

import gymnasium as gym
import torch
from torch import nn

from lightning_rl.algorithms.ppo import PPOConfig


class ResidualMLP(nn.Module):
    """A LayerNorm'd residual MLP, as an example of a user's encoder."""

    def __init__(self, observation_space: gym.Space, width: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.input = nn.Linear(int(observation_space.shape[0]), width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.Tanh()) for _ in range(blocks)
        )
        self.out_dim = width

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.input(obs)
        for block in self.blocks:
            x = x + block(x)
        return x


if __name__ == "__main__":
    algo = (
        PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .rl_module(
            model_config={"custom_model": ResidualMLP, "custom_model_config": {"width": 64, "blocks": 2}}
        )
        .training(train_batch_size=256, minibatch_size=256, num_epochs=10, lr=1e-3, gamma=0.98, lambda_=0.8)
        .evaluation(evaluation_interval=5, evaluation_duration=10)
        .debugging(seed=0)
        .build_algo()
    )
    print(algo.algorithm.module.policy_net.encoder)
    for _ in range(60):
        result = algo.train()
        if "evaluation" in result:
            print(result["training_iteration"], result["evaluation"]["episode_return_mean"])
    algo.stop()
