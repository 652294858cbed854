"""Curiosity: a sparse-reward task solved only with an intrinsic reward.

    python examples/curiosity.py [--connector count|rnd]

CombinationLock(length=30): each of 30 cells wants its own action, a wrong one sends the agent
back to the start, and only opening the lock pays. Without exploration PPO would have to
guess 30 bits in a row; with a learner connector that pays for unvisited observations
(count-based curiosity, or RND) it learns the combination cell by cell. Both runs are printed.
"""

import argparse

from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.connectors.learner import RND, CountBasedCuriosity
from lightning_rl.envs.classes import CombinationLock

parser = argparse.ArgumentParser()
parser.add_argument("--connector", choices=["count", "rnd"], default="count")
parser.add_argument("--iterations", type=int, default=60)
args = parser.parse_args()
curiosity = (
    CountBasedCuriosity(intrinsic_reward_coeff=0.1)
    if args.connector == "count"
    else RND(intrinsic_reward_coeff=0.5)
)

for learner_connector in (None, [curiosity]):
    algo = (
        PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
        .environment(CombinationLock, env_config={"length": 30, "max_steps": 150})
        .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
        .training(
            train_batch_size=1024,
            minibatch_size=256,
            num_epochs=4,
            lr=1e-3,
            entropy_coeff=0.01,
            learner_connector=learner_connector,
        )
        .evaluation(evaluation_interval=10, evaluation_duration=8)
        .debugging(seed=0)
        .build_algo()
    )
    for _ in range(args.iterations):
        result = algo.train()
    label = "with curiosity" if learner_connector else "without curiosity"
    print(f"{label}: evaluation return {result['evaluation']['episode_return_mean']}")
    algo.stop()
