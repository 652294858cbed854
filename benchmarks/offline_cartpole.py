"""Record a PPO expert on CartPole-v1, then clone it with BC and MARWIL.

    python benchmarks/offline_cartpole.py --seed 0 [--num-steps 50000]

1. PPO with ``configs/ppo/cartpole.yaml`` (in-process sampling) trains until its
   deterministic evaluation mean over 20 episodes reaches 475;
2. ``record_episodes`` records ``--num-steps`` env steps of it (exploring, as it acted in
   training) to Parquet in a temporary directory;
3. BC (``configs/bc/cartpole.yaml``) and MARWIL (``configs/marwil/cartpole.yaml``) train on
   them until their evaluation mean over 20 episodes reaches 475 (or ``--max-iterations``).

The last line is one JSON object: ``expert_eval_return``, ``bc_eval_return``,
``marwil_eval_return``, ``bc_seconds``, ``marwil_seconds`` (wall time of each ``fit``,
evaluation included) and the figures behind them. The recorded data is deleted at the end.
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

from lightning_rl.algorithms.bc import BC
from lightning_rl.algorithms.marwil import MARWIL
from lightning_rl.algorithms.ppo import PPO
from lightning_rl.callbacks import StopOnReturn
from lightning_rl.offline import record_episodes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUIET = dict(
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)


def model_args(name: str) -> dict:
    return dict(yaml.safe_load((CONFIGS / name).read_text())["model"]["init_args"])


def fit_until(algo, target: float, max_epochs: int, check_every: int = 1) -> tuple[float, int, float]:
    """(last evaluation return, iterations, seconds) of training ``algo`` until ``target``."""
    stop = StopOnReturn(target)
    trainer = pl.Trainer(
        max_epochs=max_epochs, check_val_every_n_epoch=check_every, callbacks=[stop], **QUIET
    )
    start = time.perf_counter()
    trainer.fit(algo)
    seconds = time.perf_counter() - start
    return float(trainer.callback_metrics["evaluation/episode_return_mean"]), trainer.current_epoch, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-steps", type=int, default=50_000)
    parser.add_argument("--target", type=float, default=475.0)
    parser.add_argument("--max-iterations", type=int, default=30)
    args = parser.parse_args()

    pl.seed_everything(args.seed, verbose=False)
    expert = PPO(**{**model_args("ppo/cartpole.yaml"), "num_env_runners": 0, "seed": args.seed})
    expert_return, expert_iterations, expert_seconds = fit_until(expert, args.target, 400, check_every=5)
    data = Path(tempfile.mkdtemp(prefix="offline_cartpole_"))
    try:
        start = time.perf_counter()
        files = record_episodes(expert, data, args.num_steps, seed=args.seed + 1)
        record_seconds = time.perf_counter() - start
        table = pq.read_table(files, columns=["episode_id", "reward"]).to_pandas()
        data_return = float(table.groupby("episode_id").reward.sum().mean())

        results = {}
        for name, cls, config in (("bc", BC, "bc/cartpole.yaml"), ("marwil", MARWIL, "marwil/cartpole.yaml")):
            pl.seed_everything(args.seed, verbose=False)
            algo = cls(**{**model_args(config), "input_": str(data), "seed": args.seed})
            eval_return, iterations, seconds = fit_until(algo, args.target, args.max_iterations)
            results[name] = (eval_return, iterations, seconds, algo.num_env_steps_trained_lifetime)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    emit(
        {
            "seed": args.seed,
            "expert_eval_return": expert_return,
            "expert_iterations": expert_iterations,
            "expert_env_steps": expert.num_env_steps_sampled_lifetime,
            "expert_seconds": round(expert_seconds, 3),
            "recorded_env_steps": len(table),
            "recorded_files": len(files),
            "recorded_episode_return_mean": round(data_return, 2),
            "record_seconds": round(record_seconds, 3),
            "bc_eval_return": results["bc"][0],
            "bc_iterations": results["bc"][1],
            "bc_seconds": round(results["bc"][2], 3),
            "bc_rows_trained": results["bc"][3],
            "marwil_eval_return": results["marwil"][0],
            "marwil_iterations": results["marwil"][1],
            "marwil_seconds": round(results["marwil"][2], 3),
            "marwil_rows_trained": results["marwil"][3],
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "total_seconds": round(seconds_since_start(), 3),
        }
    )


if __name__ == "__main__":
    main()
