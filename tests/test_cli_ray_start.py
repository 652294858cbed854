"""`lightning-rl fit` starts its runners' local Ray before importing Lightning, and a wrong
early guess never leaves the run on the wrong Ray (lightning_rl.cli_ray_start, ray_cluster)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_rl.cli_ray_start import model_settings, runner_bundles

ROOT = Path(__file__).resolve().parents[1]
PPO_CONFIG = str(ROOT / "configs" / "ppo" / "cartpole.yaml")


def bundles(*argv: str):
    settings = model_settings(list(argv))
    return None if settings is None else runner_bundles(settings)


def test_the_readme_config_asks_for_one_one_cpu_runner():
    assert bundles("--config", PPO_CONFIG) == [{"CPU": 1.0}]


def test_flags_after_the_config_win_in_every_spelling():
    assert bundles("--config", PPO_CONFIG, "--model.num_env_runners", "0") == []
    assert bundles(f"--config={PPO_CONFIG}", "--model.init_args.num_env_runners=3") == [{"CPU": 1.0}] * 3
    # a flag without a value does not swallow the next flag
    assert (
        bundles(
            "-c",
            PPO_CONFIG,
            "--trainer.fast_dev_run",
            "--model.evaluation_num_env_runners",
            "1",
            "--model.num_cpus_per_env_runner",
            "0.5",
        )
        == [{"CPU": 0.5}] * 2  # the config's one runner and one evaluation runner
    )


@pytest.mark.parametrize(
    "extra",
    [
        ["--print_config"],
        ["--help"],
        ["--model.address", "127.0.0.1:6379"],
        ["--model.ray_init_kwargs", "{namespace: x}"],
        ["--model.num_gpus_per_env_runner", "1"],
        ["--model.num_env_runners", "two"],
    ],
)
def test_no_guess_where_the_run_is_not_a_plain_local_ray(extra):
    assert bundles("--config", PPO_CONFIG, *extra) is None


def test_no_guess_without_a_readable_config_or_runner_count(tmp_path):
    assert bundles("--config", str(tmp_path / "missing.yaml")) is None
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    assert bundles("--config", str(broken)) is None
    assert bundles("--model", "ppo", "--model.env", "CartPole-v1") is None  # the default is the class's


SCRIPT = textwrap.dedent(
    """
    import time
    import ray
    from lightning_rl import ray_cluster

    assert ray_cluster.start_local_ray_early([{"CPU": 1.0}] * 2)
    assert not ray_cluster.start_local_ray_early([{"CPU": 1.0}] * 2)  # one start at a time
    ray_cluster.ensure_ray(bundles=[{"CPU": 1.0}] * {needed})
    time.sleep(2)  # Ray's processes outlive the start (they die with the thread that started them)

    @ray.remote(num_cpus=1)
    def one():
        return 1

    assert ray.get([one.remote() for _ in range({needed})], timeout=60) == [1] * {needed}
    print("CPUS", int(ray.cluster_resources()["CPU"]), "STARTED_HERE", ray_cluster._started_here)
    ray_cluster.shutdown_ray_if_started_here()
    assert not ray.is_initialized()
    """
)


@pytest.mark.parametrize("needed", [2, 3], ids=["guess-right", "guess-wrong"])
def test_ensure_ray_uses_the_early_ray_only_when_it_is_the_one_it_would_start(needed, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("{needed}", str(needed))],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # guess right: the 2-CPU Ray started early is used; wrong: it is replaced by a 3-CPU one
    assert f"CPUS {needed} STARTED_HERE True" in done.stdout
    assert "SIGTERM handler is not set" not in done.stderr
