"""lightning-rl and Stable-Baselines3 side by side, seed-matched, on the same criteria.

    pip install -e ".[bench]"
    python benchmarks/compare_sb3.py --seeds 0 1 2 [--tasks ppo ppo_in_process dqn sac]
        [--stop-after-eval sac] [--max-env-steps N]

For each task (PPO CartPole-v1, DQN CartPole-v1, SAC Pendulum-v1) and seed it runs SB3 with
RL-Zoo's tuned hyperparameters (``_sb3_train.py``) and then lightning-rl with its shipped
config (``ppo_cartpole.py``, ``dqn_cartpole.py``, ``sac_pendulum.py``), each in its own fresh
process, one after the other (never at the same time: the machine's cores are shared).
Criteria, identical on both sides: the deterministic evaluation mean over 20 episodes reaches
475 (Pendulum: -200), and the mean of the last 100 training episodes reaches 450 (Pendulum:
-200). Seconds are process wall time from process start (imports and start-up included).

It prints one line per run (with the 1-minute load average at its start and end: the machine's
cores may be shared, so compare seconds as ratios within one run), then per task the medians
over seeds (a run that missed a criterion counts as infinitely slow), how many runs met each
criterion and the ratios ours/SB3 (below 1: lightning-rl is faster, or needs fewer env steps),
and as its last line one JSON object with everything (saved in ``results/compare_sb3.json``).
``ppo_in_process`` is lightning-rl's PPO with ``num_env_runners=0``, against the same SB3 runs.
Both sides evaluate at the same env-step counts (``_sb3_train.eval_every_of``).
``--stop-after-eval TASK ...`` ends both sides' runs of those tasks at the evaluation criterion
(the rolling one then counts only if it was met first): Pendulum's rolling criterion needs 100
finished 200-step episodes, i.e. >= 20,000 env steps of training on either side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import emit

HERE = Path(__file__).resolve().parent
# name: (SB3 algorithm, our benchmark script, extra arguments for ours, criteria)
TASKS = {
    "ppo": ("ppo", "ppo_cartpole.py", [], 475.0, 450.0),
    "ppo_in_process": ("ppo", "ppo_cartpole.py", ["--num-env-runners", "0"], 475.0, 450.0),
    "dqn": ("dqn", "dqn_cartpole.py", [], 475.0, 450.0),
    "sac": ("sac", "sac_pendulum.py", [], -200.0, -200.0),
}
KEYS = ("seconds_to_target", "env_steps_to_target", "seconds_to_rolling", "env_steps_to_rolling")


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run one benchmark process; its last stdout line is its JSON result."""
    # The child's own result is reported here, not appended to benchmarks/results a second time.
    env = {**os.environ, "LIGHTNING_RL_BENCHMARK_RESULTS": ""}
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "load_1m_start": round(load, 2)}
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        return {
            "error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}",
            "load_1m_start": round(load, 2),
        }
    result = json.loads(lines[-1])
    result = result.get("result", result)
    result.update(load_1m_start=round(load, 2), load_1m_end=round(os.getloadavg()[0], 2))
    return result


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """Median over seeds, a run that never met the criterion counting as infinitely slow:
    None when more than half of the runs missed it (or failed)."""
    values = [run[key] if run.get(key) is not None else math.inf for run in runs]
    if not values:
        return None
    middle = statistics.median(values)
    return None if math.isinf(middle) else middle


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument(
        "--stop-after-eval",
        nargs="*",
        choices=["dqn", "sac"],  # the off-policy scripts (_off_policy.py) take the flag
        default=[],
        help="tasks whose runs (both sides) stop at the evaluation criterion",
    )
    parser.add_argument(
        "--max-env-steps", type=int, default=None, help="step cap for both sides (default: each script's)"
    )
    args = parser.parse_args()

    summary: dict[str, Any] = {}
    sb3_runs: dict[tuple[str, int], dict[str, Any]] = {}
    for name in args.tasks:
        sb3_algo, script, extra, eval_target, rolling_target = TASKS[name]
        targets = ["--eval-target", str(eval_target), "--rolling-target", str(rolling_target)]
        cap = ["--max-env-steps", str(args.max_env_steps)] if args.max_env_steps else []
        cap += ["--stop-after-eval"] if name in args.stop_after_eval else []
        runs: dict[str, list[dict[str, Any]]] = {"sb3": [], "ours": []}
        for seed in args.seeds:
            if (sb3_algo, seed) not in sb3_runs:  # one SB3 PPO run serves both PPO tasks
                sb3_script = str(HERE / "_sb3_train.py")
                sb3_cmd = [sys.executable, sb3_script, "--algo", sb3_algo, "--seed", str(seed), *cap]
                sb3_runs[(sb3_algo, seed)] = run_json(sb3_cmd, args.timeout)
                show(name, seed, "sb3", sb3_runs[(sb3_algo, seed)])
            runs["sb3"].append(sb3_runs[(sb3_algo, seed)])
            ours_cmd = [sys.executable, str(HERE / script), "--seed", str(seed), *targets, *extra, *cap]
            runs["ours"].append(run_json(ours_cmd, args.timeout))
            show(name, seed, "ours", runs["ours"][-1])
        medians = {side: {key: median_of(runs[side], key) for key in KEYS} for side in runs}
        ratios = {key: ratio(medians["ours"][key], medians["sb3"][key]) for key in KEYS}
        reached = {
            side: {
                "eval": sum(bool(r.get("env_steps_to_target") is not None) for r in runs[side]),
                "rolling": sum(bool(r.get("env_steps_to_rolling") is not None) for r in runs[side]),
            }
            for side in runs
        }
        summary[name] = {
            "seeds": args.seeds,
            "runs": runs,
            "median": medians,
            "reached": reached,
            "ours_over_sb3": ratios,
            "stopped_after_eval": name in args.stop_after_eval,
        }
        print(f"[compare] {name} medians: {json.dumps(medians)}", flush=True)
        print(f"[compare] {name} runs reaching (eval, rolling): {json.dumps(reached)}", flush=True)
        print(f"[compare] {name} median ours/SB3: {json.dumps(ratios)}", flush=True)
    emit({"tasks": summary})


def show(name: str, seed: int, side: str, result: dict[str, Any]) -> None:
    shown = {k: result.get(k) for k in (*KEYS, "load_1m_start", "load_1m_end", "error")}
    shown = {k: v for k, v in shown.items() if v is not None}
    print(f"[compare] {name} seed {seed} {side}: {json.dumps(shown)}", flush=True)


if __name__ == "__main__":
    main()
