"""Multi-agent PPO: two agents, two policies (or one shared), RLlib's config calls.

    python examples/multi_agent_cartpole.py [--shared]

Each agent balances its own CartPole; agent i maps to policy "p<i>". With --shared both
agents use one policy (RLlib's default when no mapping is given). Per-policy returns are
reported under env_runners/module_episode_returns_mean/<policy>.
"""

import argparse

from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.envs.classes import MultiAgentCartPole

parser = argparse.ArgumentParser()
parser.add_argument("--shared", action="store_true")
parser.add_argument("--iterations", type=int, default=300)
args = parser.parse_args()

config = (
    PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
    .environment(MultiAgentCartPole, env_config={"num_agents": 2})
    .env_runners(num_env_runners=0, num_envs_per_env_runner=4)
    .training(
        train_batch_size=256,
        minibatch_size=256,
        num_epochs=10,
        lr=1e-3,
        gamma=0.98,
        lambda_=0.8,
        lr_schedule=[[0, 1e-3], [300_000, 0.0]],
    )
    .evaluation(evaluation_interval=10, evaluation_duration=10)
    .debugging(seed=0)
)
if not args.shared:
    config.multi_agent(
        policies={"p0", "p1"}, policy_mapping_fn=lambda agent_id, episode, **kw: f"p{agent_id}"
    )

algo = config.build_algo()
for _ in range(args.iterations):
    result = algo.train()
    if "evaluation" in result:
        per_policy = result["evaluation"]["module_episode_returns_mean"]
        print(result["training_iteration"], result["num_env_steps_sampled_lifetime"], per_policy)
        if all(ret >= 450 for ret in per_policy.values()) and (args.shared or len(per_policy) == 2):
            break
algo.stop()
