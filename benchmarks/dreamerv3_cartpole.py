"""Time and env steps for DreamerV3 (model size XS) to solve CartPole-v1 on CPU.

    python benchmarks/dreamerv3_cartpole.py --seed 0 [--config configs/dreamerv3/pendulum.yaml
        --eval-target -300 --rolling-target -300] [--max-seconds 1800]

Trains ``configs/dreamerv3/cartpole.yaml`` (precision and evaluation cadence from its
``trainer`` section) until both criteria of :class:`_common.TimeToTarget` hold, a step cap, or
a wall-time cap: the deterministic evaluation mean reaches 450, and the mean of the last 100
training episodes reaches 450. The last line is one JSON object: ``benchmarks/ppo_cartpole.py``'s
keys plus ``grad_updates`` and ``grad_updates_per_s`` (updates per second of learning time: the
fit's wall time minus env sampling and evaluation), ``training_ratio`` and ``precision``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _common import emit, seconds_since_start, train_to_target

import_start = seconds_since_start()
import lightning.pytorch as pl  # noqa: E402
import yaml  # noqa: E402

from lightning_rl.algorithms.dreamerv3 import DreamerV3  # noqa: E402

IMPORT_SECONDS = seconds_since_start()
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dreamerv3" / "cartpole.yaml"


class StopAfterSeconds(pl.Callback):
    """Ends training at an iteration boundary once the process has run ``seconds``: the
    issue's budget is a CPU run of at most 30 minutes, so the benchmark never runs longer."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if seconds_since_start() >= self.seconds:
            trainer.should_stop = True


class PrintEvaluations(pl.Callback):
    """One stderr line per evaluation (the learning curve), so a 30-minute run can be followed."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        value = trainer.callback_metrics.get("evaluation/episode_return_mean")
        if trainer.sanity_checking or value is None:
            return
        print(
            f"eval_return={float(value):.1f} env_steps={pl_module.num_env_steps_sampled_lifetime} "
            f"grad_updates={int(pl_module.num_grad_updates_lifetime)} seconds={seconds_since_start():.0f}",
            file=sys.stderr,
            flush=True,
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--max-env-steps", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    parser.add_argument("--eval-target", type=float, default=450.0)
    parser.add_argument("--rolling-target", type=float, default=450.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = yaml.safe_load(args.config.read_text())
    model_args = dict(config["model"]["init_args"])
    model_args["seed"] = args.seed
    trainer_config = config.get("trainer", {})
    precision = str(trainer_config.get("precision", "32-true"))
    pl.seed_everything(args.seed, verbose=False)
    algo = DreamerV3(**model_args)
    _, result = train_to_target(
        algo,
        args,
        check_val_every_n_epoch=trainer_config.get("check_val_every_n_epoch", 10),
        precision=precision,
        callbacks=[StopAfterSeconds(args.max_seconds), PrintEvaluations()],
    )
    updates = int(algo.num_grad_updates_lifetime)
    result.update(
        num_env_runners=model_args.get("num_env_runners", 0),
        model_size=algo.hparams.model_size,
        training_ratio=algo.hparams.training_ratio,
        precision=precision,
        grad_updates=updates,
        grad_updates_per_s=round(updates / max(result["learning_seconds"], 1e-9), 2),
        import_seconds=round(IMPORT_SECONDS - import_start, 3),
        process_start_to_import_seconds=round(IMPORT_SECONDS, 3),
    )
    emit(result)


if __name__ == "__main__":
    main()
