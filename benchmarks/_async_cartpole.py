"""The time-to-target run shared by ``appo_cartpole.py`` and ``impala_cartpole.py``.

Same criteria, keys and wall-time breakdown as ``ppo_cartpole.py`` (see ``_common.py``), plus
the asynchronous side: ``mean_policy_lag`` (learner weights version at learning time minus the
sampling version, in optimizer steps) and ``learner_updates``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import TimeToTarget, emit, peak_rss_mb, seconds_since_start

import_start = seconds_since_start()
import lightning.pytorch as pl  # noqa: E402
import yaml  # noqa: E402

from lightning_rl.registry import get_algorithm_class  # noqa: E402

IMPORT_SECONDS = seconds_since_start()
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main(algorithm: str, doc: str) -> None:
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-env-runners", type=int, default=None, help="default: the config's")
    parser.add_argument("--max-env-steps", type=int, default=300_000)
    parser.add_argument("--eval-target", type=float, default=475.0)
    parser.add_argument("--rolling-target", type=float, default=450.0)
    parser.add_argument("--config", type=Path, default=CONFIGS / algorithm.lower() / "cartpole.yaml")
    args = parser.parse_args()

    config = yaml.safe_load(args.config.read_text())
    model_args = dict(config["model"]["init_args"])
    if args.num_env_runners is not None:
        model_args["num_env_runners"] = args.num_env_runners
    model_args["seed"] = args.seed
    pl.seed_everything(args.seed, verbose=False)
    algo = get_algorithm_class(algorithm)(**model_args)
    tracker = TimeToTarget(args.eval_target, args.rolling_target, args.max_env_steps)
    trainer = pl.Trainer(
        max_epochs=100_000,
        check_val_every_n_epoch=config["trainer"].get("check_val_every_n_epoch", 5),
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
    result.update(
        algorithm=algorithm,
        iterations=trainer.current_epoch,
        env_steps=experience.num_env_steps_sampled_lifetime,
        learner_updates=trainer.global_step,
        mean_policy_lag=round(algo.policy_lag_mean, 3),
        num_env_runners=model_args["num_env_runners"],
        seed=args.seed,
        peak_rss_mb=round(peak_rss_mb(), 1),
        import_seconds=round(IMPORT_SECONDS - import_start, 3),
        process_start_to_import_seconds=round(IMPORT_SECONDS, 3),
        # Time the learner spent waiting for fragments (not all sampling: runners sample
        # while the learner learns).
        sampling_seconds=round(sampling, 3),
        learning_seconds=round(fit_seconds - sampling - result["evaluation_seconds"], 3),
        total_seconds=round(seconds_since_start(), 3),
    )
    emit(result)
