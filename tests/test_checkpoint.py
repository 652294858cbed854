"""Checkpoints: save/restore round trips, plain-data format, version and corruption errors."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from lightning_rl import checkpoint_format as ckpt
from lightning_rl.algorithms.ppo import PPO, PPOConfig
from lightning_rl.callbacks import IterationCheckpoint, StopOnEnvSteps
from lightning_rl.errors import CheckpointError
from lightning_rl.training_run import TrainingRun


def small_config(tmp_path):
    return (
        PPOConfig(defaults="native")
        .environment("CartPole-v1")
        .env_runners(num_envs_per_env_runner=2, env_to_module_connector=["MeanStdFilter"])
        .training(train_batch_size=64, minibatch_size=32, num_epochs=2)
        .debugging(seed=3)
        .trainer(default_root_dir=str(tmp_path))
    )


def test_save_and_from_checkpoint_round_trip_weights_filters_and_counters(tmp_path):
    run = small_config(tmp_path).build_algo()
    run.train()
    run.train()
    path = run.save(tmp_path / "ckpt")
    weights = {k: v.clone() for k, v in run.algorithm.state_dict().items()}
    filter_state = run.algorithm.connector_state["default_policy"][0]
    assert filter_state["count"] > 0
    run.stop()

    restored = TrainingRun.from_checkpoint(path, trainer_kwargs={"default_root_dir": str(tmp_path)})
    for key, value in restored.algorithm.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert torch.equal(restored.algorithm.connector_state["default_policy"][0]["mean"], filter_state["mean"])
    assert restored.algorithm.hparams.env_to_module_connector == [{"name": "MeanStdFilter", "config": {}}]
    result = restored.train()
    assert result["training_iteration"] == 3, "the loop counters continue"
    assert result["num_env_steps_sampled_lifetime"] == 3 * 64, "the sampling counters continue"
    restored.stop()


def test_checkpoints_hold_plain_data_loadable_with_weights_only(tmp_path):
    run = small_config(tmp_path).build_algo()
    run.train()
    path = run.save(tmp_path / "a.ckpt")
    run.stop()
    checkpoint = torch.load(path, weights_only=True)
    section = checkpoint["lightning_rl"]
    assert section["format_version"] == ckpt.FORMAT_VERSION
    assert section["package_version"]
    assert section["algorithm"] == "PPO"
    assert "policies.default_policy.policy_net.head.weight" in checkpoint["state_dict"]


def test_future_format_and_corrupt_files_give_clear_errors(tmp_path):
    run = small_config(tmp_path).build_algo()
    run.train()
    path = run.save(tmp_path / "good.ckpt")
    run.stop()
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["lightning_rl"]["format_version"] = ckpt.FORMAT_VERSION + 1
    future = tmp_path / "future.ckpt"
    torch.save(checkpoint, future)
    with pytest.raises(CheckpointError, match="Upgrade lightning-rl"):
        TrainingRun.from_checkpoint(future)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(Path(path).read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        TrainingRun.from_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        TrainingRun.from_checkpoint(tmp_path / "missing.ckpt")


def test_plain_trainer_resumes_from_ckpt_path(tmp_path):
    kwargs = {
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "logger": False,
        "limit_val_batches": 0,
    }
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    trainer = pl.Trainer(max_epochs=2, **kwargs)
    trainer.fit(algo)
    path = tmp_path / "two.ckpt"
    trainer.save_checkpoint(path)
    resumed = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    trainer = pl.Trainer(max_epochs=4, **kwargs)
    trainer.fit(resumed, ckpt_path=path)
    assert trainer.current_epoch == 4
    assert resumed.num_env_steps_sampled_lifetime == 4 * 64


def saved_epochs(directory: Path) -> list[int]:
    return sorted(torch.load(path, weights_only=True)["epoch"] for path in directory.glob("*.ckpt"))


@pytest.mark.parametrize(
    ("max_epochs", "stop_at_env_steps", "expected"),
    [(23, None, [9, 19, 22]), (100, 5 * 64, [4]), (20, None, [9, 19])],
    ids=["max_epochs", "stop_callback", "last_is_periodic"],
)
def test_iteration_checkpoint_saves_every_n_iterations_and_the_last(
    tmp_path, max_epochs, stop_at_env_steps, expected
):
    """Every 10th iteration and the one the run stops after, each once, named like Lightning
    names an epoch-end save; the last one resumes as the next iteration."""
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    saver = IterationCheckpoint(dirpath=tmp_path / "ckpts", save_top_k=-1)
    stops = [StopOnEnvSteps(stop_at_env_steps)] if stop_at_env_steps else []
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        callbacks=[*stops, saver],
        logger=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    trainer.fit(algo)
    assert saved_epochs(tmp_path / "ckpts") == expected
    # Lightning names an epoch-end save after its epoch index; "step" counts env steps here.
    assert saver.best_model_path.endswith(f"epoch={expected[-1]}-step={(expected[-1] + 1) * 64}.ckpt")
    restored = TrainingRun.from_checkpoint(
        saver.best_model_path, trainer_kwargs={"default_root_dir": str(tmp_path)}
    )
    assert restored.iteration == expected[-1] + 1
    result = restored.train()
    assert result["num_env_steps_sampled_lifetime"] == (expected[-1] + 2) * 64
    restored.stop()


def test_iteration_checkpoint_keeps_only_the_newest_by_default(tmp_path):
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    saver = IterationCheckpoint(dirpath=tmp_path / "ckpts", every_n_epochs=2)
    pl.Trainer(
        max_epochs=5, callbacks=[saver], logger=False, enable_progress_bar=False, limit_val_batches=0
    ).fit(algo)
    assert saved_epochs(tmp_path / "ckpts") == [4]


def test_a_checkpoint_written_at_an_iterations_end_restores_its_count(tmp_path):
    """ModelCheckpoint(save_on_train_epoch_end=True), as in the shipped configs, saves before
    Lightning counts the epoch completed; the restored run must still continue after it."""
    algo = PPO("CartPole-v1", train_batch_size=64, minibatch_size=64, num_epochs=1, seed=0)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpts", save_on_train_epoch_end=True)
    pl.Trainer(
        max_epochs=2, callbacks=[saver], logger=False, enable_progress_bar=False, limit_val_batches=0
    ).fit(algo)
    path = saver.last_model_path or saver.best_model_path
    assert torch.load(path, weights_only=True)["epoch"] == 1, "Lightning's own count lags by one"
    restored = TrainingRun.from_checkpoint(path, trainer_kwargs={"default_root_dir": str(tmp_path)})
    assert restored.iteration == 2
    result = restored.train()
    assert result["training_iteration"] == 3
    assert result["num_env_steps_sampled_lifetime"] == 3 * 64, "the third iteration sampled"
    restored.stop()
