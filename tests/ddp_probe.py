"""A callback for DDP tests: each rank writes what it learned and what it sampled.

Used from a subprocess (``--trainer.callbacks+=tests.ddp_probe.RankReport``); the output
directory comes from ``LIGHTNING_RL_TEST_OUT``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import lightning.pytorch as pl
import torch


class RankReport(pl.Callback):
    def __init__(self) -> None:
        self.out = Path(os.environ["LIGHTNING_RL_TEST_OUT"])
        self.first_observations: list | None = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.first_observations is None:
            self.first_observations = batch["observation"][:16].tolist()

    def on_train_end(self, trainer, module) -> None:
        params = torch.cat([p.detach().flatten().cpu() for p in module.parameters()])
        evaluation = trainer.callback_metrics.get("evaluation/episode_return_mean")
        report = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "params_sha256": hashlib.sha256(params.numpy().tobytes()).hexdigest(),
            "first_observations": self.first_observations,
            "num_env_steps_sampled_lifetime": module.num_env_steps_sampled_lifetime,
            "iterations": trainer.current_epoch,
            "evaluation_return": None if evaluation is None else float(evaluation),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))
