"""Recorded data sets shared by the offline tests (built once per test session, on demand).

The CartPole expert is PPO trained with ``configs/ppo/cartpole.yaml`` (in-process sampling)
until its deterministic evaluation reaches 475, as the issue asks; its episodes are recorded
through the same ``record_episodes`` path users call.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnReturn
from lightning_rl.offline.record import record_episodes

REPO = Path(__file__).resolve().parents[1]
_CACHE: dict[str, Any] = {}

QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def train_cartpole_expert(seed: int = 0, target: float = 475.0) -> tuple[PPO, float]:
    """PPO with the repository's CartPole config, in-process, until evaluation reaches ``target``."""
    config = yaml.safe_load((REPO / "configs" / "ppo" / "cartpole.yaml").read_text())
    model_args = {**config["model"]["init_args"], "num_env_runners": 0, "seed": seed}
    pl.seed_everything(seed, verbose=False)
    expert = PPO(**model_args)
    stop = StopOnReturn(target)
    trainer = pl.Trainer(max_epochs=400, check_val_every_n_epoch=5, callbacks=[stop], **QUIET)
    trainer.fit(expert)
    assert stop.reached_at is not None, "the PPO expert did not reach its target"
    return expert, float(trainer.callback_metrics["evaluation/episode_return_mean"])


def cartpole_expert_data(tmp_path_factory) -> dict[str, Any]:
    """``{"path", "expert_return", "num_steps"}``: 20k exploring steps of a 475+ PPO, recorded
    once per test run (test modules wrap this in a fixture).

    The pytest-xdist workers share it: the first to ask trains and records into the run's
    common temporary folder under a file lock, the others wait on the lock and read the same
    files (BC, MARWIL and CQL tests often land on different workers; the expert costs ~20 s).
    """
    if "cartpole" in _CACHE:
        return _CACHE["cartpole"]
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder above each worker's own
    root = shared / "cartpole_expert"
    root.mkdir(exist_ok=True)
    summary = root / "summary.json"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not summary.exists():
            shutil.rmtree(root / "data", ignore_errors=True)  # what a failed attempt left
            expert, expert_return = train_cartpole_expert()
            record_episodes(expert, root / "data", 20_000, seed=123)
            summary.write_text(json.dumps({"expert_return": expert_return, "num_steps": 20_000}))
    _CACHE["cartpole"] = {"path": str(root / "data"), **json.loads(summary.read_text())}
    return _CACHE["cartpole"]
