"""Shared driver of the off-policy time-to-target benchmarks (DQN, SAC).

Builds the algorithm from a config's ``model.init_args``, trains until both criteria of
:class:`_common.TimeToTarget` hold or a step cap, and reports ``_common``'s keys plus the
learner's speed: ``grad_updates`` and ``grad_updates_per_s`` (gradient updates per second of
learning time: the fit's wall time minus env sampling and evaluation, so it includes every
per-update cost: replay sampling, priority updates, target updates and Lightning's hooks).
``--stop-after-eval`` ends the run at the evaluation criterion (the rolling one is then reported
only if it was met first), e.g. for SAC on Pendulum, whose rolling criterion needs 100 finished
200-step episodes (>= 20,000 env steps) whatever the learner does.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from _common import emit, seconds_since_start, train_to_target


def parse_args(doc: str, config: Path, eval_target: float, rolling_target: float, max_env_steps: int):
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-env-steps", type=int, default=max_env_steps)
    parser.add_argument("--eval-target", type=float, default=eval_target)
    parser.add_argument("--rolling-target", type=float, default=rolling_target)
    parser.add_argument("--config", type=Path, default=config)
    parser.add_argument("--stop-after-eval", action="store_true", help="stop at the evaluation criterion")
    return parser.parse_args()


class StopAfterEvaluation(pl.Callback):
    """Stops the fit after the first evaluation whose mean return reaches ``target``."""

    def __init__(self, target: float) -> None:
        self.target = target

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        value = trainer.callback_metrics.get("evaluation/episode_return_mean")
        if not trainer.sanity_checking and value is not None and float(value) >= self.target:
            trainer.should_stop = True


def run(algo_class: type, args: argparse.Namespace) -> dict[str, Any]:
    imported = seconds_since_start()  # Python, torch, Lightning, torchrl and the algorithm
    config = yaml.safe_load(args.config.read_text())
    model_args = dict(config["model"]["init_args"])
    model_args["seed"] = args.seed
    pl.seed_everything(args.seed, verbose=False)
    algo = algo_class(**model_args)
    stop = [StopAfterEvaluation(args.eval_target)] if args.stop_after_eval else []
    _, result = train_to_target(
        algo,
        args,
        check_val_every_n_epoch=config["trainer"].get("check_val_every_n_epoch", 4),
        callbacks=stop,
    )
    updates = int(algo.num_grad_updates_lifetime)
    result.update(
        grad_updates=updates,
        grad_updates_per_s=round(updates / result["learning_seconds"], 1),
        process_start_to_import_seconds=round(imported, 3),
    )
    emit(result)
    return result
