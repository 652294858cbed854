"""PettingZoo twin of RLlib's ``examples/multi_agent/self_play_with_open_spiel.py``.

RLlib's example plays OpenSpiel's connect_four (``open_spiel`` installs here, but lightning-rl
has no ``OpenSpielEnv`` wrapper yet); the twin plays PettingZoo's ``connect_four_v3`` through
lightning-rl's ``PettingZooEnv``. The config is
RLlib's: "main" (the default PPO module, ``fcnet_hiddens=[512, 512]``, 20 epochs) against a
``RandomRLModule`` opponent given by a ``MultiRLModuleSpec``, seats swapped per episode by
``hash(episode.id_) % 2``, only "main" trained. RLlib's example then grows a league (its
``SelfPlayCallback`` adds a frozen snapshot of "main" each time main's win rate passes 0.95);
here lightning-rl's ``SelfPlayCallback`` does that job (a Lightning callback, passed through
``.trainer(callbacks=...)``: RLlib's example callback needs ``algorithm.add_module``).

Target (RLlib's first league step): main wins >= 95% against random, i.e. main's mean return
(+1 win, -1 loss) >= 0.9; RLlib's budget is 2M env steps. Reached here: 0.92 at 160k env steps
(``--num-env-runners 0``; see the README's table).

    python examples/rllib_ports/self_play.py [--stop-timesteps N]
"""

from __future__ import annotations

from _loop import example_args, train_until
from pettingzoo.classic import connect_four_v3

from lightning_rl import (
    DefaultModelConfig,
    MultiRLModuleSpec,
    PettingZooEnv,
    PPOConfig,
    RandomRLModule,
    RLModuleSpec,
    SelfPlayCallback,
    register_env,
)

MAIN_RETURN = ("env_runners", "module_episode_returns_mean", "main")


def main(argv=None) -> dict:
    args = example_args(
        default_iters=10_000,
        default_timesteps=2_000_000,
        default_reward=0.9,
        argv=argv,
        extra=lambda p: p.add_argument("--win-rate-threshold", type=float, default=0.95),
    )
    register_env("open_spiel_env", lambda _: PettingZooEnv(connect_four_v3.env()))

    def agent_to_module_mapping_fn(agent_id, episode, **kwargs):
        # Seats alternate between episodes, so main plays first and second.
        return "main" if hash(episode.id_) % 2 == int(str(agent_id)[-1]) else "random"

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
                rl_module_specs={"main": RLModuleSpec(), "random": RLModuleSpec(module_class=RandomRLModule)}
            ),
        )
        .trainer(
            callbacks=[
                SelfPlayCallback(
                    main_policy="main",
                    agents=("player_0", "player_1"),
                    base_opponents=("random",),
                    win_rate_threshold=args.win_rate_threshold,
                )
            ]
        )
    )
    config.training(num_epochs=20)
    return train_until(config, "self_play", args, reward_key=MAIN_RETURN)


if __name__ == "__main__":
    main()
