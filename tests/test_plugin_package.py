"""The example plugin in plugins/example_plugin, installed like any third-party package.

`.ci/run` installs it with pip; these tests use it only by the names its entry points declare.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

from lightning_rl import registry
from lightning_rl.config import AlgorithmConfig
from lightning_rl.envs import make_env


def test_the_example_plugin_is_an_installed_distribution():
    dist = metadata.distribution("lightning-rl-example-plugin")
    groups = {ep.group for ep in dist.entry_points}
    assert groups == {"lightning_rl.algorithms", "lightning_rl.envs", "lightning_rl.connectors"}


@pytest.mark.learning
def test_plugin_algorithm_learns_plugin_env_with_plugin_connector(tmp_path):
    config = (
        AlgorithmConfig(registry.get_algorithm_class("a2c"))
        .environment("example-chain", env_config={"length": 5})
        .env_runners(
            num_envs_per_env_runner=8,
            env_to_module_connector=[{"name": "scaleobservations", "config": {"scale": 2.0}}],
        )
        .training(lr=3e-3, train_batch_size=128, gamma=0.95)
        .evaluation(evaluation_interval=5, evaluation_duration=8)
        .debugging(seed=0)
        .trainer(default_root_dir=str(tmp_path))
    )
    algo = config.build_algo()
    assert make_env("example-chain").length == 6
    best = float("-inf")
    for _ in range(60):
        result = algo.train()
        if "evaluation" in result:
            best = max(best, result["evaluation"]["episode_return_mean"])
            if best >= 1.0:
                break
    algo.stop()
    assert best >= 1.0, "A2C should walk the 5-state chain to its rewarding end"


def test_plugin_algorithm_runs_from_the_cli_by_registry_name(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "lightning_rl.cli",
        "fit",
        "--model",
        "a2c",
        "--model.env",
        "example-chain",
        "--trainer.max_epochs",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iterations=2" in proc.stdout
