"""Port of RLlib's tuned example ``tuned_examples/ppo/cartpole_ppo.py``.

RLlib's target: ``evaluation/env_runners/episode_return_mean`` 350 within 200k env steps,
with the tuned settings below on top of PPOConfig's defaults (which must be RLlib's for the
port to learn as it does there). Changed: imports (``model_config`` is RLlib's current name of
``model_config_dict``), RLlib's script helpers replaced by a plain loop (``_loop.py``).

    python examples/rllib_ports/cartpole_ppo.py
"""

from __future__ import annotations

from _loop import example_args, train_until

from lightning_rl import PPOConfig

EVAL_RETURN = ("evaluation", "env_runners", "episode_return_mean")


def main(argv=None) -> dict:
    args = example_args(default_iters=10_000, default_timesteps=200_000, default_reward=350.0, argv=argv)
    config = (
        PPOConfig()
        .environment("CartPole-v1")
        .rl_module(
            model_config={
                "fcnet_hiddens": [32],
                "fcnet_activation": "linear",
                "vf_share_layers": True,
            }
        )
        .training(
            gamma=0.99,
            lr=0.0003,
            num_epochs=6,
            vf_loss_coeff=0.01,
            use_kl_loss=True,
        )
        .evaluation(
            evaluation_num_env_runners=1,
            evaluation_interval=1,
            evaluation_parallel_to_training=True,
            evaluation_config=PPOConfig.overrides(explore=False),
        )
    )
    return train_until(config, "cartpole_ppo", args, reward_key=EVAL_RETURN)


if __name__ == "__main__":
    main()
