"""Ray Tune over PPO the way RLlib does it: a fluent config with search spaces as the param space.

    python examples/tune_ppo.py [--max-iterations 60] [--storage-path DIR] [--resume]

``Tuner("PPO", param_space=PPOConfig()...training(lr=tune.grid_search([...])))`` runs four
trials (lr x passes per batch), two at a time with in-process EnvRunners. Each trial reports
RLlib's result keys every iteration (``env_runners/episode_return_mean``,
``evaluation/env_runners/episode_return_mean``, ``num_env_steps_sampled_lifetime``,
``training_iteration``), saves a checkpoint every 5 iterations and at its end, and stops at a
training return of 450 or the iteration cap. ``--resume`` continues an interrupted sweep from
each trial's latest checkpoint (``Tuner.restore``). Prints the best trial and its checkpoint.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import ray
from ray import tune

import lightning_rl.tune  # noqa: F401  (registers "PPO" & co. with Tune; accepts fluent configs)
from lightning_rl.algorithms.ppo import PPOConfig

EXPERIMENT = "tune_ppo"
METRIC = "env_runners/episode_return_mean"


def build_config(lrs: list[float], num_epochs: list[int], train_batch_size: int = 256) -> PPOConfig:
    """The sweep as one fluent config: ``tune.grid_search`` where a value would go."""
    return (
        PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4)
        .training(
            lr=tune.grid_search(lrs),
            num_epochs=tune.grid_search(num_epochs),
            train_batch_size=train_batch_size,
            minibatch_size=train_batch_size,
            gamma=0.98,
            lambda_=0.8,
        )
        .evaluation(evaluation_interval=5, evaluation_duration=10)
        .debugging(seed=0)
    )


def main(
    max_iterations: int,
    storage_path: str,
    stop_return: float = 450.0,
    config: PPOConfig | None = None,
    checkpoint_frequency: int = 5,
    resume: bool = False,
) -> tune.ResultGrid:
    experiment = str(Path(storage_path) / EXPERIMENT)
    if resume and tune.Tuner.can_restore(experiment):
        # Unfinished trials continue from their latest checkpoints (counters, optimizers, buffers).
        return tune.Tuner.restore(experiment, trainable="PPO", resume_errored=True).fit()
    tuner = tune.Tuner(
        "PPO",
        param_space=config if config is not None else build_config([1e-3, 3e-4], [5, 10]),
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", max_concurrent_trials=2),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage_path,
            stop={METRIC: stop_return, "training_iteration": max_iterations},
            checkpoint_config=tune.CheckpointConfig(
                checkpoint_frequency=checkpoint_frequency, checkpoint_at_end=True, num_to_keep=2
            ),
            verbose=0,
        ),
    )
    return tuner.fit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max-iterations", type=int, default=60)
    parser.add_argument("--stop-return", type=float, default=450.0)
    parser.add_argument("--storage-path", default=None, help="default: a new temporary folder")
    parser.add_argument("--resume", action="store_true", help="continue the sweep in --storage-path")
    args = parser.parse_args()
    storage = args.storage_path or tempfile.mkdtemp(prefix="tune_ppo_")
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # join that cluster
    else:  # a fresh local Ray (never a stray `ray start` cluster that happens to run here)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
    results = main(args.max_iterations, str(Path(storage).resolve()), args.stop_return, resume=args.resume)
    best = results.get_best_result()
    print("trials:", len(results), "errors:", results.num_errors)
    returns = best.metrics["env_runners"]["episode_return_mean"]
    print(f"best config: lr {best.config['lr']}, num_epochs {best.config['num_epochs']}")
    print(f"its {METRIC}: {returns:.1f} after {best.metrics['num_env_steps_sampled_lifetime']} env steps")
    evaluation = best.metrics.get("evaluation", {}).get("env_runners", {})
    if evaluation:
        print("its last evaluation return:", round(evaluation["episode_return_mean"], 1))
    print("its checkpoint:", best.checkpoint.path if best.checkpoint else None)
