"""RLlib's "in 60 seconds" quick start with only the imports changed.

    python examples/rllib_in_60s.py

Trains PPO on Taxi-v3 with 2 Ray EnvRunner actors (observations one-hot encoded by the
FlattenObservations connector), evaluates on a separate evaluation runner, then releases
every actor.
"""

from pprint import pprint

from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.connectors.env_to_module import FlattenObservations

config = (
    PPOConfig()
    .environment("Taxi-v3")
    .env_runners(
        num_env_runners=2,
        # Observations are discrete (ints) -> We need to flatten (one-hot) them.
        env_to_module_connector=lambda env: FlattenObservations(),
    )
    .evaluation(evaluation_num_env_runners=1)
)
algo = config.build_algo()

for _ in range(5):
    pprint(algo.train())

pprint(algo.evaluate())

algo.stop()
