"""Stand-in for RLlib's bundled ``offline/tests/data/cartpole/cartpole-v1_large`` dataset.

RLlib's BC examples read CartPole episodes recorded from a trained PPO policy; that dataset is
not on this machine, so :func:`ensure_dataset` makes an equivalent one with lightning-rl's own
tools: PPO learns CartPole-v1 on raw observations (no connectors, as the BC model reads them)
until its greedy evaluation return reaches ``--expert-return``, then ``record_episodes``
writes ``--num-env-steps`` of its sampled (exploring) steps as Parquet episodes
(``docs/offline_data_schema.md``). Nothing large is committed: the port calls this when its
``--data-path`` does not exist yet.

    python examples/rllib_ports/cartpole_dataset.py [--data-path DIR] [--num-env-steps 50000]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lightning_rl import record_episodes
from lightning_rl.algorithms.ppo import PPOConfig

DEFAULT_PATH = Path("runs/rllib_ports/cartpole-v1_large")


def ensure_dataset(
    path: str | Path,
    *,
    num_env_steps: int = 50_000,
    expert_return: float = 450.0,
    max_expert_iterations: int = 300,
    seed: int = 0,
) -> Path:
    """``path`` if it holds Parquet files already; else train an expert and record into it."""
    path = Path(path)
    if path.is_dir() and any(path.rglob("*.parquet")):
        return path
    start = time.perf_counter()
    expert = (
        PPOConfig(defaults="native")  # lightning-rl's tuned CartPole settings: a fast expert
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .training(train_batch_size=512, minibatch_size=256, num_epochs=10, lr=1e-3, gamma=0.99)
        .evaluation(evaluation_interval=1, evaluation_duration=10)
        .debugging(seed=seed)
        .trainer(default_root_dir=str(path.parent / f"{path.name}_expert"), logger=False)
        .build_algo()
    )
    try:
        achieved = 0.0
        while achieved < expert_return and expert.iteration < max_expert_iterations:
            achieved = expert.train()["evaluation"]["episode_return_mean"]
        files = record_episodes(expert.algorithm, path, num_env_steps, seed=seed)
    finally:
        expert.stop()
    print(
        json.dumps(
            {
                "dataset": str(path),
                "expert_evaluation_return": achieved,
                "expert_iterations": expert.iteration,
                "recorded_env_steps": num_env_steps,
                "files": len(files),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--num-env-steps", type=int, default=50_000)
    parser.add_argument("--expert-return", type=float, default=450.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ensure_dataset(
        args.data_path, num_env_steps=args.num_env_steps, expert_return=args.expert_return, seed=args.seed
    )


if __name__ == "__main__":
    main()
