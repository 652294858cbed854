"""Time and env steps for DQN to solve CartPole-v1 with ``configs/dqn/cartpole.yaml``.

    python benchmarks/dqn_cartpole.py --seed 0 [--config configs/dqn/rainbow_cartpole.yaml]

Trains until both criteria hold or a step cap: the deterministic (greedy) evaluation mean over
20 episodes reaches 475, and the mean of the last 100 training episodes reaches 450. The last
line is one JSON object: ``benchmarks/ppo_cartpole.py``'s keys plus ``grad_updates_per_s``.
"""

from __future__ import annotations

from pathlib import Path

from _off_policy import parse_args, run

from lightning_rl.algorithms.dqn import DQN

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dqn" / "cartpole.yaml"

if __name__ == "__main__":
    run(DQN, parse_args(__doc__, CONFIG, eval_target=475.0, rolling_target=450.0, max_env_steps=150_000))
