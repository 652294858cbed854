"""Recorded data sets shared by the offline tests (built once per test session, on demand).

The CartPole expert is PPO trained with ``configs/ppo/cartpole.yaml`` (in-process sampling)
until its deterministic evaluation reaches 475, as the issue asks; its episodes are recorded
through the same ``record_episodes`` path users call.
"""

from __future__ import annotations

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
    """``{"path", "expert", "expert_return", "num_steps"}``: 20k exploring steps of a 475+ PPO,
    recorded once per test session (test modules wrap this in a fixture)."""
    if "cartpole" not in _CACHE:
        expert, expert_return = train_cartpole_expert()
        path = tmp_path_factory.mktemp("cartpole_expert")
        record_episodes(expert, path, 20_000, seed=123)
        _CACHE["cartpole"] = {
            "path": str(path),
            "expert": expert,
            "expert_return": expert_return,
            "num_steps": 20_000,
        }
    return _CACHE["cartpole"]
