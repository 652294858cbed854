"""The ``lightning-rl`` console script (LightningCLI underneath), run as a real subprocess."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = str(REPO / "configs" / "ppo" / "cartpole.yaml")


def run_cli(args, cwd, timeout=300):
    executable = shutil.which("lightning-rl")
    cmd = [executable] if executable else [sys.executable, "-m", "lightning_rl.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def quiet(tmp_path):
    return [
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger.init_args.save_dir",
        str(tmp_path),
    ]


def test_fit_from_the_default_config_with_ray_runners_and_overrides(tmp_path):
    proc = run_cli(
        ["fit", "--config", CARTPOLE, "--trainer.max_epochs", "3", "--model.lr", "0.0005", *quiet(tmp_path)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iterations=3" in proc.stdout
    run_dir = next((tmp_path / "lightning_logs").glob("version_*"))
    with open(run_dir / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {
        "env_runners/episode_return_mean",
        "num_env_steps_sampled_lifetime",
        "learners/default_policy/total_loss",
    } <= columns
    steps = [float(r["num_env_steps_sampled_lifetime"]) for r in rows if r["num_env_steps_sampled_lifetime"]]
    assert steps[-1] == 3 * 256
    saved = (run_dir / "config.yaml").read_text()
    assert "lr: 0.0005" in saved and "num_env_runners: 2" in saved
    assert list((run_dir / "checkpoints").glob("*.ckpt")), "Lightning's ModelCheckpoint saved the iteration"


def test_print_config_shows_the_merged_yaml(tmp_path):
    proc = run_cli(["fit", "--config", CARTPOLE, "--model.lr", "0.0005", "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lr: 0.0005" in proc.stdout and "env: CartPole-v1" in proc.stdout


def test_registry_names_are_case_insensitive_and_unknown_names_suggest(tmp_path):
    proc = run_cli(
        [
            "fit",
            "--model",
            "ppo",
            "--model.env",
            "CartPole-v1",
            "--model.train_batch_size",
            "64",
            "--model.minibatch_size",
            "64",
            "--model.num_epochs",
            "1",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_val_batches",
            "0",
            *quiet(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_cli(["fit", "--model", "PPOO", "--model.env", "CartPole-v1"], tmp_path)
    assert proc.returncode == 2
    assert "Unknown algorithm 'PPOO'. Did you mean 'PPO'" in proc.stderr


def test_validate_from_a_checkpoint(tmp_path):
    proc = run_cli(
        [
            "fit",
            "--config",
            CARTPOLE,
            "--model.num_env_runners",
            "0",
            "--trainer.max_epochs",
            "2",
            *quiet(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = next(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    proc = run_cli(
        [
            "validate",
            "--config",
            CARTPOLE,
            "--model.num_env_runners",
            "0",
            "--ckpt_path",
            str(checkpoint),
            *quiet(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluation/episode_return_mean=" in proc.stdout


@pytest.mark.parametrize("args", [["list"], ["list", "--kind", "algorithm"]])
def test_list_prints_names_and_their_distributions(tmp_path, args):
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0
    assert "PPO" in proc.stdout and "lightning-rl" in proc.stdout


@pytest.mark.parametrize("config", ["multi_agent_cartpole.yaml", "tictactoe_self_play.yaml"])
def test_multi_agent_configs_train_from_the_cli(config, tmp_path):
    proc = run_cli(
        [
            "fit",
            "--config",
            str(REPO / "configs" / "ppo" / config),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_val_batches",
            "0",
            *quiet(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "iterations=1" in proc.stdout
