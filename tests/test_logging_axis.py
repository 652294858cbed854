"""TensorBoard and wandb plot RL metrics against env steps sampled, not optimizer steps.

Both read back what the real loggers wrote: TensorBoard's event files, and wandb's offline
run file (a LevelDB-style log of protobuf records, read with wandb's own protobuf classes).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from lightning_rl.algorithms.ppo import PPO

BATCH = 64


def tiny_ppo() -> PPO:
    # 4 minibatches x 2 epochs = 8 optimizer steps per iteration, so optimizer steps and env
    # steps (64 per iteration) can never be confused.
    return PPO("CartPole-v1", train_batch_size=BATCH, minibatch_size=16, num_epochs=2, evaluation_duration=1)


def fit(logger, tmp_path) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=3,
        check_val_every_n_epoch=1,
        logger=logger,
        enable_progress_bar=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(tiny_ppo())
    assert trainer.global_step == 3 * 8
    return trainer


def test_tensorboard_steps_are_env_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=tmp_path, name="tb")
    fit(logger, tmp_path)
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    env_steps = events.Scalars("num_env_steps_sampled_lifetime")
    assert [e.step for e in env_steps] == [BATCH, 2 * BATCH, 3 * BATCH]
    assert all(e.step == e.value for e in env_steps), "x = the env steps logged in the same row"
    for tag in ("env_runners/episode_return_mean", "learners/default_policy/total_loss"):
        assert [e.step for e in events.Scalars(tag)] == [BATCH, 2 * BATCH, 3 * BATCH], tag
    # Evaluation after iteration i is plotted at the env steps sampled by then.
    assert [e.step for e in events.Scalars("evaluation/episode_return_mean")] == [BATCH, 2 * BATCH, 3 * BATCH]


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``run-*.wandb`` file (LevelDB log format: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, records, partial = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind in (2, 3):  # first, middle
            partial = (b"" if kind == 2 else partial) + chunk
        elif kind == 4:  # last
            records.append(partial + chunk)
    parsed = []
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def test_wandb_x_axis_is_env_steps(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(project="lightning-rl-tests", save_dir=str(tmp_path), offline=True)
    fit(logger, tmp_path)
    run_id = logger.experiment.id
    logger.experiment.finish()
    path = next(tmp_path.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))
    records = wandb_records(path)
    # Lightning's WandbLogger plots every metric against its step key ...
    step_key = "trainer/global_step"
    assert any(
        r.WhichOneof("record_type") == "metric"
        and r.metric.glob_name == "*"
        and r.metric.step_metric == step_key
        for r in records
    )
    # ... and that key holds the env steps sampled, in training and evaluation rows alike.
    rows = [
        {"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    training = [row for row in rows if "env_runners/episode_return_mean" in row]
    evaluation = [row for row in rows if "evaluation/episode_return_mean" in row]
    assert [row[step_key] for row in training] == [BATCH, 2 * BATCH, 3 * BATCH]
    assert all(row[step_key] == row["num_env_steps_sampled_lifetime"] for row in training)
    assert [row[step_key] for row in evaluation] == [BATCH, 2 * BATCH, 3 * BATCH]
