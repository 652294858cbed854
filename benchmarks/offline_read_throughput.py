"""Offline read throughput and memory: pyarrow (all in memory) vs Ray Data (streaming).

    python benchmarks/offline_read_throughput.py [--gigabytes 1.1] [--memory-budget-mb 256]

Generates ``--gigabytes`` of episodes on disk (the recorder's schema: 64-float observations
and next observations, Discrete(4) actions, episodes of 50-500 steps, Parquet files of at
most 64 MB), then reads one full pass of it through ``OfflineDataModule`` minibatches of
8192 rows (env-to-module connectors included) in two fresh processes:

* ``pyarrow``: ``input_read_method="pyarrow"``: the whole data set loaded into memory;
* ``ray``: ``input_read_method="ray"`` with ``input_memory_budget_mb`` far below the data
  size: ``ray.data.read_parquet`` streaming, object store capped at the budget.

The last line is one JSON object: ``rows_per_s_pyarrow``, ``rows_per_s_ray`` (rows served
per second over the pass, loading included) and ``peak_rss_mb`` (the streaming process's
peak resident memory), plus the pyarrow process's peak, the Ray workers' peak and the data
size. The generated data is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pyarrow as pa
from _common import emit, seconds_since_start
from gymnasium import spaces

OBS_DIM = 64
BATCH = 8192


class WideObsEnv(gym.Env):
    """The spaces of the generated episodes (evaluation is not run here)."""

    observation_space = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = spaces.Discrete(4)

    def __init__(self, config=None) -> None:
        pass

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS_DIM, np.float32), {}

    def step(self, action):
        return np.zeros(OBS_DIM, np.float32), 0.0, False, False, {}


def generate(directory: Path, gigabytes: float) -> tuple[int, int]:
    """Write episodes until the files on disk hold ``gigabytes``; returns (rows, bytes)."""
    from lightning_rl.offline.config import OutputConfig
    from lightning_rl.offline.schema import EpisodeLayout
    from lightning_rl.offline.writer import ParquetFileWriter

    layout = EpisodeLayout(WideObsEnv.observation_space, WideObsEnv.action_space)
    schema = layout.schema(with_log_prob=True)
    writer = ParquetFileWriter(directory, schema, OutputConfig(max_file_size=64 * 2**20, compression="zstd"))
    rng = np.random.default_rng(0)
    target, rows, episode = int(gigabytes * 2**30), 0, 0
    while sum(f.stat().st_size for f in directory.glob("*.parquet")) < target:
        lengths = rng.integers(50, 501, 200)
        n = int(lengths.sum())
        ids = np.repeat([f"{episode + i:032x}" for i in range(len(lengths))], lengths)
        t = np.concatenate([np.arange(length) for length in lengths])
        ends = np.cumsum(lengths) - 1
        terminated = np.zeros(n, bool)
        terminated[ends[::2]] = True
        truncated = np.zeros(n, bool)
        truncated[ends[1::2]] = True
        obs = rng.standard_normal((n + 1, OBS_DIM), dtype=np.float32)
        flat = lambda a: pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), OBS_DIM)  # noqa: E731
        writer.write(
            pa.table(
                {
                    "episode_id": pa.array(ids),
                    "t": pa.array(t),
                    "observation": flat(obs[:-1]),
                    "action": pa.array(rng.integers(0, 4, n)),
                    "reward": pa.array(rng.standard_normal(n)),
                    "terminated": pa.array(terminated),
                    "truncated": pa.array(truncated),
                    "next_observation": flat(obs[1:]),
                    "action_log_prob": pa.array(np.full(n, -np.log(4.0), np.float32)),
                },
                schema=schema,
            )
        )
        rows += n
        episode += len(lengths)
        writer.flush()
    writer.close()
    return rows, sum(f.stat().st_size for f in directory.glob("*.parquet"))


class RayWorkerMemory(threading.Thread):
    """Samples the summed resident memory of Ray's worker processes (the streaming readers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_mb = 0.0
        self.running = True

    def run(self) -> None:
        import psutil

        while self.running:
            total = 0
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                cmdline = " ".join(process.info["cmdline"] or [])
                if "ray::" in cmdline or "default_worker.py" in cmdline:
                    total += process.info["memory_info"].rss if process.info["memory_info"] else 0
            self.peak_mb = max(self.peak_mb, total / 2**20)
            time.sleep(0.5)


def measure(method: str, data: str, budget_mb: float) -> dict:
    """One pass of minibatches through the DataModule, in this (fresh) process."""
    import pyarrow.parquet as pq
    import torch

    from lightning_rl.algorithms.bc import BC
    from lightning_rl.data.offline import OfflineDataModule
    from lightning_rl.offline.reader import resolve_input_files

    torch.set_num_threads(1)
    monitor = None
    if method == "ray":
        import ray

        ray.init(
            address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False
        )
        monitor = RayWorkerMemory()
        monitor.start()
    import psutil

    rss_before_read_mb = psutil.Process().memory_info().rss / 2**20
    algo = BC(
        WideObsEnv,
        input_=data,
        input_read_method=method,
        input_memory_budget_mb=budget_mb,
        train_batch_size=BATCH,
    )
    start = time.perf_counter()
    datamodule = OfflineDataModule()
    datamodule.attach(algo)
    datamodule.setup("fit")
    total_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in resolve_input_files(data))
    served = 0
    while served + BATCH <= total_rows:
        served += int(datamodule.next_batch().batch_size[0])
    seconds = time.perf_counter() - start
    datamodule.close()
    result = {
        "rows": served,
        "seconds": round(seconds, 3),
        "rows_per_s": served / seconds,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "rss_before_read_mb": round(rss_before_read_mb, 1),
    }
    if monitor is not None:
        monitor.running = False
        result["ray_workers_peak_rss_mb"] = round(monitor.peak_mb, 1)
    return result


def run_child(method: str, data: Path, budget_mb: float) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            __file__,
            "--measure",
            method,
            "--data",
            str(data),
            "--memory-budget-mb",
            str(budget_mb),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {method} measurement failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gigabytes", type=float, default=1.1)
    parser.add_argument("--memory-budget-mb", type=float, default=256.0)
    parser.add_argument("--measure", choices=["pyarrow", "ray"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        budget = args.memory_budget_mb if args.measure == "ray" else 64_000.0
        print(json.dumps(measure(args.measure, args.data, budget)), flush=True)
        return

    data = Path(tempfile.mkdtemp(prefix="offline_read_throughput_"))
    try:
        start = time.perf_counter()
        rows, size = generate(data, args.gigabytes)
        generate_seconds = time.perf_counter() - start
        pyarrow_result = run_child("pyarrow", data, args.memory_budget_mb)
        ray_result = run_child("ray", data, args.memory_budget_mb)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    emit(
        {
            "rows_per_s_pyarrow": round(pyarrow_result["rows_per_s"], 1),
            "rows_per_s_ray": round(ray_result["rows_per_s"], 1),
            "peak_rss_mb": ray_result["peak_rss_mb"],
            "peak_rss_mb_pyarrow": pyarrow_result["peak_rss_mb"],
            "rss_before_read_mb": ray_result["rss_before_read_mb"],
            "ray_workers_peak_rss_mb": ray_result.get("ray_workers_peak_rss_mb"),
            "memory_budget_mb": args.memory_budget_mb,
            "data_mb_on_disk": round(size / 2**20, 1),
            "data_rows": rows,
            "rows_read_per_pass": ray_result["rows"],
            "seconds_pyarrow": pyarrow_result["seconds"],
            "seconds_ray": ray_result["seconds"],
            "generate_seconds": round(generate_seconds, 3),
            "total_seconds": round(seconds_since_start(), 3),
        }
    )


if __name__ == "__main__":
    main()
