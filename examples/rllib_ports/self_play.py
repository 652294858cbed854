"""PettingZoo twin of RLlib's ``examples/multi_agent/self_play_with_open_spiel.py``.

RLlib's example plays OpenSpiel's connect_four; the twin plays PettingZoo's ``connect_four_v3``
through lightning-rl's ``PettingZooEnv``, with the seats renamed to OpenSpiel's player numbers
``0``/``1`` (``classes/player_numbers.py``), which RLlib's callback and mapping compare with
``agent_id``. The rest is RLlib's, as written: "main" (the default PPO module,
``fcnet_hiddens=[512, 512]``, 20 epochs) against a ``RandomRLModule`` opponent given by a
``MultiRLModuleSpec``, seats swapped per episode by ``hash(episode.id_) % 2``, only "main"
trained, and a ``SelfPlayCallback`` in the shape of RLlib's example class
(``classes/self_play_callback.py``, written here against RLlib's documented API) passed by
``config.callbacks(functools.partial(...))``: it logs main's win rate per episode in the
runners and, whenever the win rate passes ``--win-rate-threshold``, grows the league through
``algorithm.get_module("main")``, ``algorithm.add_module(..., RLModuleSpec.from_module(main),
new_agent_to_module_mapping_fn=...)`` and ``algorithm.set_state(...)`` (a frozen copy of
main, ``main_v<k>``, that main then plays).

Stop criteria are RLlib's: ``league_size >= --min-league-size`` (3: one snapshot added, i.e.
main beat random more than 95% of the last 100 games), 2M env steps, or ``--stop-iters``.

    python examples/rllib_ports/self_play.py [--stop-timesteps N] [--min-league-size 3]
"""

from __future__ import annotations

import functools

from _loop import example_args, train_until
from classes.player_numbers import PlayerNumbers
from classes.self_play_callback import SelfPlayCallback
from pettingzoo.classic import connect_four_v3

from lightning_rl import (
    DefaultModelConfig,
    MultiRLModuleSpec,
    PettingZooEnv,
    PPOConfig,
    RandomRLModule,
    RLModuleSpec,
    register_env,
)

LEAGUE_SIZE = ("league_size",)


def main(argv=None) -> dict:
    args = example_args(
        default_iters=200,
        default_timesteps=2_000_000,
        default_reward=float("inf"),  # RLlib stops on league_size here, not on a return
        argv=argv,
        extra=lambda p: (
            p.add_argument("--win-rate-threshold", type=float, default=0.95),
            p.add_argument("--min-league-size", type=float, default=3),
        ),
    )
    args.stop_reward = args.min_league_size
    register_env("open_spiel_env", lambda _: PlayerNumbers(PettingZooEnv(connect_four_v3.env())))

    def agent_to_module_mapping_fn(agent_id, episode, **kwargs):
        # agent_id = [0|1] -> module depends on episode ID
        # This way, we make sure that both modules sometimes play agent0
        # (start player) and sometimes agent1 (player to move 2nd).
        return "main" if hash(episode.id_) % 2 == agent_id else "random"

    config = (
        PPOConfig()
        .environment("open_spiel_env")
        .callbacks(functools.partial(SelfPlayCallback, win_rate_threshold=args.win_rate_threshold))
        .env_runners(num_env_runners=(args.num_env_runners or 2), num_envs_per_env_runner=1)
        .multi_agent(
            policies={"main", "random"},
            policy_mapping_fn=agent_to_module_mapping_fn,
            policies_to_train=["main"],
        )
        .rl_module(
            model_config=DefaultModelConfig(fcnet_hiddens=[512, 512]),
            rl_module_spec=MultiRLModuleSpec(
                rl_module_specs={"main": RLModuleSpec(), "random": RLModuleSpec(module_class=RandomRLModule)}
            ),
        )
    )
    config.training(num_epochs=20)
    return train_until(config, "self_play", args, reward_key=LEAGUE_SIZE)


if __name__ == "__main__":
    main()
