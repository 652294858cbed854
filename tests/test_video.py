"""Evaluation videos (gymnasium RecordVideo) logged to TensorBoard and wandb; ``lightning-rl evaluate``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import lightning.pytorch as pl
import pytest
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.cli import main
from lightning_rl.commands import evaluate_checkpoint
from lightning_rl.errors import EnvError
from lightning_rl.video import RecordEvaluationVideos
from tests.envs import CountingEnv

# Short episodes keep rendering and encoding cheap.
SHORT_CARTPOLE = {"max_episode_steps": 40}


def test_evaluation_videos_are_recorded_and_logged_to_tensorboard_and_wandb(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("WANDB_MODE", "offline")
    tensorboard = TensorBoardLogger(save_dir=tmp_path, name="tb")
    wandb = WandbLogger(project="lightning-rl-tests", save_dir=str(tmp_path), offline=True)
    videos = RecordEvaluationVideos(tmp_path / "videos")
    algo = PPO("CartPole-v1", SHORT_CARTPOLE, evaluation_duration=4, seed=0)
    trainer = pl.Trainer(
        logger=[tensorboard, wandb], callbacks=[videos], enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.validate(algo)
    trainer.validate(algo)
    run_dir = wandb.experiment.dir
    wandb.experiment.finish()

    assert len(videos.videos) == 2, "one video per evaluation: the first episode of env copy 0"
    assert all(p.stat().st_size > 1000 and p.suffix == ".mp4" for p in videos.videos)
    events = EventAccumulator(tensorboard.log_dir)
    events.Reload()
    assert "evaluation/video" in events.Tags()["images"]
    assert len(list((tmp_path / "wandb").glob("offline-run-*/files/media/videos/evaluation/*.mp4"))) == 2, (
        run_dir
    )


def test_recording_needs_an_env_that_renders_rgb_arrays(tmp_path):
    algo = PPO(CountingEnv, evaluation_duration=1)
    trainer = pl.Trainer(
        logger=False,
        callbacks=[RecordEvaluationVideos(tmp_path)],
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(EnvError, match="render_mode='rgb_array'"):
        trainer.validate(algo)


@pytest.fixture(scope="module")
def cartpole_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    algo = PPO("CartPole-v1", {"max_episode_steps": 100}, train_batch_size=128, minibatch_size=64, seed=3)
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, limit_val_batches=0, default_root_dir=root
    )
    trainer.fit(algo)
    trainer.save_checkpoint(root / "ppo.ckpt")
    return root / "ppo.ckpt"


def test_evaluate_command_prints_mean_and_std_and_records_videos(cartpole_checkpoint, tmp_path):
    executable = shutil.which("lightning-rl")
    cmd = [executable] if executable else [sys.executable, "-m", "lightning_rl.cli"]
    args = ["evaluate", "--ckpt_path", str(cartpole_checkpoint), "--episodes", "6"]
    proc = subprocess.run(
        [*cmd, *args, "--video_dir", str(tmp_path / "videos")], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "episodes=6 episode_return_mean=" in proc.stdout and "episode_return_std=" in proc.stdout
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1 and f"video: {videos[0]}" in proc.stdout


def test_evaluation_on_ray_runners_records_videos_in_the_actor_and_matches_local(
    cartpole_checkpoint, tmp_path, ray_session, capsys
):
    args = ["evaluate", "--ckpt_path", str(cartpole_checkpoint), "--episodes", "6", "--json"]
    assert main([*args, "--num_env_runners", "1", "--video_dir", str(tmp_path / "videos")]) == 0
    remote = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    local = evaluate_checkpoint(str(cartpole_checkpoint), episodes=6, num_env_runners=0)
    assert remote["num_episodes"] == 6 and remote["episode_return_std"] > 0
    assert remote["episode_return_mean"] == pytest.approx(local["episode_return_mean"]), (
        "same seeds, same episodes"
    )
    assert remote["episode_return_std"] == pytest.approx(local["episode_return_std"])
    assert len(remote["videos"]) == 1 and "runner10001" in remote["videos"][0], "written by the Ray actor"
