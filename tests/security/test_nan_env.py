"""Env-produced NaN/inf never reaches the learner: the runner stops naming the env, or drops the episode.

Finding 3 of issue 18: a CartPole that returned a NaN reward or observation in 0.5% of steps
trained on for hundreds of iterations with NaN weights and no error.
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.env_runners.env_runner import EnvRunner
from lightning_rl.envs.classes import CrashingEnv
from lightning_rl.envs.multi_agent import MultiAgentEnv
from lightning_rl.errors import ConfigError, EnvError

SMALL_PPO = dict(
    num_envs_per_env_runner=4,
    rollout_fragment_length=64,
    train_batch_size=256,
    minibatch_size=128,
    num_epochs=2,
    evaluation_duration=4,
    seed=0,
)


def fit(algo, tmp_path, max_epochs):
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        limit_val_batches=0,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(algo)
    return trainer


@pytest.mark.parametrize(
    ("config", "what"),
    [({"p_nan_reward": 0.005}, "reward nan"), ({"p_nan_obs": 0.005}, "observation")],
)
def test_a_nan_from_the_env_stops_training_naming_the_env(tmp_path, config, what):
    algo = PPO(CrashingEnv, {**config, "seed": 31}, **SMALL_PPO)
    with pytest.raises(
        EnvError, match=rf"env '[^']*CrashingEnv' \(copy \d on env runner 0\) returned a non-finite {what}"
    ):
        fit(algo, tmp_path, max_epochs=20)  # 0.5% of 256 steps per iteration: a NaN within ~1 iteration


def test_a_reward_beyond_float32_counts_as_non_finite():
    """1e39 is finite in float64 but inf in float32, the training dtype."""
    algo = PPO("CartPole-v1", num_envs_per_env_runner=2)
    runner = EnvRunner(algo.env_runner_spec(num_envs=2))
    env = runner.env
    env.reset(seed=0)
    env.envs[1].step = lambda action: (np.zeros(4, np.float32), 1e39, False, False, {})
    with pytest.raises(EnvError, match=r"copy 1 .*non-finite reward 1e\+39"):
        env.step(np.zeros(2, dtype=np.int64))


def test_drop_mode_keeps_training_with_finite_weights_and_counts_the_drops(tmp_path):
    algo = PPO(
        CrashingEnv,
        {"p_nan_reward": 0.005, "p_nan_obs": 0.005, "seed": 32},
        on_non_finite_env_output="drop_episode",
        **SMALL_PPO,
    )
    trainer = fit(algo, tmp_path, max_epochs=6)
    metrics = trainer.callback_metrics
    assert metrics["env_runners/num_episodes_dropped"] > 0, "1% of ~1500 steps gave NaN"
    assert metrics["learners/default_policy/num_non_finite_updates_skipped"] == 0, (
        "no NaN reached the learner"
    )
    assert all(torch.isfinite(p).all() for p in algo.parameters())
    assert torch.isfinite(metrics["learners/default_policy/total_loss"])


def test_dropped_steps_stay_finite_in_the_sample_and_other_copies_keep_theirs():
    algo = PPO(CrashingEnv, {"p_nan_obs": 0.02, "seed": 33}, on_non_finite_env_output="drop_episode")
    runner = EnvRunner(algo.env_runner_spec(num_envs=4))
    result = runner.sample(200, True, algo.policy_state())
    data = result.data
    assert result.stats.num_episodes_dropped > 0
    for key in ("observation", ("next", "observation"), ("next", "reward")):
        value = data[key[0]][key[1]] if isinstance(key, tuple) else data[key]
        assert torch.isfinite(value).all(), key
    assert data["observation"].shape[:2] == (4, 200), "every copy kept its whole fragment"
    # A dropped step is cut there (truncated) and loops back to the observation it acted on.
    truncated = data["next"]["truncated"][..., 0]
    looped = (data["next"]["observation"] == data["observation"]).all(-1)
    assert (truncated & looped).sum() >= result.stats.num_episodes_dropped


def test_the_mode_is_checked():
    with pytest.raises(
        ConfigError, match=r"on_non_finite_env_output must be one of \['error', 'drop_episode'\]"
    ):
        PPO("CartPole-v1", on_non_finite_env_output="ignore")


class NanRewardGame(MultiAgentEnv):
    """Two agents act every step; agent ``b``'s reward is NaN at step 3 of every episode."""

    def __init__(self, config=None):
        import gymnasium as gym

        super().__init__()
        self.agents = self.possible_agents = ["a", "b"]
        self.observation_spaces = {a: gym.spaces.Box(-1.0, 1.0, (2,), np.float32) for a in self.agents}
        self.action_spaces = {a: gym.spaces.Discrete(2) for a in self.agents}
        self.t = 0

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return {a: np.zeros(2, np.float32) for a in self.agents}, {}

    def step(self, actions):
        self.t += 1
        obs = {a: np.full(2, 0.1 * self.t, np.float32) for a in self.agents}
        rewards = {"a": 1.0, "b": float("nan") if self.t == 3 else 1.0}
        done = self.t >= 5
        return obs, rewards, {"__all__": done}, {"__all__": False}, {}


def test_multi_agent_runners_check_rewards_too(tmp_path):
    algo = PPO(NanRewardGame, train_batch_size=64, minibatch_size=32, num_epochs=1)
    with pytest.raises(EnvError, match=r"NanRewardGame.*returned a non-finite reward"):
        fit(algo, tmp_path, max_epochs=1)
    algo = PPO(
        NanRewardGame,
        train_batch_size=64,
        minibatch_size=32,
        num_epochs=1,
        on_non_finite_env_output="drop_episode",
        max_consecutive_env_runner_failures=1000,
    )
    trainer = fit(algo, tmp_path, max_epochs=2)
    assert trainer.callback_metrics["env_runners/num_episodes_dropped"] > 0
    assert all(torch.isfinite(p).all() for p in algo.parameters())
