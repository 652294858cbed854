"""Port of RLlib's ``examples/connectors/mean_std_filtering.py``: a MeanStd observation filter.

Pendulum with its observations shifted to [-4000, -1456] ("lopsided"): PPO learns only with the
filter. RLlib's target: ``env_runners/episode_return_mean`` -300 within 500 iterations / 500k
env steps. Changed: imports, RLlib's script helpers replaced by a plain loop (``_loop.py``).
RLlib's ``DefaultModelConfig`` keys are kept as RLlib writes them, initialisers included
(``fcnet_kernel_initializer=xavier_uniform_``, ``fcnet_bias_initializer=constant_(val=0)``).

    python examples/rllib_ports/mean_std_filtering.py [--disable-mean-std-filter]
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from _loop import example_args, train_until

from lightning_rl import DefaultModelConfig, MeanStdFilter, PPOConfig, register_env


class LopsidedObs(gym.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-4000.0, -1456.0, (3,), np.float32)

    def observation(self, observation):
        # Pendulum's [-1, 1] observations mapped onto [-4000, -1456].
        return ((observation + 1.0) / 2.0) * (4000.0 - 1456.0) - 4000.0


def main(argv=None) -> dict:
    args = example_args(
        default_iters=500,
        default_timesteps=500000,
        default_reward=-300.0,
        argv=argv,
        extra=lambda p: p.add_argument("--disable-mean-std-filter", action="store_true"),
    )
    register_env("lopsided-pend", lambda _: LopsidedObs(gym.make("Pendulum-v1")))
    base_config = (
        PPOConfig()
        .environment("lopsided-pend")
        .env_runners(
            num_envs_per_env_runner=20,
            env_to_module_connector=(
                None
                if args.disable_mean_std_filter
                else lambda env, spaces, device: MeanStdFilter(multi_agent=False)
            ),
        )
        .training(train_batch_size_per_learner=512, gamma=0.95, lr=0.0003, vf_loss_coeff=0.01)
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_activation="relu",
                fcnet_kernel_initializer=torch.nn.init.xavier_uniform_,
                fcnet_bias_initializer=torch.nn.init.constant_,
                fcnet_bias_initializer_kwargs={"val": 0.0},
            ),
        )
    )
    base_config.training(minibatch_size=64, lambda_=0.1, vf_clip_param=10.0)
    return train_until(base_config, "mean_std_filtering", args)


if __name__ == "__main__":
    main()
