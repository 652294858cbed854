"""Time and env steps for PPO to solve CartPole-v1 with the default config.

    python benchmarks/ppo_cartpole.py --seed 0 [--num-env-runners R]

Trains ``configs/ppo/cartpole.yaml`` (R defaults to the config's) until both criteria hold
or a step cap: the deterministic evaluation mean over 20 episodes reaches 475, and the mean
of the last 100 training episodes reaches 450. The last line is one JSON object; besides
the criteria it breaks the wall time down (imports, start-up, sampling, learning, evaluation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import emit, seconds_since_start, train_to_target

import_start = seconds_since_start()
import lightning.pytorch as pl  # noqa: E402
import yaml  # noqa: E402

from lightning_rl.algorithms.ppo import PPO  # noqa: E402

IMPORT_SECONDS = seconds_since_start()
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ppo" / "cartpole.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-env-runners", type=int, default=None, help="default: the config's")
    parser.add_argument("--max-env-steps", type=int, default=200_000)
    parser.add_argument("--eval-target", type=float, default=475.0)
    parser.add_argument("--rolling-target", type=float, default=450.0)
    parser.add_argument("--config", type=Path, default=CONFIG)
    args = parser.parse_args()

    config = yaml.safe_load(args.config.read_text())
    model_args = dict(config["model"]["init_args"])
    if args.num_env_runners is not None:
        model_args["num_env_runners"] = args.num_env_runners
    model_args["seed"] = args.seed
    pl.seed_everything(args.seed, verbose=False)
    algo = PPO(**model_args)
    _, result = train_to_target(
        algo, args, check_val_every_n_epoch=config["trainer"].get("check_val_every_n_epoch", 5)
    )
    result.update(
        num_env_runners=model_args["num_env_runners"],
        import_seconds=round(IMPORT_SECONDS - import_start, 3),
        process_start_to_import_seconds=round(IMPORT_SECONDS, 3),
    )
    emit(result)


if __name__ == "__main__":
    main()
