"""The entry-point registry: built-ins, third-party distributions, clashes, broken plugins.

Third-party distributions are real ones: a ``*.dist-info`` directory with ``METADATA`` and
``entry_points.txt`` on ``sys.path`` is exactly what ``importlib.metadata`` discovers for an
installed package.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import pytest

from lightning_rl import registry
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.cli import main as cli_main
from lightning_rl.connectors import FlattenObservations, build_connector
from lightning_rl.envs import make_env, register_env
from lightning_rl.errors import PluginError, UnknownNameError


@pytest.fixture
def distributions(tmp_path, monkeypatch):
    """Install fake distributions into a temporary site directory for one test."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    created_modules: list[str] = []

    def install(name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str]) -> None:
        dist_info = site / f"{name.replace('-', '_')}-1.2.3.dist-info"
        dist_info.mkdir()
        (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
        lines = []
        for group, entries in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{key} = {value}" for key, value in entries.items()]
        (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in modules.items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            created_modules.append(module)
        registry.refresh()

    yield install
    for module in created_modules:
        sys.modules.pop(module, None)
    monkeypatch.undo()
    registry.refresh()


PLUGIN_SOURCE = """
import gymnasium as gym
import numpy as np
from gymnasium import spaces

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.connectors import EnvToModule


class TinyEnv(gym.Env):
    def __init__(self, config=None):
        self.size = int((config or {}).get("size", 3))
        self.observation_space = spaces.Box(0, 1, (self.size,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        return np.zeros(self.size, np.float32), {}

    def step(self, action):
        return np.zeros(self.size, np.float32), 1.0, True, False, {}


class Negate(EnvToModule):
    def __call__(self, obs, *, env_ids=None, update=True):
        return -obs


class TinyPPO(PPO):
    pass
"""


def test_builtins_register_through_entry_points():
    assert registry.algorithms.get("ppo") is PPO
    assert registry.algorithms.get("PPO") is PPO
    assert registry.connectors.get("flattenobservations") is FlattenObservations
    sources = {row["name"]: row["source"] for row in registry.list_registered()}
    assert sources["PPO"].startswith("lightning-rl ")
    assert make_env("corridor", {"corridor_length": 3}).corridor_length == 3


def test_a_distribution_that_only_declares_entry_points_is_usable_by_name(distributions, capsys):
    distributions(
        "acme-rl",
        {
            "lightning_rl.algorithms": {"TinyPPO": "acme_plugin:TinyPPO"},
            "lightning_rl.envs": {"acme-tiny": "acme_plugin:TinyEnv"},
            "lightning_rl.connectors": {"Negate": "acme_plugin:Negate"},
        },
        {"acme_plugin": PLUGIN_SOURCE},
    )
    assert registry.get_algorithm_class("tinyppo").__name__ == "TinyPPO"
    assert make_env("ACME-TINY", {"size": 5}).observation_space.shape == (5,)
    assert type(build_connector({"name": "negate"})).__name__ == "Negate"
    algo = (
        PPOConfig()
        .environment("acme-tiny", env_config={"size": 4})
        .env_runners(env_to_module_connector=["Negate"])
        .build_algorithm()
    )
    assert algo.observation_space.shape == (4,)
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "acme-tiny" in out and "acme-rl 1.2.3" in out


def test_a_name_declared_by_two_distributions_names_both(distributions):
    distributions(
        "first-dist", {"lightning_rl.envs": {"Clash": "first_mod:Env"}}, {"first_mod": "Env = dict\n"}
    )
    distributions(
        "second-dist", {"lightning_rl.envs": {"clash": "second_mod:Env"}}, {"second_mod": "Env = dict\n"}
    )
    with pytest.raises(PluginError, match=r"'clash'.*first-dist 1\.2\.3.*second-dist 1\.2\.3"):
        registry.envs.get("clash")
    assert registry.envs.get("corridor")  # the rest of the registry is unaffected
    statuses = {(r["name"], r["source"]): r["status"] for r in registry.list_registered()}
    assert statuses[("Clash", "first-dist 1.2.3")] == "conflict"


def test_a_plugin_that_fails_to_import_names_its_distribution(distributions):
    distributions(
        "broken-dist",
        {"lightning_rl.algorithms": {"Broken": "broken_mod:Algo"}},
        {"broken_mod": "import does_not_exist_anywhere\n"},
    )
    with pytest.raises(
        PluginError, match=r"'Broken' from distribution 'broken-dist 1\.2\.3' failed to import"
    ):
        registry.get_algorithm_class("broken")
    assert registry.get_algorithm_class("ppo") is PPO


def test_the_cli_names_a_broken_plugin_only_when_a_run_asks_for_it(distributions, capsys, tmp_path):
    from lightning_rl.lightning_cli import run_lightning_command

    distributions(
        "broken-dist",
        {"lightning_rl.algorithms": {"Broken": "broken_mod:Algo"}},
        {"broken_mod": "import does_not_exist_anywhere\n"},
    )
    assert run_lightning_command("fit", ["fit", "--model", "broken"]) == 2
    assert "'Broken' from distribution 'broken-dist 1.2.3' failed to import" in capsys.readouterr().err
    # A bare class name makes the CLI import every algorithm: the broken one is passed over.
    bare = tmp_path / "bare.yaml"
    bare.write_text("model:\n  class_path: PPO\n  init_args:\n    env: CartPole-v1\n")
    with pytest.raises(SystemExit) as printed:
        run_lightning_command("fit", ["fit", "--config", str(bare), "--print_config"])
    assert printed.value.code == 0
    assert "env: CartPole-v1" in capsys.readouterr().out


def test_an_entry_that_is_not_an_algorithm_is_rejected(distributions):
    distributions(
        "wrong-dist",
        {"lightning_rl.algorithms": {"NotAlgo": "wrong_mod:Thing"}},
        {"wrong_mod": "Thing = 3\n"},
    )
    with pytest.raises(PluginError, match="not a valid algorithm"):
        registry.get_algorithm_class("notalgo")


def test_autoload_switch_keeps_only_the_builtins(distributions, monkeypatch):
    distributions(
        "acme-rl", {"lightning_rl.envs": {"acme-tiny": "acme_plugin:TinyEnv"}}, {"acme_plugin": PLUGIN_SOURCE}
    )
    monkeypatch.setenv(registry.AUTOLOAD_ENV_VAR, "1")
    registry.refresh()
    assert "acme-tiny" not in registry.envs
    assert registry.algorithms.get("ppo") is PPO


def test_in_process_registration_is_case_insensitive_and_reaches_make_env():
    register_env("My-Corridor", lambda config: gym.make("CartPole-v1"))
    try:
        assert make_env("my-corridor").spec.id == "CartPole-v1"
    finally:
        registry.envs.unregister("My-Corridor")


def test_names_registered_with_ray_tune_resolve():
    from ray.tune.registry import register_env as tune_register_env

    tune_register_env("tune-registered-cartpole", lambda config: gym.make("CartPole-v1"))
    assert make_env("tune-registered-cartpole").spec.id == "CartPole-v1"


def test_unknown_names_suggest_close_matches():
    with pytest.raises(UnknownNameError, match=r"Unknown env 'CartPol-v1'. Did you mean 'CartPole-v1'"):
        make_env("CartPol-v1")
    with pytest.raises(UnknownNameError, match=r"Unknown algorithm 'PPOO'. Did you mean 'PPO'"):
        registry.get_algorithm_class("PPOO")
    with pytest.raises(UnknownNameError, match="Unknown connector 'Flaten'"):
        build_connector({"name": "Flaten"})


def test_gymnasium_ids_resolve_case_insensitively():
    assert make_env("cartpole-v1").spec.id == "CartPole-v1"


def test_algorithms_build_from_a_registered_env_name(tmp_path: Path):
    algo = PPO("Corridor", {"corridor_length": 4})
    assert algo.hparams.env == "Corridor"
    assert algo.observation_space.shape == (1,)
