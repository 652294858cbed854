"""RLlib's ``examples/multi_agent/self_play_with_open_spiel.py`` (new API stack), imports changed.

OpenSpiel's ``connect_four`` through lightning-rl's ``OpenSpielEnv`` (RLlib's
``OpenSpielEnv(pyspiel.load_game(...))`` call as written; players ``0``/``1``), "main" (the
default PPO module, ``fcnet_hiddens=[512, 512]``, 20 epochs) against a ``RandomRLModule``
given by a ``MultiRLModuleSpec``, seats swapped per episode by RLlib's
``hash(episode.id_) % 2 == agent_id``, only "main" trained.

What differs from RLlib's file besides the imports:

* ``OpenSpielEnv`` adds an ``action_mask`` to each observation (lightning-rl's policies and
  ``RandomRLModule`` read it), so neither side plays an illegal move; RLlib's env replaces an
  illegal move by a random legal one with a -0.1 penalty.
* RLlib's example ``SelfPlayCallback`` (which grows the league through
  ``algorithm.add_module``) is replaced by lightning-rl's ``SelfPlayCallback``, a Lightning
  callback passed through ``.trainer(callbacks=...)`` with the same job: snapshot "main" as a
  frozen opponent when its win rate passes ``--win-rate-threshold``.
* The human-vs-main games after training (``--num-episodes-human-play``, reading moves from
  stdin) are left out; RLlib's stop criterion ``league_size >= 3`` is the return threshold
  that triggers the first snapshot: main's mean return vs random >= 0.9 (a 95% win rate).

    python examples/rllib_ports/self_play_with_open_spiel.py [--stop-timesteps N] [--env GAME]
"""

from __future__ import annotations

import pyspiel
from _loop import example_args, train_until

from lightning_rl import (
    DefaultModelConfig,
    MultiRLModuleSpec,
    OpenSpielEnv,
    PPOConfig,
    RandomRLModule,
    RLModuleSpec,
    SelfPlayCallback,
    register_env,
)

MAIN_RETURN = ("env_runners", "module_episode_returns_mean", "main")


def main(argv=None) -> dict:
    def extra(parser):
        parser.add_argument("--env", default="connect_four")
        parser.add_argument("--win-rate-threshold", type=float, default=0.95)

    args = example_args(
        default_iters=10_000, default_timesteps=2_000_000, default_reward=0.9, argv=argv, extra=extra
    )

    register_env("open_spiel_env", lambda _: OpenSpielEnv(pyspiel.load_game(args.env)))

    def agent_to_module_mapping_fn(agent_id, episode, **kwargs):
        # agent_id = [0|1] -> module depends on episode ID
        # This way, we make sure that both modules sometimes play agent0
        # (start player) and sometimes agent1 (player to move 2nd).
        return "main" if hash(episode.id_) % 2 == agent_id else "random"

    config = (
        PPOConfig()
        .environment("open_spiel_env")
        .env_runners(num_envs_per_env_runner=1)
        .multi_agent(
            policies={"main", "random"},
            policy_mapping_fn=agent_to_module_mapping_fn,
            policies_to_train=["main"],
        )
        .rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=[512, 512]),
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={
                    "main": RLModuleSpec(),
                    "random": RLModuleSpec(module_class=RandomRLModule),
                }
            ),
        )
        .trainer(
            callbacks=[
                SelfPlayCallback(
                    main_policy="main",
                    agents=(0, 1),
                    base_opponents=("random",),
                    win_rate_threshold=args.win_rate_threshold,
                )
            ]
        )
    )
    # Only for PPO, change the `num_epochs` setting.
    config.training(num_epochs=20)
    return train_until(config, "self_play_with_open_spiel", args, reward_key=MAIN_RETURN)


if __name__ == "__main__":
    main()
