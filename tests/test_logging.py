"""Metrics reach Lightning's loggers: CSV (default of the fluent config), TensorBoard, wandb offline."""

from __future__ import annotations

import csv

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from lightning_rl.algorithms.ppo import PPO, PPOConfig

KEYS = {
    "env_runners/episode_return_mean",
    "env_runners/episode_len_mean",
    "env_runners/num_env_steps_sampled",
    "env_runners/env_steps_per_s",
    "num_env_steps_sampled_lifetime",
    "learners/default_policy/policy_loss",
    "learners/default_policy/vf_loss",
    "evaluation/episode_return_mean",
}


def small_ppo():
    return PPO(
        "CartPole-v1",
        num_envs_per_env_runner=4,
        train_batch_size=128,
        minibatch_size=64,
        num_epochs=2,
        evaluation_duration=2,
    )


def test_the_fluent_config_logs_to_csv_by_default(tmp_path):
    run = (
        PPOConfig(defaults="native")
        .environment("CartPole-v1")
        .training(train_batch_size=64, minibatch_size=64, num_epochs=1)
        .evaluation(evaluation_interval=1, evaluation_duration=2)
        .trainer(default_root_dir=str(tmp_path))
        .build_algo()
    )
    for _ in range(3):
        run.train()
    run.stop()
    metrics = next(tmp_path.glob("training_run/version_*/metrics.csv"))
    rows = list(csv.DictReader(metrics.open()))
    assert set(rows[0]) >= KEYS
    assert [
        float(r["num_env_steps_sampled_lifetime"]) for r in rows if r["num_env_steps_sampled_lifetime"]
    ] == [
        64.0,
        128.0,
        192.0,
    ]


def test_tensorboard_receives_the_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=tmp_path, name="tb")
    trainer = pl.Trainer(max_epochs=2, logger=logger, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(small_ppo())
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert set(events.Tags()["scalars"]) >= KEYS


def test_wandb_offline_run_records_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(project="lightning-rl-tests", save_dir=str(tmp_path), offline=True)
    trainer = pl.Trainer(max_epochs=2, logger=logger, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(small_ppo())
    summary = dict(logger.experiment.summary)
    run_id = logger.experiment.id
    logger.experiment.finish()
    assert set(summary) >= KEYS
    assert summary["num_env_steps_sampled_lifetime"] == 256
    records = list(tmp_path.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))
    assert records and records[0].stat().st_size > 0, "wandb wrote no offline run to sync later"
