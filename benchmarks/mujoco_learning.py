"""SAC and PPO on MuJoCo (Hopper-v5, HalfCheetah-v5) on CPU: env steps and seconds to a stated target.

    pip install "lightning-rl[mujoco]"
    python benchmarks/mujoco_learning.py --config configs/sac/hopper.yaml
    python benchmarks/mujoco_learning.py --config configs/ppo/halfcheetah.yaml

Runs a shipped config file as it is: the algorithm and its ``init_args`` from ``model``, the
target from its ``StopOnReturn`` threshold, the env-step budget from its ``StopOnEnvSteps``,
the evaluation cadence from ``trainer.check_val_every_n_epoch`` and the seed from
``seed_everything`` (``--seed``, ``--max-env-steps`` and ``--eval-target`` override them for
trial runs). So the figure recorded is the figure of the config a user runs with
``lightning-rl fit --config ...``.

Training stops at the first deterministic evaluation (``evaluation_duration`` episodes) whose
mean reaches the target, or when the budget is spent. The rolling criterion of
``_common.TimeToTarget`` (mean of the last 100 training episodes) is recorded too, against the
same target, but does not keep training going: the stochastic training policy of SAC trails
its deterministic evaluation by design. The last line is one JSON object: ``_common``'s keys
plus ``algo``, ``env``, ``config``, ``budget_env_steps``, ``eval_target``, ``best_eval_return``,
``eval_returns`` (every evaluation as ``[env_steps, return]``), ``num_grad_updates``,
``updates_per_second`` (gradient updates over the learner's seconds: fit time minus sampling
and evaluation) and ``stopped_by_wall_clock`` (``--max-seconds`` ended the run before the
target or the budget).

Measured (seed 0, 2 cores shared with five other jobs, ``results/mujoco_learning.json``):
PPO Hopper-v5 >= 800: 1041 at 133,120 env steps (981 s); PPO HalfCheetah-v5 >= 500: 574 at
92,160 (363 s); SAC HalfCheetah-v5 >= 1000: 1907 at 24,800 (1,103 s); SAC Hopper-v5 >= 1000
within 60k: not reached, 914.5 at 60,000 (1,986 s); within 100k (the budget since): 1004.9 at
74,800 (1,833 s). The first four records in the results
file are an earlier version of this script (settings inside it, no reward scaling for PPO).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from _common import emit, seconds_since_start, train_to_target

REPO = Path(__file__).resolve().parent.parent


class EvalHistory(pl.Callback):
    """Every evaluation's return with the env steps it was reached at; stops at the target, or
    after the first iteration that ends past ``max_seconds`` of process time (then
    ``stopped_by_wall_clock``: the env-step budget was not used up, say so with the figure)."""

    def __init__(self, target: float, max_seconds: float | None = None) -> None:
        self.target = target
        self.max_seconds = max_seconds
        self.stopped_by_wall_clock = False
        self.returns: list[list[float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.max_seconds is not None and seconds_since_start() > self.max_seconds:
            self.stopped_by_wall_clock = not trainer.should_stop
            trainer.should_stop = True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        value = trainer.callback_metrics.get("evaluation/episode_return_mean")
        if value is None or trainer.sanity_checking:
            return
        self.returns.append([int(pl_module.num_env_steps_sampled_lifetime), round(float(value), 1)])
        print(
            f"evaluation at {self.returns[-1][0]} env steps: {self.returns[-1][1]}",
            file=sys.stderr,
            flush=True,
        )
        if float(value) >= self.target:
            trainer.should_stop = True


def load_config(path: Path) -> dict[str, Any]:
    """The parts of a ``lightning-rl fit`` config this benchmark runs: algorithm, settings, stops."""
    config = yaml.safe_load(path.read_text())
    model = config["model"]
    module_name, _, class_name = model["class_path"].rpartition(".")
    if not module_name.startswith("lightning_rl.algorithms."):
        raise SystemExit(f"{path}: model.class_path {model['class_path']!r} is not a lightning_rl algorithm")
    algo_class = getattr(importlib.import_module(module_name), class_name)
    stops = {
        c["class_path"].rpartition(".")[2]: c.get("init_args", {}) for c in config["trainer"]["callbacks"]
    }
    return {
        "algo_class": algo_class,
        "init_args": dict(model["init_args"]),
        "seed": int(config.get("seed_everything", 0)),
        "eval_every": int(config["trainer"]["check_val_every_n_epoch"]),
        "target": float(stops["StopOnReturn"]["threshold"]),
        "budget": int(stops["StopOnEnvSteps"]["max_env_steps"]),
    }


def main() -> dict[str, Any]:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "sac" / "hopper.yaml")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-env-steps", type=int, default=None)
    parser.add_argument("--eval-target", type=float, default=None)
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="stop after the iteration that passes this wall time"
    )
    args = parser.parse_args()

    config = load_config(args.config)
    args.seed = config["seed"] if args.seed is None else args.seed
    args.max_env_steps = config["budget"] if args.max_env_steps is None else args.max_env_steps
    args.eval_target = config["target"] if args.eval_target is None else args.eval_target
    args.rolling_target = args.eval_target

    pl.seed_everything(args.seed, verbose=False)
    init_args = {**config["init_args"], "seed": args.seed}
    algo = config["algo_class"](**init_args)
    history = EvalHistory(args.eval_target, args.max_seconds)
    trainer, result = train_to_target(
        algo, args, check_val_every_n_epoch=config["eval_every"], callbacks=[history]
    )
    if not history.returns or history.returns[-1][0] < algo.num_env_steps_sampled_lifetime:
        # The budget ended between evaluations: evaluate the final policy too.
        trainer.validate(algo, verbose=False)
        result["final_eval_return"] = history.returns[-1][1] if history.returns else None
    updates = int(getattr(algo, "num_grad_updates_lifetime", trainer.global_step))
    learner_seconds = result.get("learning_seconds") or 0.0
    try:
        config_name = str(args.config.resolve().relative_to(REPO))
    except ValueError:
        config_name = str(args.config)
    result.update(
        algo=type(algo).__name__,
        env=init_args["env"],
        config=config_name,
        budget_env_steps=args.max_env_steps,
        eval_target=args.eval_target,
        rolling_target=args.rolling_target,
        eval_episodes=init_args.get("evaluation_duration"),
        best_eval_return=max((r for _, r in history.returns), default=None),
        eval_returns=history.returns,
        stopped_by_wall_clock=history.stopped_by_wall_clock,
        num_grad_updates=updates,
        updates_per_second=round(updates / learner_seconds, 1) if learner_seconds else None,
    )
    emit(result)
    return result


if __name__ == "__main__":
    main()
