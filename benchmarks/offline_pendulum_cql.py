"""Continuous CQL on Pendulum-v1 from a mix of random and SAC episodes.

    python benchmarks/offline_pendulum_cql.py --seed 0 [--random-steps 20000] [--sac-steps 40000]

1. ``record_episodes`` records ``--random-steps`` env steps of an untrained SAC actor (a
   squashed Gaussian around 0 with unit spread: close to uniform random actions);
2. SAC (``configs/sac/pendulum.yaml``) trains until its evaluation mean reaches -200, and
   ``--sac-steps`` env steps of it (exploring) are recorded next to the random ones;
3. CQL (``configs/cql/pendulum.yaml``) trains on all of them until its evaluation mean over
   10 episodes reaches ``--target`` (or ``--max-iterations`` of 500 updates).

The last line is one JSON object (``cql_eval_return``, ``cql_best_eval_return``,
``cql_seconds``, ``sac_eval_return``, the data's size and mean episode return). The
recorded data is deleted at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import pyarrow.parquet as pq
import yaml
from _common import emit, peak_rss_mb, seconds_since_start

from lightning_rl.algorithms.cql import CQL
from lightning_rl.algorithms.sac import SAC
from lightning_rl.callbacks import StopOnEnvSteps, StopOnReturn
from lightning_rl.offline import record_episodes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


class BestReturn(pl.Callback):
    def __init__(self) -> None:
        self.returns: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.returns.append(float(trainer.callback_metrics["evaluation/episode_return_mean"]))


def model_args(name: str) -> dict:
    return dict(yaml.safe_load((CONFIGS / name).read_text())["model"]["init_args"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--random-steps", type=int, default=20_000)
    parser.add_argument("--sac-steps", type=int, default=40_000)
    parser.add_argument("--target", type=float, default=-200.0)
    parser.add_argument("--max-iterations", type=int, default=20)
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="offline_pendulum_"))
    try:
        pl.seed_everything(args.seed, verbose=False)
        sac = SAC(**{**model_args("sac/pendulum.yaml"), "seed": args.seed})
        record_episodes(sac, data, args.random_steps, seed=args.seed + 1)
        start = time.perf_counter()
        stop = StopOnReturn(-200.0)
        trainer = pl.Trainer(
            max_epochs=1000, check_val_every_n_epoch=4, callbacks=[stop, StopOnEnvSteps(30_000)], **QUIET
        )
        trainer.fit(sac)
        sac_seconds = time.perf_counter() - start
        sac_return = float(trainer.callback_metrics["evaluation/episode_return_mean"])
        record_episodes(sac, data, args.sac_steps, seed=args.seed + 2)
        table = pq.read_table(
            sorted(str(p) for p in data.glob("*.parquet")), columns=["episode_id", "reward"]
        )
        frame = table.to_pandas()

        pl.seed_everything(args.seed, verbose=False)
        cql = CQL(**{**model_args("cql/pendulum.yaml"), "input_": str(data), "seed": args.seed})
        best = BestReturn()
        trainer = pl.Trainer(
            max_epochs=args.max_iterations, callbacks=[StopOnReturn(args.target), best], **QUIET
        )
        start = time.perf_counter()
        trainer.fit(cql)
        cql_seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(data, ignore_errors=True)
    emit(
        {
            "seed": args.seed,
            "sac_eval_return": sac_return,
            "sac_env_steps": sac.num_env_steps_sampled_lifetime,
            "sac_seconds": round(sac_seconds, 3),
            "recorded_env_steps": len(frame),
            "recorded_random_steps": args.random_steps,
            "recorded_sac_steps": args.sac_steps,
            "recorded_episode_return_mean": round(float(frame.groupby("episode_id").reward.sum().mean()), 1),
            "cql_eval_return": best.returns[-1],
            "cql_best_eval_return": max(best.returns),
            "cql_eval_returns": [round(r, 1) for r in best.returns],
            "cql_iterations": trainer.current_epoch,
            "cql_updates": cql.global_step,
            "cql_seconds": round(cql_seconds, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "total_seconds": round(seconds_since_start(), 3),
        }
    )


if __name__ == "__main__":
    main()
