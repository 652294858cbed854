"""Time and env steps for SAC to solve Pendulum-v1 with ``configs/sac/pendulum.yaml``.

    python benchmarks/sac_pendulum.py --seed 0

Trains until both criteria hold or a step cap: the deterministic (squashed-mean) evaluation
mean over 20 episodes reaches -200, and the mean of the last 100 training episodes reaches
-200. The last line is one JSON object: ``benchmarks/ppo_cartpole.py``'s keys plus
``grad_updates_per_s``.
"""

from __future__ import annotations

from pathlib import Path

from _off_policy import parse_args, run

from lightning_rl.algorithms.sac import SAC

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sac" / "pendulum.yaml"

if __name__ == "__main__":
    run(SAC, parse_args(__doc__, CONFIG, eval_target=-200.0, rolling_target=-200.0, max_env_steps=60_000))
