"""Small training helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl


def quiet_trainer_kwargs_for(root: str | Path) -> dict[str, Any]:
    """Trainer kwargs for tests: no progress bar, summary, logger or checkpoints; files under ``root``."""
    return {
        "default_root_dir": str(root),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
    }


def fit_then_evaluate(algo: Any, iterations: int, root: str | Path) -> float:
    """Train ``iterations`` iterations, evaluate once at the end; the evaluation mean return."""
    trainer = pl.Trainer(
        max_epochs=iterations, check_val_every_n_epoch=iterations, **quiet_trainer_kwargs_for(root)
    )
    trainer.fit(algo)
    return float(trainer.callback_metrics["evaluation/episode_return_mean"])
