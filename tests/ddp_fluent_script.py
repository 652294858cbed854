"""Run by tests/test_ddp.py: RLlib-style learners(num_learners=2) with a train() loop under DDP.

Lightning re-executes this script for rank 1, so it must be a script, not a pytest test.
"""

import json
import sys

from lightning_rl.algorithms.ppo import PPOConfig

out = sys.argv[1]
config = (
    PPOConfig(defaults="native")
    .environment("CartPole-v1")
    .env_runners(num_envs_per_env_runner=4)
    .training(train_batch_size=256, minibatch_size=256, num_epochs=10, lr=1e-3, gamma=0.98, lambda_=0.8)
    .evaluation(evaluation_interval=5, evaluation_duration=10)
    .learners(num_learners=2)
    .debugging(seed=0)
    .trainer(default_root_dir=out)
)
algo = config.build_algo()
results = [algo.train() for _ in range(10)]
rank = algo.trainer.global_rank
with open(f"{out}/fluent_rank{rank}.json", "w") as handle:
    json.dump(
        {
            "world_size": algo.trainer.world_size,
            "iterations": results[-1]["training_iteration"],
            "env_steps": results[-1]["num_env_steps_sampled_lifetime"],
            "evaluation": results[-1]["evaluation"]["episode_return_mean"],
            "policy_loss": results[-1]["learners"]["default_policy"]["policy_loss"],
        },
        handle,
    )
algo.stop()
