"""The time-to-target run shared by ``appo_cartpole.py`` and ``impala_cartpole.py``.

Same criteria, keys and wall-time breakdown as ``ppo_cartpole.py`` (see ``_common.py``), plus
the asynchronous side: ``mean_policy_lag`` (learner weights version at learning time minus the
sampling version, in optimizer steps) and ``learner_updates``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import emit, seconds_since_start, train_to_target

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
    # sampling_seconds is the time the learner waited for fragments (not all sampling: runners
    # sample while the learner learns).
    trainer, result = train_to_target(
        algo, args, check_val_every_n_epoch=config["trainer"].get("check_val_every_n_epoch", 5)
    )
    result.update(
        algorithm=algorithm,
        learner_updates=trainer.global_step,
        mean_policy_lag=round(algo.policy_lag_mean, 3),
        num_env_runners=model_args["num_env_runners"],
        import_seconds=round(IMPORT_SECONDS - import_start, 3),
        process_start_to_import_seconds=round(IMPORT_SECONDS, 3),
    )
    emit(result)
