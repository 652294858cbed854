"""OpenSpielEnv on real pyspiel games: spaces, turns, rewards, seeding, illegal moves, names, PPO."""

from __future__ import annotations

import numpy as np
import pyspiel
import pytest
from gymnasium import spaces

from lightning_rl import (
    MultiRLModuleSpec,
    OpenSpielEnv,
    PPOConfig,
    RandomRLModule,
    RLModuleSpec,
    register_env,
    registry,
)
from lightning_rl.envs import make_env
from lightning_rl.envs.multi_agent import ALL
from lightning_rl.errors import ConfigError, UnknownNameError


def play_random_game(env: OpenSpielEnv, seed: int, rng_seed: int = 0):
    """Legal random moves (from the mask) to the end: (obs per step, summed rewards, steps)."""
    rng = np.random.default_rng(rng_seed)
    obs, _ = env.reset(seed=seed)
    trace, totals, steps = [obs], dict.fromkeys(env.possible_agents, 0.0), 0
    while True:
        actions = {p: int(rng.choice(np.flatnonzero(o["action_mask"]))) for p, o in obs.items()}
        obs, rewards, terminateds, truncateds, _ = env.step(actions)
        trace.append(obs)
        steps += 1
        for player, reward in rewards.items():
            totals[player] += reward
        if terminateds[ALL] or truncateds[ALL]:
            return trace, totals, steps


@pytest.mark.parametrize(("game", "num_actions"), [("connect_four", 7), ("tic_tac_toe", 9)])
def test_spaces_and_turn_order(game, num_actions):
    env = OpenSpielEnv(pyspiel.load_game(game))  # RLlib's form: a loaded pyspiel.Game
    spiel_game = pyspiel.load_game(game)
    assert env.possible_agents == [0, 1]
    space = env.observation_spaces[0]
    assert isinstance(space, spaces.Dict)
    assert space["observation"].shape == (spiel_game.observation_tensor_size(),)
    assert space["action_mask"].shape == (num_actions,)
    assert env.action_spaces[1] == spaces.Discrete(num_actions)
    obs, _ = env.reset(seed=0)
    assert list(obs) == [0]  # the first player moves first, alone
    assert space.contains(obs[0]) and obs[0]["action_mask"].all()
    obs, rewards, terminateds, _, _ = env.step({0: 0})
    assert list(obs) == [1] and rewards == {0: 0.0, 1: 0.0} and not terminateds[ALL]
    obs, *_ = env.step({1: 1})
    assert list(obs) == [0]
    with pytest.raises(ValueError, match="missing \\[0\\]"):
        env.step({1: 2})  # not player 1's turn


@pytest.mark.parametrize("game", ["connect_four", "tic_tac_toe"])
def test_random_game_ends_with_the_games_returns(game):
    env = OpenSpielEnv(game)
    _, totals, steps = play_random_game(env, seed=3)
    assert [totals[p] for p in env.possible_agents] == pytest.approx(env.state.returns())
    assert sum(totals.values()) == pytest.approx(0.0)  # zero-sum
    assert steps <= pyspiel.load_game(game).max_game_length()
    final = play_random_game(env, seed=3)[0][-1]
    assert set(final) == {0, 1} and not final[0]["action_mask"].any()  # final observations, no legal move


def test_seeded_reset_reproduces_chance_nodes():
    env = OpenSpielEnv("kuhn_poker")  # the deal is a chance node the env resolves
    first = play_random_game(env, seed=7)
    again = play_random_game(env, seed=7)
    assert first[2] == again[2] and first[1] == again[1]
    for a, b in zip(first[0], again[0], strict=True):
        assert a.keys() == b.keys()
        for player in a:
            np.testing.assert_array_equal(a[player]["observation"], b[player]["observation"])
    deals = {tuple(OpenSpielEnv("kuhn_poker").reset(seed=s)[0][0]["observation"]) for s in range(12)}
    assert len(deals) > 1  # different seeds deal different cards


def test_illegal_move_forfeits_and_bad_actions_raise():
    env = OpenSpielEnv("connect_four", illegal_action_reward=-2.0)
    env.reset(seed=0)
    for turn in range(6):  # fill column 0 (alternating discs: no four in a row)
        env.step({turn % 2: 0})
    obs, rewards, terminateds, truncateds, infos = env.step({0: 0})
    assert rewards == {0: -2.0, 1: 0.0}
    assert terminateds == {0: True, 1: True, ALL: True} and not truncateds[ALL]
    assert infos == {0: {"illegal_action": 0}}
    assert set(obs) == {0, 1}
    with pytest.raises(RuntimeError, match="reset"):
        env.step({1: 1})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step({0: 7})
    with pytest.raises(ValueError, match="one integer"):
        env.step({0: 0.5})


def test_game_names_are_checked_and_settings_apply():
    with pytest.raises(UnknownNameError, match="Did you mean 'connect_four'"):
        OpenSpielEnv("connect4")
    with pytest.raises(ConfigError, match="observation_type"):
        OpenSpielEnv("tic_tac_toe", observation_type="pixels")
    with pytest.raises(ConfigError, match="no information_state tensor"):
        OpenSpielEnv("connect_four", observation_type="information_state")
    with pytest.raises(ConfigError, match="Unknown OpenSpielEnv setting"):
        OpenSpielEnv({"game": "tic_tac_toe", "gmae_parameters": {}})
    bare = OpenSpielEnv("tic_tac_toe", action_mask=False)  # RLlib's bare observation vector
    assert bare.observation_spaces[0] == spaces.Box(-np.inf, np.inf, (27,), np.float32)
    assert bare.reset(seed=0)[0][0].shape == (27,)
    small = OpenSpielEnv("connect_four(rows=4,columns=5)")
    assert small.action_spaces[0].n == 5
    registered = make_env("OpenSpiel", {"game": "connect_four", "game_parameters": {"columns": 5}})
    assert isinstance(registered, OpenSpielEnv) and registered.action_spaces[0].n == 5


@pytest.mark.parametrize(("game", "action_mask"), [("connect_four", True), ("tic_tac_toe", False)])
def test_ppo_trains_main_against_random_for_one_iteration(tmp_path, game, action_mask):
    # Without masks both sides play illegal moves, which forfeit: the runner sees episodes end early.
    register_env("open-spiel-test", lambda _: OpenSpielEnv(pyspiel.load_game(game), action_mask=action_mask))
    try:
        algo = (
            PPOConfig()
            .environment("open-spiel-test")
            .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
            .multi_agent(
                policies={"main", "random"},
                policy_mapping_fn=lambda agent_id, episode, **kw: (
                    "main" if hash(episode.id_) % 2 == agent_id else "random"
                ),
                policies_to_train=["main"],
            )
            .rl_module(
                rl_module_spec=MultiRLModuleSpec(
                    rl_module_specs={
                        "main": RLModuleSpec(),
                        "random": RLModuleSpec(module_class=RandomRLModule),
                    }
                )
            )
            .training(train_batch_size=200, minibatch_size=100, num_epochs=1)
            .trainer(default_root_dir=str(tmp_path))
            .build_algo()
        )
        result = algo.train()
        algo.stop()
    finally:
        registry.envs.unregister("open-spiel-test")
    assert result["env_runners"]["num_episodes"] > 0
    assert set(result["learners"]) >= {"main"} and "random" not in result["learners"]
    returns = result["env_runners"]["module_episode_returns_mean"]
    assert -1.0 <= returns["main"] <= 1.0
    if not action_mask:  # a full tic-tac-toe board takes 9 moves; forfeits end games sooner
        assert result["env_runners"]["episode_len_mean"] < 9


def test_simultaneous_move_game_asks_every_player():
    env = OpenSpielEnv("goofspiel")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {0, 1}
    with pytest.raises(ValueError, match="missing \\[1\\]"):
        env.step({0: 0})
    _, totals, _ = play_random_game(env, seed=5)
    assert [totals[p] for p in env.possible_agents] == pytest.approx(env.state.returns())
