"""Stable-Baselines3 side of ``compare_sb3.py``: one RL-Zoo-tuned run to both criteria.

    python benchmarks/_sb3_train.py --algo ppo|dqn|sac --seed 0

The hyperparameters are RL-Baselines3-Zoo's tuned ones (``hyperparams/{ppo,dqn,sac}.yml``),
written out here so the bench extra needs only ``stable-baselines3``. The criteria are the
ones ``_common.py`` applies to lightning-rl: the first deterministic evaluation (mean over 20
episodes on a separate env) at or above the target, and the first moment the mean return of
the last 100 training episodes reaches the rolling target. Seconds are process wall time since
the process started (imports included). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from typing import Any

import psutil

PROCESS_START = psutil.Process().create_time()

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from lightning_rl.optional import require  # noqa: E402

sb3 = require("stable_baselines3", purpose="The Stable-Baselines3 comparison", extra="bench")
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

IMPORT_SECONDS = time.time() - PROCESS_START


def linear(initial: float):
    """RL-Zoo's ``lin_<value>``: decays linearly to 0 over the run's budget."""
    return lambda progress_remaining: progress_remaining * initial


# RL-Baselines3-Zoo's tuned settings, one entry per task of the comparison.
ZOO = {
    "ppo": {
        "env": "CartPole-v1",
        "n_envs": 8,
        "budget": 100_000,
        "eval_target": 475.0,
        "rolling_target": 450.0,
        "kwargs": lambda: {
            "policy": "MlpPolicy",
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": linear(0.001),
            "clip_range": linear(0.2),
        },
    },
    "dqn": {
        "env": "CartPole-v1",
        "n_envs": 1,
        "budget": 50_000,
        "eval_target": 475.0,
        "rolling_target": 450.0,
        "kwargs": lambda: {
            "policy": "MlpPolicy",
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            "exploration_fraction": 0.16,
            "exploration_final_eps": 0.04,
            "policy_kwargs": {"net_arch": [256, 256]},
        },
    },
    "sac": {
        "env": "Pendulum-v1",
        "n_envs": 1,
        "budget": 20_000,
        "eval_target": -200.0,
        "rolling_target": -200.0,
        "kwargs": lambda: {"policy": "MlpPolicy", "learning_rate": 1e-3},
    },
}
ALGORITHMS = {"ppo": "PPO", "dqn": "DQN", "sac": "SAC"}


class TwoCriteria(BaseCallback):
    """Evaluates every ``eval_every`` env steps and tracks the rolling training return."""

    def __init__(self, env_id: str, seed: int, eval_every: int, eval_target: float, rolling_target: float):
        super().__init__()
        self.eval_env = gym.make(env_id)
        self.seed = seed
        self.eval_every = eval_every
        self.eval_target = eval_target
        self.rolling_target = rolling_target
        self.next_eval = eval_every
        self.returns: deque[float] = deque(maxlen=100)
        self.eval_hit: tuple[float, int] | None = None
        self.rolling_hit: tuple[float, int] | None = None
        self.last_eval: float | None = None
        self.eval_seconds = 0.0
        self.start_seconds: float | None = None

    def _on_training_start(self) -> None:
        self.start_seconds = time.time() - PROCESS_START

    def _evaluate(self) -> float:
        start = time.time()
        total = []
        for episode in range(20):
            obs, _ = self.eval_env.reset(seed=10_000 + self.seed * 100 + episode)
            done, episode_return = False, 0.0
            while not done:
                action, _ = self.model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = self.eval_env.step(action)
                episode_return += float(reward)
                done = terminated or truncated
            total.append(episode_return)
        self.eval_seconds += time.time() - start
        return float(np.mean(total))

    def _on_step(self) -> bool:
        steps = self.num_timesteps
        for info in self.locals.get("infos", []):
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
        if (
            self.rolling_hit is None
            and len(self.returns) == 100
            and np.mean(self.returns) >= self.rolling_target
        ):
            self.rolling_hit = (time.time() - PROCESS_START, steps)
        if self.eval_hit is None and steps >= self.next_eval:
            self.next_eval += self.eval_every
            self.last_eval = self._evaluate()
            if self.last_eval >= self.eval_target:
                self.eval_hit = (time.time() - PROCESS_START, steps)
        return self.eval_hit is None or self.rolling_hit is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algo", choices=sorted(ZOO), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations")
    parser.add_argument("--max-env-steps", type=int, default=None, help="default: 2.5x the zoo budget")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    task = ZOO[args.algo]
    env = make_vec_env(task["env"], n_envs=task["n_envs"], seed=args.seed)
    model = getattr(sb3, ALGORITHMS[args.algo])(env=env, seed=args.seed, verbose=0, **task["kwargs"]())
    eval_every = args.eval_every or {"ppo": 1280, "dqn": 2000, "sac": 1000}[args.algo]
    criteria = TwoCriteria(task["env"], args.seed, eval_every, task["eval_target"], task["rolling_target"])
    budget = args.max_env_steps or int(task["budget"] * 2.5)
    model.learn(total_timesteps=budget, callback=criteria)
    result: dict[str, Any] = {
        "library": "stable-baselines3",
        "version": sb3.__version__,
        "algo": args.algo,
        "env": task["env"],
        "seed": args.seed,
        "reached": criteria.eval_hit is not None,
        "seconds_to_target": round(criteria.eval_hit[0], 3) if criteria.eval_hit else None,
        "env_steps_to_target": criteria.eval_hit[1] if criteria.eval_hit else None,
        "reached_rolling": criteria.rolling_hit is not None,
        "seconds_to_rolling": round(criteria.rolling_hit[0], 3) if criteria.rolling_hit else None,
        "env_steps_to_rolling": criteria.rolling_hit[1] if criteria.rolling_hit else None,
        "startup_seconds": round(criteria.start_seconds or 0.0, 3),
        "import_seconds": round(IMPORT_SECONDS, 3),
        "evaluation_seconds": round(criteria.eval_seconds, 3),
        "final_eval_return": criteria.last_eval,
        "env_steps": criteria.num_timesteps,
        "peak_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
