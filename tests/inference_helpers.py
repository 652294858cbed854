"""Shared pieces of the inference/export tests: envs that log what the runners fed them, a
stateful connector, a stand-in recurrent policy, and short training runs that write checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import lightning.pytorch as pl
import numpy as np
import torch
from gymnasium import spaces

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.connectors import EnvToModule
from lightning_rl.env_runners.env_runner import EnvRunner
from lightning_rl.envs.classes import MultiAgentCartPole
from lightning_rl.modules.policy_networks import InferencePolicy


class RecordingCartPole(gym.Wrapper):
    """CartPole-v1 that logs, for every step, the observation the policy acted on, the action
    the env received, whether that observation started an episode, and the reward earned."""

    log: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, config: dict | None = None) -> None:
        super().__init__(gym.make("CartPole-v1", disable_env_checker=True))
        self.vector_index = int(getattr(config, "vector_index", 0))
        self._obs: np.ndarray | None = None
        self._first = True

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        self._obs, self._first = obs, True
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        RecordingCartPole.log.append(
            {
                "env": self.vector_index,
                "obs": self._obs.copy(),
                "action": np.asarray(action).item(),
                "first": self._first,
                "reward": float(reward),
            }
        )
        self._obs, self._first = obs, False
        return obs, reward, terminated, truncated, info


class PreviousActionReward(EnvToModule):
    """Appends each env copy's previous (module) action and reward to the observation; a
    stateful connector like RLlib's PrevActionsPrevRewards, with no tensor-op form."""

    def setup(self, observation_space: gym.Space) -> gym.Space:
        size = int(np.prod(observation_space.shape)) + 2
        return spaces.Box(-np.inf, np.inf, (size,), np.float32)

    def reset(self, num_envs: int) -> None:
        self._previous = torch.zeros(num_envs, 2)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        self._previous[env_ids] = 0.0

    def record_step(self, actions: torch.Tensor, rewards: torch.Tensor) -> None:
        self._previous = torch.stack([actions.float().reshape(-1), rewards.float().reshape(-1)], dim=-1)

    def __call__(self, obs, *, env_ids=None, update=True):
        previous = self._previous if env_ids is None else self._previous[env_ids]
        return torch.cat([obs.reshape(obs.shape[0], -1).float(), 10.0 * previous], dim=-1)


class EpisodeClockPolicy(InferencePolicy):
    """Stands in for a recurrent policy: its action depends on hidden per-env state (steps since
    the episode started, and the previous action), kept through the recurrent-state hooks."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        super().__init__()
        self.reset(1)

    def reset(self, num_envs: int) -> None:
        self.steps = torch.zeros(num_envs, dtype=torch.long)
        self.previous = torch.zeros(num_envs, dtype=torch.long)

    def episode_start(self, env_ids: torch.Tensor) -> None:
        self.steps[env_ids] = 0
        self.previous[env_ids] = 0

    def forward(self, obs, explore=True, generator=None):
        tilted = (obs[:, 2] > 0.05).long()
        action = torch.where(self.steps % 3 == 2, self.previous, tilted)
        self.steps += 1
        self.previous = action
        return {"action": action, "hidden_steps": self.steps.clone()}


class RecordingMultiAgentCartPole(MultiAgentCartPole):
    """MultiAgentCartPole that logs, per agent and step, the observation acted on and the action."""

    log: ClassVar[list[dict[str, Any]]] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, infos = super().reset(seed=seed, options=options)
        self._last = dict(obs)
        return obs, infos

    def step(self, action_dict):
        for agent_id, action in action_dict.items():
            entry = {
                "agent": agent_id,
                "obs": self._last[agent_id].copy(),
                "action": np.asarray(action).item(),
            }
            RecordingMultiAgentCartPole.log.append(entry)
        result = super().step(action_dict)
        self._last.update(result[0])
        return result


SMALL_PPO = dict(
    num_envs_per_env_runner=4,
    train_batch_size=256,
    minibatch_size=128,
    num_epochs=2,
    seed=0,
)


def train_and_save(path: Path, env: Any = RecordingCartPole, iterations: int = 2, **kwargs: Any) -> PPO:
    """A few PPO iterations with a plain Trainer, then ``trainer.save_checkpoint(path)``."""
    algo = PPO(env, **{**SMALL_PPO, **kwargs})
    trainer = pl.Trainer(
        max_epochs=iterations,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        limit_val_batches=0,
        default_root_dir=str(path.parent),
    )
    trainer.fit(algo)
    trainer.save_checkpoint(path)
    return algo


def evaluation_runner_log(algo: PPO, steps_per_env: int, num_envs: int = 4) -> list[dict[str, Any]]:
    """What an evaluation EnvRunner (frozen filters, greedy actions) fed the env, step by step,
    with the module-side observation the runner's network saw (``"module_obs"``)."""
    runner = EnvRunner(algo.env_runner_spec(num_envs=num_envs, evaluation=True))
    RecordingCartPole.log.clear()
    result = runner.sample(steps_per_env, explore=False, state=algo.policy_state())
    runner.stop()
    log = list(RecordingCartPole.log)
    RecordingCartPole.log.clear()
    assert len(log) == steps_per_env * num_envs
    module_obs = result.data["observation"]  # [num_envs, T, ...]
    for i, entry in enumerate(log):
        entry["module_obs"] = module_obs[entry["env"], i // num_envs].numpy()
    return log


def train_multi_agent_and_log(
    path: Path, steps_per_env: int = 100
) -> tuple[PPO, dict[str, dict[str, np.ndarray]]]:
    """Two agents, two policies (agent i -> "p<i>"), each with its own MeanStdFilter; 2 iterations,
    a checkpoint, then what the multi-agent evaluation runner fed each policy's agents:
    ``{policy_id: {"obs": [N, 4], "action": [N]}}``."""
    algo = train_and_save(
        path,
        env=RecordingMultiAgentCartPole,
        env_config={"num_agents": 2},
        policies={"p0", "p1"},
        policy_mapping_fn={0: "p0", 1: "p1"},
        env_to_module_connector=["MeanStdFilter"],
    )
    spec = algo.env_runner_spec(num_envs=4, evaluation=True)
    runner = spec.runner_class()(spec)
    RecordingMultiAgentCartPole.log.clear()
    runner.sample(steps_per_env, explore=False, state=algo.policy_state())
    runner.stop()
    log = list(RecordingMultiAgentCartPole.log)
    RecordingMultiAgentCartPole.log.clear()
    per_policy = {}
    for agent_id, policy_id in ((0, "p0"), (1, "p1")):
        rows = [r for r in log if r["agent"] == agent_id]
        per_policy[policy_id] = {
            "obs": np.stack([r["obs"] for r in rows]),
            "action": np.array([r["action"] for r in rows]),
        }
    return algo, per_policy
