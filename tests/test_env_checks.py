"""The envs the project ships pass the ecosystem's own checkers: gymnasium's ``check_env`` on
every single-agent env, PettingZoo's ``api_test``/``parallel_api_test``/``seed_test`` on every
multi-agent env and adapter (through their PettingZoo views)."""

from __future__ import annotations

import warnings

import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.classic import tictactoe_v3
from pettingzoo.sisl import waterworld_v4
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test

from lightning_rl.envs.atari import make_atari
from lightning_rl.envs.classes import (
    CombinationLock,
    CorridorEnv,
    CrashingEnv,
    MultiAgentCartPole,
    RepeatAfterMe,
    TicTacToe,
)
from lightning_rl.envs.multi_agent import to_pettingzoo, to_pettingzoo_aec
from lightning_rl.envs.wrappers import OpenSpielEnv, ParallelPettingZooEnv, PettingZooEnv

SINGLE_AGENT_ENVS = {
    "CombinationLock": lambda: CombinationLock({"length": 5}),
    "CorridorEnv": lambda: CorridorEnv({}),
    "RepeatAfterMe": lambda: RepeatAfterMe({}),
    "CrashingEnv": lambda: CrashingEnv({"seed": 1}),
    "make_atari": lambda: make_atari({"id": "ale_py:ALE/Pong-v5"}),
    "make_atari(rgb, frame_stack)": lambda: make_atari(
        {"id": "ale_py:ALE/Pong-v5", "grayscale": False, "frame_stack": 2, "screen_size": 64}
    ),
}


@pytest.mark.parametrize("name", sorted(SINGLE_AGENT_ENVS))
def test_gymnasium_check_env_passes(name):
    env = SINGLE_AGENT_ENVS[name]()
    try:
        with warnings.catch_warnings():
            # Style hints (unbounded Box, a wrapped env) are warnings; API violations raise.
            warnings.simplefilter("ignore")
            check_env(env, skip_render_check=True)
    finally:
        env.close()


# Simultaneous-move envs have a PettingZoo Parallel view (and its AEC conversion); turn-based
# ones (only the agent to move observes) an AEC view.
PARALLEL_ENVS = {
    "MultiAgentCartPole": lambda: MultiAgentCartPole({"num_agents": 3}),
    "ParallelPettingZooEnv(waterworld)": lambda: ParallelPettingZooEnv(
        waterworld_v4.parallel_env(max_cycles=40)
    ),
    "OpenSpielEnv(goofspiel)": lambda: OpenSpielEnv("goofspiel"),  # simultaneous moves, chance
}
TURN_BASED_ENVS = {
    "TicTacToe": lambda: TicTacToe({}),
    "PettingZooEnv(tictactoe_v3)": lambda: PettingZooEnv(tictactoe_v3.env()),
    "OpenSpielEnv(connect_four)": lambda: OpenSpielEnv("connect_four"),
    "OpenSpielEnv(kuhn_poker)": lambda: OpenSpielEnv("kuhn_poker"),  # chance nodes, seeded
}


@pytest.mark.parametrize("name", sorted(PARALLEL_ENVS))
def test_pettingzoo_tests_pass_on_simultaneous_move_envs(name):
    make = PARALLEL_ENVS[name]
    parallel_api_test(to_pettingzoo(make()), num_cycles=60)
    api_test(to_pettingzoo_aec(make()), num_cycles=60)
    parallel_seed_test(lambda: to_pettingzoo(make()), num_cycles=20)
    seed_test(lambda: to_pettingzoo_aec(make()), num_cycles=20)


@pytest.mark.parametrize("name", sorted(TURN_BASED_ENVS))
def test_pettingzoo_tests_pass_on_turn_based_envs(name):
    make = TURN_BASED_ENVS[name]
    api_test(to_pettingzoo_aec(make()), num_cycles=60)
    seed_test(lambda: to_pettingzoo_aec(make()), num_cycles=20)
