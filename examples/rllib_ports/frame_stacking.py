"""Port of RLlib's ``examples/connectors/frame_stacking.py``: frame stacking as a connector.

Atari Pong with the last 4 frames stacked by an env-to-module connector (the env itself returns
single frames). RLlib's target: ``env_runners/episode_return_mean`` 20 within 200 iterations /
5M env steps; on this CPU-only machine the port runs a few iterations (``--stop-iters``).
Changed: imports (RLlib's example ``FrameStackingEnvToModule``/``FrameStackingLearner`` classes
are lightning-rl's ``FrameStack``, which serves both seams; ``wrap_atari_for_new_api_stack`` is
``make_atari``), RLlib's script helpers replaced by a plain loop (``_loop.py``).

    python examples/rllib_ports/frame_stacking.py [--stop-iters 3]
"""

from __future__ import annotations

from _loop import example_args, train_until

from lightning_rl import DefaultModelConfig, FrameStack, PPOConfig, make_atari, register_env


def extra(parser) -> None:
    parser.add_argument("--env", default="ale_py:ALE/Pong-v5")
    parser.add_argument("--num-frames", type=int, default=4)


def main(argv=None) -> dict:
    args = example_args(
        default_timesteps=5000000, default_reward=20.0, default_iters=200, argv=argv, extra=extra
    )

    def _make_env_to_module_connector(env, spaces, device):
        return FrameStack(num_frames=args.num_frames, multi_agent=False)

    def _make_learner_connector(input_observation_space, input_action_space):
        return None  # FrameStack stacks once, on the env-to-module seam (see the docstring)

    def _env_creator(cfg):
        return make_atari({"id": args.env, **cfg, "render_mode": "rgb_array"})

    register_env("atari-env", _env_creator)
    base_config = (
        PPOConfig()
        .environment(
            "atari-env",
            env_config={"frameskip": 1, "full_action_space": False, "repeat_action_probability": 0.0},
            clip_rewards=True,
        )
        .env_runners(
            env_to_module_connector=_make_env_to_module_connector,
            num_envs_per_env_runner=2,
        )
        .training(
            learner_connector=_make_learner_connector,
            entropy_coeff=0.01,
            lr=0.00015,
            grad_clip=100.0,
            grad_clip_by="global_norm",
        )
        .rl_module(
            model_config=DefaultModelConfig(
                vf_share_layers=True,
                conv_filters=[(16, 4, 2), (32, 4, 2), (64, 4, 2), (128, 4, 2)],
                conv_activation="relu",
                head_fcnet_hiddens=[256],
            ),
        )
    )
    base_config.training(
        num_epochs=10, minibatch_size=64, lambda_=0.95, kl_coeff=0.5, clip_param=0.1, vf_clip_param=10.0
    )
    return train_until(base_config, "frame_stacking", args)


if __name__ == "__main__":
    main()
