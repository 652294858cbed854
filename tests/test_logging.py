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


# Metrics whose values depend on the wall clock, not on the run's seed.
TIMED = {"time_total_s", "env_runners/env_steps_per_s", "env_runners/sample_env_steps_per_s"}


def logged_rows(tmp_path, name, monkeypatch=None):
    """A seeded 6-iteration PPO run's CSV rows (timed metrics left out) and callback metrics."""
    pl.seed_everything(4)  # the network's initial weights come from torch's global generator
    logger = pl.loggers.CSVLogger(tmp_path, name=name)
    algo = PPO(
        "CartPole-v1", train_batch_size=64, minibatch_size=32, num_epochs=2, evaluation_duration=2, seed=4
    )
    trainer = pl.Trainer(
        max_epochs=6,
        logger=logger,
        log_every_n_steps=1,
        check_val_every_n_epoch=2,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(algo)
    with open(f"{logger.log_dir}/metrics.csv") as handle:
        rows = [{k: v for k, v in row.items() if k not in TIMED} for row in csv.DictReader(handle)]
    callback = {k: float(v) for k, v in trainer.callback_metrics.items() if k not in TIMED}
    return rows, callback, set(trainer.progress_bar_metrics)


def test_the_per_iteration_logging_shortcut_logs_what_self_log_logs(tmp_path, monkeypatch):
    """``log_iteration_metric`` adds to Lightning's registered metrics directly after their first
    ``self.log``; the loggers, callbacks and the progress bar must see the same as with
    ``self.log`` every time (forced here by making the shortcut find no registered metric)."""
    from lightning_rl.algorithms import iteration_logging

    found = []
    registered_metric = iteration_logging._registered_metric

    def recording(*args):
        found.append(registered_metric(*args))
        return found[-1]

    monkeypatch.setattr(iteration_logging, "_registered_metric", recording)
    fast = logged_rows(tmp_path, "fast")
    assert sum(metric is not None for metric in found) > 100, "the shortcut ran"
    monkeypatch.undo()
    monkeypatch.setattr(iteration_logging, "_registered_metric", lambda *args: None)
    plain = logged_rows(tmp_path, "plain")
    assert fast[0] == plain[0]
    assert len(fast[0]) >= 6 and any(row.get("evaluation/episode_return_mean") for row in fast[0])
    assert fast[1] == plain[1] and KEYS - {"env_runners/env_steps_per_s"} <= set(fast[1])
    assert fast[2] == plain[2]
