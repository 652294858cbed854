"""Shared driver of the off-policy time-to-target benchmarks (DQN, SAC).

Builds the algorithm from a config's ``model.init_args``, trains until both criteria of
:class:`_common.TimeToTarget` hold or a step cap, and reports ``_common``'s keys plus the
learner's speed: ``grad_updates`` and ``grad_updates_per_s`` (gradient updates per second of
learning time: the fit's wall time minus env sampling and evaluation, so it includes every
per-update cost: replay sampling, priority updates, target updates and Lightning's hooks).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from _common import TimeToTarget, emit, peak_rss_mb, seconds_since_start


def parse_args(doc: str, config: Path, eval_target: float, rolling_target: float, max_env_steps: int):
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-env-steps", type=int, default=max_env_steps)
    parser.add_argument("--eval-target", type=float, default=eval_target)
    parser.add_argument("--rolling-target", type=float, default=rolling_target)
    parser.add_argument("--config", type=Path, default=config)
    return parser.parse_args()


def run(algo_class: type, args: argparse.Namespace) -> dict[str, Any]:
    imported = seconds_since_start()  # Python, torch, Lightning, torchrl and the algorithm
    config = yaml.safe_load(args.config.read_text())
    model_args = dict(config["model"]["init_args"])
    model_args["seed"] = args.seed
    pl.seed_everything(args.seed, verbose=False)
    algo = algo_class(**model_args)
    tracker = TimeToTarget(args.eval_target, args.rolling_target, args.max_env_steps)
    trainer = pl.Trainer(
        max_epochs=1_000_000,
        check_val_every_n_epoch=config["trainer"].get("check_val_every_n_epoch", 4),
        callbacks=[tracker],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    fit_start = time.perf_counter()
    trainer.fit(algo)
    fit_seconds = time.perf_counter() - fit_start
    experience = algo.experience
    result = tracker.results()
    sampling = experience.sampling_seconds_lifetime
    learning = fit_seconds - sampling - result["evaluation_seconds"]
    updates = int(algo.num_grad_updates_lifetime)
    result.update(
        iterations=trainer.current_epoch,
        env_steps=experience.num_env_steps_sampled_lifetime,
        seed=args.seed,
        grad_updates=updates,
        grad_updates_per_s=round(updates / learning, 1),
        peak_rss_mb=round(peak_rss_mb(), 1),
        process_start_to_import_seconds=round(imported, 3),
        sampling_seconds=round(sampling, 3),
        learning_seconds=round(learning, 3),
        total_seconds=round(seconds_since_start(), 3),
    )
    emit(result)
    return result
