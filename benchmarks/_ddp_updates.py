"""Helper of scaling.py: time PPO learner updates with N DDP ranks (DDP re-runs this script).

python benchmarks/_ddp_updates.py --devices N --out result.json
python benchmarks/_ddp_updates.py --accelerator gpu --strategy ddp --out result.json

``--strategy ddp`` with one device still runs DDP (its process group, NCCL on a GPU), which a
one-GPU machine can check; the default picks DDP only for several devices.
"""

from __future__ import annotations

import argparse
import json
import time

import lightning.pytorch as pl
import torch

from lightning_rl.algorithms.ppo import PPO


class UpdateTimer(pl.Callback):
    """Wall time spent inside training steps (forward, backward, all-reduce, optimizer step).

    PPO runs all of an iteration's minibatch updates inside one training step (manual
    optimisation), so ``updates`` counts optimizer steps (Lightning's ``global_step``), not
    training steps.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.updates = 0
        self._start = 0.0
        self._steps_at_start = 0
        self.device = ""

    def on_train_start(self, trainer, module) -> None:
        self.device = str(module.device)

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()
        self._steps_at_start = trainer.global_step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        self.seconds += time.perf_counter() - self._start
        self.updates += trainer.global_step - self._steps_at_start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--strategy", default=None, help="default: ddp for several devices, else auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    algo = PPO(
        "CartPole-v1", num_envs_per_env_runner=4, train_batch_size=1024, minibatch_size=256, num_epochs=10
    )
    timer = UpdateTimer()
    trainer = pl.Trainer(
        max_epochs=args.iterations,
        devices=args.devices,
        accelerator=args.accelerator,
        strategy=args.strategy or ("ddp" if args.devices > 1 else "auto"),
        limit_val_batches=0,
        callbacks=[timer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(algo)
    if trainer.is_global_zero:
        with open(args.out, "w") as handle:
            json.dump(
                {
                    "ranks": args.devices,
                    "device": timer.device,
                    "strategy": type(trainer.strategy).__name__,
                    "process_group_backend": getattr(trainer.strategy, "process_group_backend", None),
                    "updates": timer.updates,
                    "update_seconds": timer.seconds,
                    "learner_updates_per_s": timer.updates / timer.seconds,
                    # every rank's update consumes its own minibatch of 256 samples
                    "learner_samples_per_s": timer.updates * 256 * args.devices / timer.seconds,
                },
                handle,
            )


if __name__ == "__main__":
    main()
