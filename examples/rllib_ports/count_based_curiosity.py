"""Port of RLlib's ``examples/curiosity/count_based_curiosity.py``: count-based intrinsic reward.

FrozenLake 8x8 (not slippery, 14 steps per episode): without curiosity PPO never finds the
goal. RLlib's target: ``env_runners/episode_return_mean`` 0.99 within 200 iterations / 1M env
steps. Changed: imports (``CountBasedCuriosity``, ``FlattenObservations`` from lightning_rl;
``model_config`` is RLlib's current name of ``model_config_dict``), RLlib's script helpers
replaced by a plain loop (``_loop.py``).

    python examples/rllib_ports/count_based_curiosity.py [--no-curiosity]
"""

from __future__ import annotations

from _loop import example_args, train_until

from lightning_rl import FlattenObservations, PPOConfig
from lightning_rl.connectors.learner import CountBasedCuriosity

ENV_OPTIONS = {
    "is_slippery": False,
    # A hard 8x8 map: many holes, few paths from S to G.
    "desc": [
        "SFFHFFFH",
        "FFFHFFFF",
        "FFFHHFFF",
        "FFFFFFFH",
        "HFFHFFFF",
        "HHFHFFHF",
        "FFFHFHHF",
        "FHFFFFFG",
    ],
    "max_episode_steps": 14,
}


def extra(parser) -> None:
    parser.add_argument("--intrinsic-reward-coeff", type=float, default=1.0)
    parser.add_argument("--no-curiosity", action="store_true")


def main(argv=None) -> dict:
    args = example_args(
        default_reward=0.99, default_iters=200, default_timesteps=1000000, argv=argv, extra=extra
    )
    base_config = (
        PPOConfig()
        .environment("FrozenLake-v1", env_config=ENV_OPTIONS)
        .env_runners(
            num_envs_per_env_runner=5,
            env_to_module_connector=lambda env: FlattenObservations(),
        )
        .training(
            learner_connector=(None if args.no_curiosity else lambda *ags, **kw: CountBasedCuriosity()),
            num_epochs=10,
            vf_loss_coeff=0.01,
        )
        .rl_module(model_config={"vf_share_layers": True})
    )
    return train_until(base_config, "count_based_curiosity", args)


if __name__ == "__main__":
    main()
