"""Resuming runs: killed and interrupted processes, atomic checkpoint writes, RNG streams, bad files."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.atomic_checkpoint_io import AtomicCheckpointIO
from lightning_rl.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "ppo" / "cartpole.yaml")
# Env steps per PPO iteration of the shipped config.
BATCH = yaml.safe_load(Path(CONFIG).read_text())["model"]["init_args"]["train_batch_size"]


def cli(args, cwd):
    return [
        sys.executable,
        "-m",
        "lightning_rl.cli",
        *args,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(cwd),
        "--trainer.logger.init_args.save_dir",
        str(cwd),
    ]


def wait_for_checkpoint(
    root: Path, min_epoch: int, proc: subprocess.Popen | None, timeout: float = 240
) -> Path:
    """The newest ``epoch=N.ckpt`` with ``N >= min_epoch`` once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for path in root.glob("lightning_logs/version_*/checkpoints/epoch=*.ckpt"):
            match = re.search(r"epoch=(\d+)", path.name)
            if match and int(match.group(1)) >= min_epoch:
                found[int(match.group(1))] = path
        if found:
            return found[max(found)]
        assert proc is None or proc.poll() is None, "the run ended before the checkpoint was written"
        time.sleep(0.1)
    raise AssertionError("no checkpoint appeared")


def metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.learning
def test_a_killed_run_resumes_its_counters_and_reaches_the_target(tmp_path):
    first = subprocess.Popen(
        cli(["fit", "--config", CONFIG, "--model.num_env_runners", "0"], tmp_path),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_checkpoint(tmp_path, min_epoch=8, proc=first)
    first.kill()  # SIGKILL: no chance to clean up
    first.wait()
    # The file seen above may have been replaced by a newer one before the kill (the config
    # keeps only the latest); writes are atomic, so whatever is left now is whole.
    checkpoint = wait_for_checkpoint(tmp_path, min_epoch=8, proc=None)
    saved = torch.load(checkpoint, weights_only=True)
    steps_at_checkpoint = saved["OnPolicyDataModule"]["num_env_steps_sampled_lifetime"]
    assert steps_at_checkpoint == (saved["epoch"] + 1) * BATCH

    resumed = subprocess.run(
        cli(
            ["fit", "--config", CONFIG, "--model.num_env_runners", "0", "--ckpt_path", str(checkpoint)],
            tmp_path,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run_dir = sorted(tmp_path.glob("lightning_logs/version_*"))[-1]
    steps = [
        float(r["num_env_steps_sampled_lifetime"])
        for r in metrics_rows(run_dir)
        if r.get("num_env_steps_sampled_lifetime")
    ]
    assert steps[0] == steps_at_checkpoint + BATCH, "the env-step counter continued from the checkpoint"
    match = re.search(r"evaluation/episode_return_mean=([\d.]+)", resumed.stdout)
    assert match and float(match.group(1)) >= 475, resumed.stdout[-2000:]


def test_sigterm_saves_a_checkpoint_before_stopping(tmp_path):
    proc = subprocess.Popen(
        cli(
            [
                "fit",
                "--config",
                CONFIG,
                "--model.num_env_runners",
                "0",
                "--trainer.max_epochs",
                "10000",
                "--trainer.callbacks",
                "[]",
            ],
            tmp_path,
        ),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_checkpoint(tmp_path, min_epoch=3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    interrupted = next(tmp_path.glob("lightning_logs/version_*/checkpoints/interrupted.ckpt"), None)
    assert interrupted is not None, err[-3000:]
    assert "checkpoint saved to" in out
    saved = torch.load(interrupted, weights_only=True)
    assert saved["epoch"] >= 3 and "rng_states" in saved["lightning_rl"]


def test_a_truncated_checkpoint_is_one_clear_error_from_the_cli(tmp_path):
    proc = subprocess.run(
        cli(
            ["fit", "--config", CONFIG, "--model.num_env_runners", "0", "--trainer.max_epochs", "1"], tmp_path
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    good = next(tmp_path.glob("lightning_logs/version_*/checkpoints/*.ckpt"))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    proc = subprocess.run(
        cli(
            ["fit", "--config", CONFIG, "--model.num_env_runners", "0", "--ckpt_path", str(truncated)],
            tmp_path,
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "truncated.ckpt' is corrupt or truncated" in proc.stderr


def test_an_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "model.ckpt"
    io.save_checkpoint({"weights": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception, match=r"pickle|lambda|Can.t"):
        io.save_checkpoint({"weights": torch.zeros(3), "bad": lambda: None}, path)
    assert path.read_bytes() == before, "the good checkpoint was not touched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"], "no partial file is left behind"
    assert torch.equal(io.load_checkpoint(path)["weights"], torch.ones(3))


def test_rng_streams_and_incompatible_checkpoints(tmp_path):
    kwargs = {
        "default_root_dir": tmp_path,
        "logger": False,
        "enable_progress_bar": False,
        "limit_val_batches": 0,
        "plugins": [AtomicCheckpointIO()],
    }
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    trainer = pl.Trainer(max_epochs=1, **kwargs)
    trainer.fit(algo)
    path = tmp_path / "one.ckpt"
    trainer.save_checkpoint(path)
    expected = (torch.rand(3), torch.randperm(10, generator=algo.minibatch_generator))
    other = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    other.on_load_checkpoint(torch.load(path, weights_only=True))
    assert torch.equal(torch.rand(3), expected[0]), "the global torch stream resumes"
    assert torch.equal(torch.randperm(10, generator=other.minibatch_generator), expected[1])
    wider = PPO("CartPole-v1", model_config={"fcnet_hiddens": [128, 128]})
    with pytest.raises(CheckpointError, match=r"do not fit this algorithm.*shape mismatches"):
        pl.Trainer(max_epochs=2, **kwargs).fit(wider, ckpt_path=path)
