"""Run by tests/test_cluster_learners.py in a child process with ``RAY_ADDRESS`` set (as
``ray job submit`` would): an RLlib-style script whose learners are Ray Train workers.

Prints ``@@{json}`` with the run's results as its last line.
"""

from __future__ import annotations

import json
import sys

from lightning_rl.algorithms.ppo import PPOConfig


def main() -> None:
    settings = json.loads(sys.argv[1])
    config = (
        PPOConfig(defaults="native")
        .environment("CartPole-v1")
        .env_runners(
            **{"num_env_runners": 0, "num_envs_per_env_runner": 2, **settings.get("env_runners", {})}
        )
        .training(train_batch_size=64, minibatch_size=64, num_epochs=2, lr=1e-3)
        .learners(
            num_learners=2,
            num_cpus_per_learner=1,
            custom_resources_per_learner={"learner": 1},
            learner_placement="ray",
            storage_path=settings["storage_path"],
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        result = algo.fit(settings["iterations"])
    finally:
        algo.stop()
    keys = ("training_iteration", "num_env_steps_sampled_lifetime", "learner_ranks", "checkpoint")
    print("@@" + json.dumps({key: result[key] for key in keys}), flush=True)


if __name__ == "__main__":
    main()
