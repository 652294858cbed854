"""The ``lightning-rl`` console script (LightningCLI underneath), run as a real subprocess."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CARTPOLE = str(REPO / "configs" / "ppo" / "cartpole.yaml")
# Env steps per PPO iteration of the shipped config.
BATCH = yaml.safe_load(Path(CARTPOLE).read_text())["model"]["init_args"]["train_batch_size"]


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
    assert steps[-1] == 3 * BATCH
    saved = (run_dir / "config.yaml").read_text()
    assert "lr: 0.0005" in saved and "num_env_runners: 1" in saved
    assert list((run_dir / "checkpoints").glob("*.ckpt")), "Lightning's ModelCheckpoint saved the iteration"


def test_print_config_shows_the_merged_yaml(tmp_path):
    proc = run_cli(["fit", "--config", CARTPOLE, "--model.lr", "0.0005", "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lr: 0.0005" in proc.stdout and "env: CartPole-v1" in proc.stdout


def test_a_run_imports_only_the_algorithm_its_config_names(tmp_path):
    # Importing every registered algorithm cost the main job ~0.7 s and ~70 MB (torchrl's data,
    # envs and modules come with DQN, SAC and DreamerV3); a dotted class path needs only its own.
    code = (
        "import sys\n"
        "from lightning_rl.lightning_cli import run_lightning_command\n"
        "try:\n"
        f"    run_lightning_command('fit', ['fit', '--config', {CARTPOLE!r}, '--print_config'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in ('lightning_rl.algorithms.dqn', 'lightning_rl.algorithms.dreamerv3', 'torchrl')"
        " if m in sys.modules]\n"
        "print('LOADED', loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "class_path: lightning_rl.algorithms.ppo.PPO" in proc.stdout
    assert "LOADED []" in proc.stdout


def test_a_bare_class_name_in_a_config_still_resolves(tmp_path):
    config = tmp_path / "bare.yaml"
    config.write_text("model:\n  class_path: DQN\n  init_args:\n    env: CartPole-v1\n")
    proc = run_cli(["fit", "--config", str(config), "--print_config"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = proc.stdout[proc.stdout.index("\nmodel:") :]
    assert re.search(r"class_path: lightning_rl\.[\w.]*DQN\n", model), model[:300]


def test_a_model_given_as_another_config_file_imports_every_algorithm(tmp_path):
    from lightning_rl.lightning_cli import _needs_every_algorithm

    config = tmp_path / "run.yaml"
    config.write_text("model: ppo_model.yaml\n")
    assert _needs_every_algorithm(["--config", str(config)]) is True


@pytest.mark.parametrize(
    ("args", "needs_all"),
    [
        (["--config", CARTPOLE], False),
        (["--model", "lightning_rl.algorithms.ppo.ppo.PPO", "--model.lr", "0.1"], False),
        (["--model.class_path", "PPO"], True),
        (["--model", '{"class_path": "PPO", "init_args": {"lr": 0.1}}'], True),
        (["--model", '{"class_path": "lightning_rl.algorithms.ppo.PPO"}'], False),
        (["--config", CARTPOLE, "--help"], True),
        (["--model.help", "PPO"], True),
        (["--trainer.max_epochs", "1"], True),  # no model named: LightningCLI's error lists them all
    ],
)
def test_every_algorithm_is_imported_only_when_a_bare_name_or_help_needs_it(args, needs_all):
    from lightning_rl.lightning_cli import _needs_every_algorithm

    assert _needs_every_algorithm(args) is needs_all


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


# -- a checkpoint written by `lightning-rl fit`, used everywhere ------------------------------
@pytest.fixture(scope="module")
def cli_fit(tmp_path_factory):
    """One real ``lightning-rl fit`` (in-process sampling, 2 iterations) and what it wrote."""
    root = tmp_path_factory.mktemp("cli_fit")
    proc = run_cli(
        [
            "fit",
            "--config",
            CARTPOLE,
            "--model.num_env_runners",
            "0",
            "--trainer.max_epochs",
            "2",
            *quiet(root),
        ],
        root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoint = next(root.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    return {"root": root, "stdout": proc.stdout, "checkpoint": checkpoint}


def test_fit_ends_with_why_it_stopped_and_where_its_files_are(cli_fit):
    lines = cli_fit["stdout"].strip().splitlines()
    summary = {
        line.split(":", 1)[0].removeprefix("[lightning-rl] "): line.split(":", 1)[1].strip()
        for line in lines[-4:]
    }
    assert summary["stopped"] == f"max_epochs=2 iterations reached ({2 * BATCH:,} env steps)", lines[-4:]
    run_dir = Path(summary["logs"])
    assert run_dir == cli_fit["root"] / "lightning_logs" / "version_0", "one predictable folder per run"
    assert (run_dir / "metrics.csv").is_file()
    assert Path(summary["config"]) == run_dir / "config.yaml" and Path(summary["config"]).is_file()
    assert Path(summary["checkpoint"]) == cli_fit["checkpoint"]


def test_a_cli_checkpoint_loads_through_every_entry_point(cli_fit):
    from lightning_rl import Policy, TrainingRun
    from lightning_rl.algorithms.dqn import DQN
    from lightning_rl.algorithms.ppo import PPO
    from lightning_rl.checkpoint_format import load_checkpoint
    from lightning_rl.errors import CheckpointError

    path = cli_fit["checkpoint"]
    saved = load_checkpoint(path)
    assert "_class_path" in saved["hyper_parameters"], "LightningCLI's bookkeeping keys are in the file"
    algo = PPO.load_from_checkpoint(path)
    config_lr = yaml.safe_load(Path(CARTPOLE).read_text())["model"]["init_args"]["lr"]
    assert algo.hparams.lr == config_lr and "_class_path" not in algo.hparams
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in algo.state_dict().items())
    with TrainingRun.from_checkpoint(path, evaluation_duration=2) as run:
        assert run.evaluate()["num_episodes"] == 2
    policy = Policy.from_checkpoint(path)
    assert policy.compute_single_action(np.zeros(4, dtype=np.float32)) in (0, 1)
    with pytest.raises(CheckpointError, match="is a PPO checkpoint, not DQN"):
        DQN.load_from_checkpoint(path)


def test_evaluate_and_test_run_episodes_of_a_cli_checkpoint(cli_fit, tmp_path):
    proc = run_cli(
        ["evaluate", "--ckpt_path", str(cli_fit["checkpoint"]), "--episodes", "2", "--json"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["num_episodes"] == 2
    # `test` alone: the checkpoint names its algorithm; the episodes are the evaluation's.
    proc = run_cli(
        [
            "test",
            "--ckpt_path",
            str(cli_fit["checkpoint"]),
            *quiet(tmp_path),
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluation/episode_return_mean=" in proc.stdout


def test_validating_a_checkpoint_with_another_algorithms_config_names_both(cli_fit, capsys, monkeypatch):
    from lightning_rl.cli import main

    monkeypatch.setattr(sys, "argv", ["lightning-rl"])
    dqn = str(REPO / "configs" / "dqn" / "cartpole.yaml")
    assert main(["validate", "--config", dqn, "--ckpt_path", str(cli_fit["checkpoint"])]) == 2
    assert "is a PPO checkpoint, not DQN" in capsys.readouterr().err


@pytest.mark.parametrize("stop", ["return", "env_steps"])
def test_the_summary_names_the_stopping_rule(stop, quiet_trainer_kwargs):
    import lightning.pytorch as pl

    from lightning_rl.algorithms.ppo import PPO
    from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
    from lightning_rl.lightning_cli import stop_reason

    callback = (
        StopOnReturn(1.0, metric="env_runners/episode_return_mean")
        if stop == "return"
        else StopOnEnvSteps(128)
    )
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1)
    trainer = pl.Trainer(
        **{**quiet_trainer_kwargs, "max_epochs": 5, "limit_val_batches": 0}, callbacks=[callback]
    )
    trainer.fit(algo)
    if stop == "return":
        expected = "target return 1 (env_runners/episode_return_mean) reached at 64 env steps (iteration 1)"
    else:
        expected = "env-step cap 128 reached: 128 env steps (iteration 2)"
    assert stop_reason(trainer) == expected
    if stop == "env_steps":  # what `fit` prints when Ctrl+C or a crash ends it instead
        assert (
            stop_reason(trainer, KeyboardInterrupt()) == "interrupted (Ctrl+C) in iteration 3 (128 env steps)"
        )
        failed = stop_reason(trainer, RuntimeError("boom"))
        assert failed == "failed in iteration 3 (128 env steps): RuntimeError"
