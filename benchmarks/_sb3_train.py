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

from pathlib import Path  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

# Not through lightning_rl.optional: importing lightning_rl would add its import time to SB3's.
try:
    import stable_baselines3 as sb3
except ImportError as error:  # pragma: no cover - depends on the install
    raise SystemExit(
        f"The Stable-Baselines3 comparison needs stable-baselines3 ({error}): pip install -e '.[bench]'"
    ) from error
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

IMPORT_SECONDS = time.time() - PROCESS_START


def linear(initial: float, budget: int, total: int):
    """RL-Zoo's ``lin_<value>``: linear from ``initial`` to 0 over the zoo's ``budget`` env steps.

    SB3 feeds a schedule the remaining fraction of ``learn``'s ``total`` steps; this run's
    ``total`` is a step cap above the zoo's budget (so a seed that needs longer can still reach
    the criteria), so the fraction is mapped back to env steps and the value stays at 0 after
    ``budget``, exactly as in a zoo run of ``budget`` steps.
    """

    def schedule(progress_remaining: float) -> float:
        steps = (1.0 - progress_remaining) * total
        return initial * max(0.0, 1.0 - steps / budget)

    return schedule


# RL-Baselines3-Zoo's tuned settings, one entry per task of the comparison.
ZOO = {
    "ppo": {
        "env": "CartPole-v1",
        "n_envs": 8,
        "budget": 100_000,
        "eval_target": 475.0,
        "rolling_target": 450.0,
        "kwargs": lambda budget, total: {
            "policy": "MlpPolicy",
            "n_steps": 32,
            "batch_size": 256,
            "gae_lambda": 0.8,
            "gamma": 0.98,
            "n_epochs": 20,
            "ent_coef": 0.0,
            "learning_rate": linear(0.001, budget, total),
            "clip_range": linear(0.2, budget, total),
        },
    },
    "dqn": {
        "env": "CartPole-v1",
        "n_envs": 1,
        "budget": 50_000,
        "eval_target": 475.0,
        "rolling_target": 450.0,
        "kwargs": lambda budget, total: {
            "policy": "MlpPolicy",
            "learning_rate": 2.3e-3,
            "batch_size": 64,
            "buffer_size": 100_000,
            "learning_starts": 1000,
            "gamma": 0.99,
            "target_update_interval": 10,
            "train_freq": 256,
            "gradient_steps": 128,
            # The zoo's 0.16 of its 50k budget (8k steps), as a fraction of this run's cap.
            "exploration_fraction": 0.16 * budget / total,
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
        "kwargs": lambda budget, total: {"policy": "MlpPolicy", "learning_rate": 1e-3},
    },
}
ALGORITHMS = {"ppo": "PPO", "dqn": "DQN", "sac": "SAC"}
EVAL_EPISODES = 20
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OUR_CONFIG = {"ppo": "ppo/cartpole.yaml", "dqn": "dqn/cartpole.yaml", "sac": "sac/pendulum.yaml"}


def eval_every_of(algo: str) -> int:
    """Env steps between lightning-rl's evaluations with its shipped config, so both sides are
    evaluated at the same step counts (the first step count at which a criterion is checked
    depends on the cadence): ``check_val_every_n_epoch`` iterations of sampled steps each."""
    config = yaml.safe_load((CONFIGS / OUR_CONFIG[algo]).read_text())
    model = config["model"]["init_args"]
    every = int(config["trainer"].get("check_val_every_n_epoch", 1))
    if algo == "ppo":
        return every * int(model["train_batch_size"])
    copies = max(1, int(model.get("num_env_runners", 0))) * int(model.get("num_envs_per_env_runner", 1))
    return every * int(model["rollout_fragment_length"]) * copies


class TwoCriteria(BaseCallback):
    """Evaluates every ``eval_every`` env steps and tracks the rolling training return."""

    def __init__(
        self,
        env_id: str,
        seed: int,
        eval_every: int,
        eval_target: float,
        rolling_target: float,
        stop_after_eval: bool = False,
    ):
        super().__init__()
        # True: stop at the evaluation criterion (the rolling one is then reported only if met earlier).
        self.stop_after_eval = stop_after_eval
        # One env copy per evaluation episode, like lightning-rl's evaluation runner: SB3's own
        # evaluate_policy steps all 20 at once (one predict call per step for the whole batch).
        self.eval_env = DummyVecEnv([lambda: Monitor(gym.make(env_id))] * EVAL_EPISODES)
        self.eval_env.seed(10_000 + seed * 100)
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
        mean, _ = evaluate_policy(
            self.model, self.eval_env, n_eval_episodes=EVAL_EPISODES, deterministic=True
        )
        self.eval_seconds += time.time() - start
        return float(mean)

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
        if self.eval_hit is not None and self.stop_after_eval:
            return False
        return self.eval_hit is None or self.rolling_hit is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algo", choices=sorted(ZOO), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations")
    parser.add_argument("--max-env-steps", type=int, default=None, help="default: 2.5x the zoo budget")
    parser.add_argument("--stop-after-eval", action="store_true", help="stop at the evaluation criterion")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    task = ZOO[args.algo]
    env = make_vec_env(task["env"], n_envs=task["n_envs"], seed=args.seed)
    total = args.max_env_steps or int(task["budget"] * 2.5)
    kwargs = task["kwargs"](task["budget"], total)
    model = getattr(sb3, ALGORITHMS[args.algo])(env=env, seed=args.seed, verbose=0, **kwargs)
    eval_every = args.eval_every or eval_every_of(args.algo)
    criteria = TwoCriteria(
        task["env"], args.seed, eval_every, task["eval_target"], task["rolling_target"], args.stop_after_eval
    )
    model.learn(total_timesteps=total, callback=criteria)
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
        "eval_every": eval_every,
        "max_env_steps": total,
        "peak_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
