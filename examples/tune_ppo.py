"""A small Ray Tune search over PPO's fluent config, stopping trials that solve CartPole.

    python examples/tune_ppo.py [--max-iterations 60]

Four trials (lr x passes per batch), two at a time, one CPU each, in-process EnvRunners; every
iteration's results go to Tune; a trial stops at an evaluation return of 450 or at the
iteration cap. Prints the best trial.
"""

import argparse
import tempfile

import ray
from ray import tune

from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.tune import tune_trainable


def make_config(config: dict) -> PPOConfig:
    return (
        PPOConfig()
        .environment("CartPole-v1")
        .env_runners(num_env_runners=0, num_envs_per_env_runner=4)
        .training(
            lr=config["lr"],
            num_epochs=config["num_epochs"],
            train_batch_size=256,
            minibatch_size=256,
            gamma=0.98,
            lambda_=0.8,
        )
        .evaluation(evaluation_interval=5, evaluation_duration=10)
        .debugging(seed=0)
    )


def main(max_iterations: int, storage_path: str, stop_return: float = 450.0) -> tune.ResultGrid:
    tuner = tune.Tuner(
        tune.with_resources(tune_trainable(make_config, max_iterations), {"cpu": 1}),
        param_space={"lr": tune.grid_search([1e-3, 3e-4]), "num_epochs": tune.grid_search([5, 10])},
        tune_config=tune.TuneConfig(metric="evaluation_return", mode="max", max_concurrent_trials=2),
        run_config=tune.RunConfig(
            storage_path=storage_path,
            stop={"evaluation_return": stop_return, "training_iteration": max_iterations},
            verbose=0,
        ),
    )
    return tuner.fit()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-iterations", type=int, default=60)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False)
    results = main(args.max_iterations, tempfile.mkdtemp(prefix="tune_ppo_"))
    best = results.get_best_result()
    print("trials:", len(results), "errors:", results.num_errors)
    print("best config:", best.config, "evaluation return:", best.metrics["evaluation_return"])
