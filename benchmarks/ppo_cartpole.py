"""Time and env steps for PPO to solve CartPole-v1 with the default config, and where the time goes.

    python benchmarks/ppo_cartpole.py --seed 0 [--num-env-runners R] [--bare]

Trains ``configs/ppo/cartpole.yaml`` (R defaults to the config's) until both criteria hold
or a step cap: the deterministic evaluation mean over 20 episodes reaches 475, and the mean
of the last 100 training episodes reaches 450. It runs like the README's main job
(``lightning-rl fit --config configs/ppo/cartpole.yaml``): the CLI's CSV logger logging every
step and the config's checkpoint callback (IterationCheckpoint: every 10 iterations and at the
last one; ``--bare``: neither); only the config's stop callbacks are replaced by the two criteria.

The last line is one JSON object. Besides the criteria, ``phases`` breaks the process's wall
time down (seconds, measured from this script with Lightning hooks, timers around the calls
and the DataModule's own sampling clock; see ``_common.PhaseTimer``):

- ``imports``: importing lightning, the algorithm and its dependencies (``python_start``: from
  process start to this script's first import, i.e. the interpreter and ``_common``'s torch);
- ``build``: constructing the algorithm (networks, spaces from a probe env);
- ``ray_start``: importing ``ray`` and inside ``ray.init`` (None without Ray runners); as
  ``lightning-rl fit`` does, the runners' local Ray starts in the background before the imports
  (``lightning_rl.cli_ray_start``), so this is the part of its start that the imports and the
  set-up did not cover;
  ``runner_start``: the rest of the Trainer's setup (the runner actors are created, optimizers configured);
- ``first_sample``: the first ``sample()`` (the runners' first round trip: their start-up
  finishes here); ``sampling``: every ``sample()`` including the first;
- ``learning``: ``updates`` (the training steps: PPO runs every minibatch update of an
  iteration, forward, backward and optimizer step, inside one; ``ms_per_update`` divides by
  the optimizer steps; the algorithm's ``on_train_batch_start`` runs after this timer starts,
  so its ``self.log`` of the sampling metrics counts here too) plus ``rollout_processing`` (GAE)
  plus ``between_updates`` (the other per-iteration hooks, among them the learner metrics'
  ``self.log`` at the end of the step);
- ``evaluation``: the validation loop (evaluation episodes); ``logging``: the CSV logger's own
  calls; ``checkpointing``: the checkpoint callback's saving hooks; ``shutdown``: end of training to
  the end of ``fit`` (runners stopped); ``other``: the remainder (process exit excluded).

``process_tree_pss_mb`` is the peak summed PSS of this process and all its descendants (the
Ray processes), sampled every 10 iterations and at the end; ``pss_processes`` counts them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lightning_rl.cli_ray_start import start_ray_early_for_fit

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ppo" / "cartpole.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-env-runners", type=int, default=None, help="default: the config's")
    parser.add_argument("--max-env-steps", type=int, default=200_000)
    parser.add_argument("--eval-target", type=float, default=475.0)
    parser.add_argument("--rolling-target", type=float, default=450.0)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--bare", action="store_true", help="no logger, no checkpoints")
    return parser


def fit_arguments(args: argparse.Namespace) -> list[str]:
    """This script's ``--config``/``--num-env-runners`` as the ``lightning-rl fit`` arguments."""
    runners = [] if args.num_env_runners is None else ["--model.num_env_runners", str(args.num_env_runners)]
    return ["--config", str(args.config), *runners]


# As `lightning-rl fit` does: the runners' local Ray starts in the background before Lightning imports.
start_ray_early_for_fit(fit_arguments(build_parser().parse_known_args()[0]))

from _common import (  # noqa: E402
    PhaseTimer,
    TimedCSVLogger,
    emit,
    seconds_since_start,
    timed_checkpoint,
    train_to_target,
)

import_start = seconds_since_start()
import lightning.pytorch as pl  # noqa: E402
import yaml  # noqa: E402
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from lightning_rl import ray_cluster  # noqa: E402
from lightning_rl.algorithms.ppo import PPO  # noqa: E402
from lightning_rl.callbacks import IterationCheckpoint  # noqa: E402

IMPORT_SECONDS = seconds_since_start()


class RayInitClock:
    """Times the run's wait for Ray when it has Ray runners: importing ``ray`` (the algorithm
    imports it only when runners start), ``ray.init``, and the wait for the early start (what of
    it did not overlap with the imports and the set-up)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.wrapped = False

    def install(self, num_env_runners: int) -> None:
        if num_env_runners <= 0:
            return
        start = time.perf_counter()
        import ray

        self.seconds += time.perf_counter() - start
        ray.init = self._timed(ray.init)
        ray_cluster.wait_for_early_ray_start = self._timed(ray_cluster.wait_for_early_ray_start)
        self.wrapped = True

    def _timed(self, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


# The checkpoint callbacks a config may name (by its class_path), run timed.
CHECKPOINT_CLASSES: dict[str, type[ModelCheckpoint]] = {
    "lightning.pytorch.callbacks.ModelCheckpoint": ModelCheckpoint,
    "lightning_rl.callbacks.IterationCheckpoint": IterationCheckpoint,
}


def config_checkpoint(config: dict, dirpath: str) -> ModelCheckpoint | None:
    """The config's checkpoint callback (same class and init args), timed; None if it has none."""
    for callback in config["trainer"].get("callbacks") or []:
        base = CHECKPOINT_CLASSES.get(callback["class_path"])
        if base is not None:
            return timed_checkpoint(base, dirpath=dirpath, **callback.get("init_args", {}))
    return None


def main() -> None:
    args = build_parser().parse_args()

    config = yaml.safe_load(args.config.read_text())
    model_args = dict(config["model"]["init_args"])
    if args.num_env_runners is not None:
        model_args["num_env_runners"] = args.num_env_runners
    model_args["seed"] = args.seed
    pl.seed_everything(args.seed, verbose=False)
    build_start = time.perf_counter()
    algo = PPO(**model_args)
    build_seconds = time.perf_counter() - build_start

    ray_clock = RayInitClock()
    ray_clock.install(int(algo.hparams.num_env_runners))
    with tempfile.TemporaryDirectory(prefix="ppo_cartpole_") as folder:
        logger = False if args.bare else TimedCSVLogger(save_dir=folder, name="lightning_logs")
        checkpoint = None if args.bare else config_checkpoint(config, str(Path(folder) / "checkpoints"))
        phases = PhaseTimer(timed=[logger, checkpoint])
        fit_start = time.perf_counter()
        _, result = train_to_target(
            algo,
            args,
            check_val_every_n_epoch=config["trainer"].get("check_val_every_n_epoch", 5),
            accelerator=config["trainer"].get("accelerator", "auto"),
            callbacks=[phases, *([checkpoint] if checkpoint else [])],
            logger=logger,
            log_every_n_steps=1,
        )
        fit_seconds = time.perf_counter() - fit_start
    # The first hook after fit() was called: the gap before it is Lightning's own preparation.
    pre_setup = phases.setup_start - fit_start
    at = phases.timed_at
    setup = phases.train_start - phases.setup_start - (at["train_start"] - at["setup"])
    logging = logger.seconds if logger else 0.0
    checkpointing = checkpoint.seconds if checkpoint else 0.0
    evaluation = result["evaluation_seconds"]
    sampling = result["sampling_seconds"]
    iterations = phases.iterations_seconds
    between = iterations - sampling - phases.rollout_processing - phases.updates - evaluation
    # Logging, checkpointing and PSS sampling run inside iterations (hooks around their ends).
    between -= (at["train_end"] - at["train_start"]) + phases.pss_seconds_in_iterations
    learning = phases.updates + phases.rollout_processing + between
    fit_end = fit_start + fit_seconds
    shutdown = (
        fit_end - phases.train_end - phases.pss_seconds_at_end - (phases.timed_seconds() - at["train_end"])
    )
    breakdown = {
        "python_start": import_start,
        "imports": IMPORT_SECONDS - import_start,
        "build": build_seconds,
        "ray_start": ray_clock.seconds if ray_clock.wrapped else None,
        "runner_start": setup - ray_clock.seconds + pre_setup,
        "first_sample": phases.first_sample_seconds,
        "sampling": sampling,
        "learning": learning,
        "updates": phases.updates,
        "rollout_processing": phases.rollout_processing,
        "between_updates": between,
        "evaluation": evaluation,
        "logging": logging,
        "checkpointing": checkpointing,
        "memory_measuring": phases.pss_seconds,
        "shutdown": shutdown,
    }
    counted = sum(
        v
        for k, v in breakdown.items()
        if v is not None and k not in ("first_sample", "updates", "rollout_processing", "between_updates")
    )
    breakdown["other"] = result["total_seconds"] - counted
    result.update(
        num_env_runners=model_args["num_env_runners"],
        bare=args.bare,
        import_seconds=round(IMPORT_SECONDS - import_start, 3),
        process_start_to_import_seconds=round(IMPORT_SECONDS, 3),
        process_start_to_first_sample_seconds=round(phases.process_start_to_first_sample or 0.0, 3),
        phases={k: (round(v, 3) if v is not None else None) for k, v in breakdown.items()},
        # PPO runs an iteration's updates in one training step: count optimizer steps.
        minibatch_updates=algo.weights_version,
        ms_per_update=round(1000 * phases.updates / max(1, algo.weights_version), 3),
        process_tree_pss_mb=round(phases.peak_pss_mb, 1),
        pss_processes=phases.peak_pss_processes,
        # train_to_target's learning_seconds is fit minus sampling and evaluation: start-up,
        # logging and checkpointing included. phases["learning"] is the learner's share alone.
        learning_seconds_incl_startup=result["learning_seconds"],
        learning_seconds=round(learning, 3),
    )
    for key, value in breakdown.items():
        result[f"{key}_seconds"] = round(value, 3) if value is not None else None
    emit(result)


if __name__ == "__main__":
    main()
