"""Smoke test of the RLlib example ports in examples/rllib_ports/: each runs one tiny iteration.

The learning runs to RLlib's targets are recorded in examples/rllib_ports/README.md (minutes
each); here every port that runs today is imported and trained for one iteration of a 64-step
batch, so an API change that breaks a port fails the suite. Ports that still need a missing
feature are listed in the README with the exact error, not here.
"""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

import pytest

PORTS = Path(__file__).resolve().parents[1] / "examples" / "rllib_ports"
TINY = ["--stop-iters", "1", "--train-batch-size", "64", "--num-env-runners", "0", "--no-evaluation"]


@pytest.fixture
def port_module():
    sys.path.insert(0, str(PORTS))
    try:
        yield lambda name: importlib.import_module(name)
    finally:
        sys.path.remove(str(PORTS))


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("custom_gym_env", []),
        ("cartpole_ppo", []),
        ("multi_agent_cartpole", []),
        ("count_based_curiosity", []),
        ("mean_std_filtering", []),
        ("self_play", []),
        ("self_play_with_open_spiel", []),
        ("custom_evaluation", []),
        ("policy_inference_after_training", ["--num-episodes-during-inference", "1"]),
    ],
)
def test_a_port_trains_one_iteration(port_module, name, extra):
    summary = port_module(name).main([*TINY, *extra])
    assert summary["iterations"] == 1
    assert summary["env_steps"] >= 64
    assert summary["example"].startswith(name)
    if name == "policy_inference_after_training":
        assert math.isfinite(summary["inference_return_mean"]) and summary["inference_return_mean"] > 0


def test_the_checkpoint_port_picks_checkpoints_by_custom_criteria(port_module):
    out = port_module("checkpoint_by_custom_criteria").main(TINY)
    assert [trial["iterations"] for trial in out["trials"]] == [1, 1, 1]
    assert out["best_lr"] in (0.01, 0.001, 0.0001)


def test_the_action_masking_port_never_sends_an_illegal_action(port_module):
    module = importlib.import_module("examples.rllib_ports.action_masking_rl_module")
    summary = module.main(
        ["--iterations", "1", "--train-batch-size", "64", "--num-env-runners", "0", "--no-evaluation"]
    )
    assert summary["iterations"] == 1 and summary["illegal_actions"] == 0
