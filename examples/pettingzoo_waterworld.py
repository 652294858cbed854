"""RLlib's PettingZoo waterworld example with only the imports changed.

    pip install "lightning-rl[sisl]"     # what waterworld needs (pymunk, scipy, pygame)
    python examples/pettingzoo_waterworld.py

Each pursuer gets its own policy, named after the agent.
"""

from pettingzoo.sisl import waterworld_v4

from lightning_rl import register_env
from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.envs.wrappers.pettingzoo_env import PettingZooEnv

register_env("env", lambda _: PettingZooEnv(waterworld_v4.env()))

config = (
    PPOConfig()
    .environment("env")
    .multi_agent(
        policies={"pursuer_0", "pursuer_1"},
        # Each agent id maps to the policy of the same name.
        policy_mapping_fn=lambda agent_id, episode, **kw: agent_id,
    )
    .training(train_batch_size=4000, minibatch_size=500, num_epochs=5)
)
algo = config.build_algo()
for _ in range(3):
    result = algo.train()
    print(result["training_iteration"], result["env_runners"].get("module_episode_returns_mean"))
algo.stop()
