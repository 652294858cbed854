"""Memory: PPO with an LSTM, a GRU or a gated transformer-XL on a task that needs it.

    python examples/recurrent_ppo.py [--core lstm|gru|attention|none]

RepeatAfterMe shows a random bit each step and pays for repeating the bit shown one step
earlier: only a policy that remembers can score (maximum 49; a feed-forward policy ~0).
``model_config`` switches: ``use_lstm`` / ``use_gru`` (``lstm_cell_size``), ``use_attention``
(``attention_dim``, ``attention_num_heads``, ``attention_memory_inference``), ``max_seq_len``
(sequence length replayed on the learner), ``lstm_use_prev_action``/``lstm_use_prev_reward``.
"""

import argparse

from lightning_rl.algorithms.ppo import PPOConfig
from lightning_rl.envs.classes import RepeatAfterMe

parser = argparse.ArgumentParser()
parser.add_argument("--core", choices=["lstm", "gru", "attention", "none"], default="lstm")
args = parser.parse_args()
memory = {
    "lstm": {"use_lstm": True, "lstm_cell_size": 32},
    "gru": {"use_gru": True, "lstm_cell_size": 32},
    "attention": {"use_attention": True, "attention_dim": 32, "attention_memory_inference": 4},
    "none": {},
}[args.core]

algo = (
    PPOConfig(defaults="native")  # lightning-rl's tuned defaults, not RLlib's
    .environment(RepeatAfterMe, env_config={"repeat_delay": 1})
    .env_runners(num_env_runners=0, num_envs_per_env_runner=8)
    .rl_module(model_config={"fcnet_hiddens": [32], "max_seq_len": 16, **memory})
    .training(train_batch_size=512, minibatch_size=128, num_epochs=4, lr=3e-3, gamma=0.9, lambda_=0.9)
    .evaluation(evaluation_interval=5, evaluation_duration=16)
    .debugging(seed=0)
    .build_algo()
)
for _ in range(40):
    result = algo.train()
    if "evaluation" in result:
        print(result["training_iteration"], result["evaluation"]["episode_return_mean"])
algo.stop()
