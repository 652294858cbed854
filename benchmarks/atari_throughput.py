"""Env steps and learner updates per second on an Atari game: asynchronous APPO vs synchronous PPO.

    python benchmarks/atari_throughput.py --env ale_py:ALE/Pong-v5 --num-env-runners 1 --seconds 60
    python benchmarks/atari_throughput.py --algo ppo --env ale_py:ALE/Pong-v5 --num-env-runners 1 --seconds 60

Trains ``configs/<algo>/pong.yaml`` (standard Atari preprocessing, 4 stacked frames, Nature-CNN,
one learner thread) with the game and the number of runners given, without evaluation. The
first ``--warmup-iterations`` iterations (actor start-up, first weights) are not measured; the
window then runs from one iteration's end to the first iteration end at least ``--seconds``
later. The two configs give the learner the same work per env step (one gradient update per
400 sampled steps, each step learned from once), so the difference is the overlap: PPO's
runner waits while the learner learns and the learner waits while the runner samples; APPO's
runner keeps sampling while the learner learns.

The last line is one JSON object: ``env_steps_per_s`` (env steps the runners delivered to the
learner), ``env_steps_trained_per_s`` (those the learner learned from at least once: APPO's
circular buffer drops the oldest batches unused when the runners outpace the learner),
``learner_updates_per_s``, ``mean_policy_lag`` (learner version at learning time minus the
sampling version, in optimizer steps; 0 for PPO), ``peak_rss_mb`` (the driver/learner
process), plus the CPU time each side spent per wall second over the window
(``learner_cpu_busy``, ``runners_cpu_busy``: 1.0 = one core fully used), which shows whether
both were busy at the same time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import psutil
import yaml
from _common import emit, peak_rss_mb

from lightning_rl.registry import get_algorithm_class

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def runner_processes() -> list[psutil.Process]:
    """The Ray actor processes of the EnvRunners (their process titles start with ray::)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if cmdline.startswith("ray::") and "EnvRunner" in cmdline:
            found.append(proc)
    return found


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            continue
    return total


class ThroughputWindow(pl.Callback):
    """Measures env steps, updates, policy lag and CPU use between two iteration ends."""

    def __init__(self, seconds: float, warmup_iterations: int) -> None:
        self.seconds = seconds
        self.warmup_iterations = warmup_iterations
        self.start: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self.learner_device: str | None = None

    def on_train_start(self, trainer: pl.Trainer, algo: Any) -> None:
        # Where the learner ran (the Trainer's accelerator is "auto"): a GPU run says cuda:0.
        self.learner_device = str(algo.device)

    def _snapshot(self, trainer: pl.Trainer, algo: Any) -> dict[str, Any]:
        runners = runner_processes()
        return {
            "time": time.perf_counter(),
            "env_steps": algo.num_env_steps_sampled_lifetime,
            # PPO learns from every step it samples; APPO's circular buffer may drop batches.
            "trained": getattr(
                algo.experience, "num_env_steps_trained_lifetime", algo.num_env_steps_sampled_lifetime
            ),
            "updates": trainer.global_step,
            "lag_sum": getattr(algo, "policy_lag_sum", 0.0),
            "lag_count": getattr(algo, "policy_lag_count", 0),
            "learner_cpu": cpu_seconds([psutil.Process()]),
            "runner_cpu": cpu_seconds(runners),
            "runners": runners,
        }

    def on_train_epoch_end(self, trainer: pl.Trainer, algo: Any) -> None:
        if trainer.current_epoch + 1 < self.warmup_iterations:
            return
        if self.start is None:
            self.start = self._snapshot(trainer, algo)
            return
        now = self._snapshot(trainer, algo)
        elapsed = now["time"] - self.start["time"]
        if elapsed < self.seconds:
            return
        lag_count = now["lag_count"] - self.start["lag_count"]
        self.result = {
            "seconds": round(elapsed, 3),
            "env_steps": now["env_steps"] - self.start["env_steps"],
            "env_steps_per_s": round((now["env_steps"] - self.start["env_steps"]) / elapsed, 2),
            "env_steps_trained_per_s": round((now["trained"] - self.start["trained"]) / elapsed, 2),
            "learner_updates_per_s": round((now["updates"] - self.start["updates"]) / elapsed, 3),
            "mean_policy_lag": round((now["lag_sum"] - self.start["lag_sum"]) / lag_count, 3)
            if lag_count
            else 0.0,
            "learner_cpu_busy": round((now["learner_cpu"] - self.start["learner_cpu"]) / elapsed, 3),
            "runners_cpu_busy": round((now["runner_cpu"] - self.start["runner_cpu"]) / elapsed, 3),
        }
        trainer.should_stop = True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="ale_py:ALE/Pong-v5")
    parser.add_argument("--algo", default="appo", choices=["appo", "ppo", "impala"])
    parser.add_argument("--num-env-runners", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup-iterations", type=int, default=2)
    parser.add_argument("--config", type=Path, default=None, help="default: configs/<algo>/pong.yaml")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config_path = args.config or CONFIGS / ("appo" if args.algo == "impala" else args.algo) / "pong.yaml"
    config = yaml.safe_load(config_path.read_text())
    init_args = dict(config["model"]["init_args"])
    init_args["env_config"] = {**init_args.get("env_config", {}), "id": args.env}
    init_args["num_env_runners"] = args.num_env_runners
    init_args["seed"] = args.seed
    if args.algo == "impala":
        for key in [
            k for k in init_args if k.startswith(("circular_buffer", "target_", "tau", "clip_param"))
        ]:
            init_args.pop(key)
    algo_class = get_algorithm_class(args.algo)
    if args.algo != "ppo":
        # Iterations of one batch each (as PPO's): the window can end close to --seconds.
        init_args["train_batches_per_iteration"] = 1
    pl.seed_everything(args.seed, verbose=False)
    algo = algo_class(**init_args)
    window = ThroughputWindow(args.seconds, args.warmup_iterations)
    trainer = pl.Trainer(
        max_epochs=1_000_000,
        limit_val_batches=0,
        callbacks=[window],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(algo)
    result = dict(window.result or {})
    result.update(
        algo=args.algo,
        env=args.env,
        num_env_runners=args.num_env_runners,
        learner_device=window.learner_device,
        num_envs_per_env_runner=init_args["num_envs_per_env_runner"],
        train_batch_size=init_args["train_batch_size"],
        peak_rss_mb=round(peak_rss_mb(), 1),
        cpu_count=psutil.cpu_count(),
    )
    emit(result)


if __name__ == "__main__":
    main()
