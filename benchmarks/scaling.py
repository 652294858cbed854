"""Where the driver's time goes as EnvRunners are added, and what one big fragment costs to fetch.

    python benchmarks/scaling.py [--runners 1 2 4 8] [--iterations 3] [--ddp]
    python benchmarks/scaling.py --fetch-only    # only the fragment fetch (a quick repeat)

Driver breakdown: PPO on CartPole through a real Trainer, R runners (8 CartPoles x 64 steps
each, half a CPU each), ``train_batch_size = R x 512``, one epoch of 512-step minibatches.
Per iteration (the first one, start-up, excluded): ``wait`` (ray.wait for results), ``fetch``
(ray.get; the arrays stay as Ray delivered them), ``broadcast`` (ray.put of the weights),
``merge`` (runner results -> one TensorDict, measured on in-process results of the same shape),
``learn`` (everything else in the
iteration: GAE, the updates, Lightning's hooks).

Fragment fetch: one actor returns an Atari-shaped fragment (uint8 observations and next
observations ``[16, 128, 4, 84, 84]``, ~116 MB) nine times per form, the forms taken in turn,
timed from the call to the result in the driver (median): pickled torch tensors, numpy arrays
(Ray's out-of-band zero-copy path), lightning-rl's fetch (numpy across Ray, kept as delivered:
read-only views of the object store, ``EnvRunnerGroup.sample(zero_copy=True)``), and that fetch
plus the one copy into memory the learner owns (``merge_fragments`` of one fragment, what a
one-runner batch costs). ``merge_2_ms`` joins two fetched fragments into one batch (one copy);
``merge_2_previous_ms`` is the path before zero_copy (a copy per result, then the concatenation's
copy). Runner counts above the machine's cores are oversubscribed;
``--ddp`` adds PPO learner updates/s with 1 and 2 DDP ranks. Last line: one JSON object, also
saved under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import ray
import torch
from _common import emit, peak_rss_mb

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.data.experience import results_to_tensordict
from lightning_rl.env_runners.env_runner_group import _as_delivered, merge_fragments, torch_result

HERE = Path(__file__).resolve().parent
ATARI_SHAPE = (16, 128, 4, 84, 84)


class FragmentSource:
    """Returns the same Atari-shaped fragment in the form asked for."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.obs = rng.integers(0, 255, ATARI_SHAPE, dtype=np.uint8)
        self.next_obs = rng.integers(0, 255, ATARI_SHAPE, dtype=np.uint8)

    def numpy(self) -> dict:
        return {"observation": self.obs, "next": {"observation": self.next_obs}}

    def torch(self) -> dict:
        return {
            "observation": torch.from_numpy(self.obs),
            "next": {"observation": torch.from_numpy(self.next_obs)},
        }


def _leaves(tree: dict) -> list:
    return [x for v in tree.values() for x in (_leaves(v) if isinstance(v, dict) else [v])]


def _previous_merge(parts: list[dict]) -> dict:
    """The path before zero_copy: each result copied to writable tensors, then concatenated."""
    from lightning_rl.env_runners.env_runner import EpisodeStats, RunnerResult

    tensors = [torch_result(RunnerResult(p, EpisodeStats(), {}, 0, 1)).data for p in parts]

    def cat(trees: list) -> dict | torch.Tensor:
        if isinstance(trees[0], dict):
            return {k: cat([t[k] for t in trees]) for k in trees[0]}
        return torch.cat(trees)

    return cat(tensors)


def fetch_cost(repeats: int = 9) -> dict:
    """Median milliseconds of one fragment's round trip (call, serialise, fetch) per form, and of
    the copy that turns fetched fragments into a batch the learner may write to."""
    source = ray.remote(num_cpus=0)(FragmentSource).remote()
    ray.get(source.numpy.remote())  # actor up

    forms = {
        "pickled_torch_ms": (source.torch, lambda x: x),
        "numpy_ms": (source.numpy, lambda x: x),
        # lightning-rl's fetch: numpy across Ray, kept as delivered (sample(zero_copy=True))
        "lightning_rl_ms": (source.numpy, _as_delivered),
        # ... plus the one copy into the learner's memory (a one-runner batch's merge)
        "fetch_and_merge_ms": (source.numpy, lambda x: merge_fragments([x])),
    }
    times: dict[str, list[float]] = {name: [] for name in [*forms, "merge_2_ms", "merge_2_previous_ms"]}
    # Round-robin, so a burst of load from the machine's other jobs hits every form alike.
    for _ in range(repeats):
        for name, (call, convert) in forms.items():
            start = time.perf_counter()  # the round trip: serialised by the actor, fetched here
            convert(ray.get(call.remote()))
            times[name].append(time.perf_counter() - start)
        # Two runners' fragments into one batch: one copy now, two before (copy each, then cat).
        parts = ray.get([source.numpy.remote(), source.numpy.remote()])
        for name, merge in (("merge_2_ms", merge_fragments), ("merge_2_previous_ms", _previous_merge)):
            start = time.perf_counter()
            batch = merge(parts)
            times[name].append(time.perf_counter() - start)
            del batch
        del parts
    fetched = ray.get(source.numpy.remote())
    pairs = list(zip(_leaves(fetched), _leaves(merge_fragments([fetched])), strict=True))
    assert all(not a.flags.writeable and a.ctypes.data != t.data_ptr() for a, t in pairs), (
        "Ray's arrays are read-only views of its object store; the learner's batch is its own copy"
    )
    result = {"fragment_mb": round(2 * int(np.prod(ATARI_SHAPE)) / 1e6, 1)}
    result.update({name: round(1000 * statistics.median(t), 1) for name, t in times.items()})
    result["lightning_rl_vs_numpy"] = round(result["lightning_rl_ms"] / result["numpy_ms"], 2)
    result["fetch_and_merge_vs_numpy"] = round(result["fetch_and_merge_ms"] / result["numpy_ms"], 2)
    ray.kill(source)
    return result


class IterationClock(pl.Callback):
    """Wall time of each training iteration and the runner group's counters at its end."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: PPO) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: PPO) -> None:
        group = module.experience.train_group
        self.rows.append(
            {
                "seconds": time.perf_counter() - self._start,
                "wait": group.seconds_waiting,
                "fetch": group.seconds_fetching,
                "broadcast": group.seconds_broadcasting,
            }
        )
        self.group = group


def driver_breakdown(runners: int, iterations: int) -> dict:
    algo = PPO(
        "CartPole-v1",
        num_env_runners=runners,
        num_envs_per_env_runner=8,
        num_cpus_per_env_runner=0.5,
        rollout_fragment_length=64,
        train_batch_size=runners * 512,
        minibatch_size=512,
        num_epochs=1,
        seed=0,
    )
    clock = IterationClock()
    trainer = pl.Trainer(
        max_epochs=iterations + 1,
        limit_val_batches=0,
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(algo)
    first, last = clock.rows[0], clock.rows[-1]
    per = {k: (last[k] - first[k]) / iterations for k in ("wait", "fetch", "broadcast")}
    per["iteration"] = sum(r["seconds"] for r in clock.rows[1:]) / iterations
    # Merge on results of the same shape (the group is stopped by now: sample in-process).
    from lightning_rl.env_runners import EnvRunner

    runner = EnvRunner(algo.env_runner_spec(num_envs=8))
    results = [runner.sample(64, True, algo.policy_state()) for _ in range(runners)]
    runner.stop()
    start = time.perf_counter()
    for _ in range(5):
        results_to_tensordict(results)
    per["merge"] = (time.perf_counter() - start) / 5
    per["learn"] = max(0.0, per["iteration"] - per["wait"] - per["fetch"] - per["broadcast"] - per["merge"])
    return {k: round(1000 * v, 1) for k, v in per.items()}


def learner_rate(devices: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        subprocess.run(
            [sys.executable, str(HERE / "_ddp_updates.py"), "--devices", str(devices), "--out", str(out)],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--ddp", action="store_true", help="also measure 1 and 2 DDP learner ranks")
    parser.add_argument("--fetch-only", action="store_true", help="only the Atari-sized fragment fetch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(
        address="local", num_cpus=max(2, max(args.runners)), include_dashboard=False, log_to_driver=False
    )
    fetch = fetch_cost()
    print(f"fragment fetch: {fetch}", flush=True)
    breakdown = {}
    for runners in [] if args.fetch_only else args.runners:
        breakdown[str(runners)] = driver_breakdown(runners, args.iterations)
        print(f"{runners} runners, ms per iteration: {breakdown[str(runners)]}", flush=True)
    ray.shutdown()
    result = {
        "cores": os.cpu_count() or 1,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "fragment_fetch": fetch,
        "driver_ms_per_iteration_by_runners": breakdown,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if args.ddp:
        learners = {str(d): learner_rate(d) for d in (1, 2)}
        result["learner_updates_per_s_by_ranks"] = {
            k: round(v["learner_updates_per_s"], 1) for k, v in learners.items()
        }
    emit(result)


if __name__ == "__main__":
    main()
