"""Run the same benchmark scripts and seeds on two checkouts and put the figures side by side.

    git worktree add /work/before 22a1287 && git worktree add /work/after HEAD
    python benchmarks/before_after.py --tree before=/work/before --tree after=/work/after \
        --scripts ppo_cartpole dqn_cartpole sac_pendulum --seeds 0 1 2 \
        --out benchmarks/comparisons/layering_before_after.json

Each run is ``python <tree>/benchmarks/<script>.py --seed S`` with ``PYTHONPATH=<tree>``, so
``import lightning_rl`` and the configs resolve in that checkout (the registry's entry points
name module paths, the same in both, read from the editable install's metadata), and with
``LIGHTNING_RL_BENCHMARK_RESULTS`` pointed at a scratch folder so neither run appends to
``benchmarks/results``. Runs go one at a time, the trees alternating per seed so both see
similar load; env steps to a target do not depend on load, seconds do, so the 1-minute load
average is recorded at each run's start and end. The output file is rewritten after every
run (one JSON object: the runs so far).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEPT = (
    "env_steps_to_target",
    "env_steps_to_rolling",
    "env_steps",
    "reached",
    "reached_rolling",
    "final_eval_return",
    "seconds_to_target",
    "seconds_to_rolling",
    "total_seconds",
)


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def commit_of(tree: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    return out.stdout.strip()


def run_one(
    tree: Path, script: str, seed: int, scratch: str, timeout: float, nice: int, extra: list[str]
) -> dict:
    command = [
        "nice",
        "-n",
        str(nice),
        sys.executable,
        str(tree / "benchmarks" / f"{script}.py"),
        "--seed",
        str(seed),
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(tree), LIGHTNING_RL_BENCHMARK_RESULTS=scratch)
    start_load, start = load_average(), time.monotonic()
    try:
        proc = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        result = json.loads(lines[-1]) if proc.returncode == 0 and lines else None
        error = None if result is not None else (proc.stderr[-2000:] or f"exit {proc.returncode}")
    except subprocess.TimeoutExpired:
        result, error = None, f"timed out after {timeout} s"
    record = {
        "script": f"benchmarks/{script}.py",
        "seed": seed,
        "commit": commit_of(tree),
        "script_args": extra,
        "wall_seconds": round(time.monotonic() - start, 1),
        "loadavg_start": start_load,
        "loadavg_end": load_average(),
    }
    if result is None:
        record["error"] = error
    else:
        record.update({key: result.get(key) for key in KEPT})
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="label=path, in run order")
    parser.add_argument("--scripts", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds per run")
    parser.add_argument("--nice", type=int, default=15)
    parser.add_argument(
        "--script-args",
        default="",
        help="more arguments for every script, e.g. '--rolling-target -1e9' (stop at the evaluation target)",
    )
    args = parser.parse_args()
    extra = shlex.split(args.script_args)
    trees = [(label, Path(path).resolve()) for label, path in (t.split("=", 1) for t in args.tree)]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="before_after_") as scratch:
        for script in args.scripts:
            for seed in args.seeds:
                for label, tree in trees:
                    record = {
                        "tree": label,
                        **run_one(tree, script, seed, scratch, args.timeout, args.nice, extra),
                    }
                    runs.append(record)
                    print(json.dumps(record), flush=True)
                    args.out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(json.dumps({"runs": len(runs), "failed": sum("error" in r for r in runs)}))


if __name__ == "__main__":
    main()
