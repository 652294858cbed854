"""lightning-rl and Stable-Baselines3 side by side, seed-matched, on the same criteria.

    pip install -e ".[bench]"
    python benchmarks/compare_sb3.py --seeds 0 1 2 [--algos ppo dqn sac] [--ppo-in-process]

For each task (PPO CartPole-v1, DQN CartPole-v1, SAC Pendulum-v1) and seed it runs SB3 with
RL-Zoo's tuned hyperparameters (``_sb3_train.py``) and then lightning-rl with its shipped
config (``ppo_cartpole.py``, ``dqn_cartpole.py``, ``sac_pendulum.py``), each in its own fresh
process, one after the other (never at the same time: the machine's cores are shared).
Criteria, identical on both sides: the deterministic evaluation mean over 20 episodes reaches
475 (Pendulum: -200), and the mean of the last 100 training episodes reaches 450 (Pendulum:
-200). Seconds are process wall time from process start (imports and start-up included).

It prints one line per run, then per task the medians over seeds and the ratios ours/SB3
(below 1: lightning-rl is faster), and as its last line one JSON object with everything.
``--ppo-in-process`` adds lightning-rl PPO with ``num_env_runners=0`` as a fourth task.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import emit

HERE = Path(__file__).resolve().parent
TASKS = {
    "ppo": {"ours": "ppo_cartpole.py", "eval_target": 475.0, "rolling_target": 450.0},
    "dqn": {"ours": "dqn_cartpole.py", "eval_target": 475.0, "rolling_target": 450.0},
    "sac": {"ours": "sac_pendulum.py", "eval_target": -200.0, "rolling_target": -200.0},
}
KEYS = ("seconds_to_target", "env_steps_to_target", "seconds_to_rolling", "env_steps_to_rolling")


def run_json(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run one benchmark process; its last stdout line is its JSON result."""
    try:
        proc = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.strip().startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    result = json.loads(lines[-1])
    return result.get("result", result)


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values and len(values) == len(runs) else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--algos", nargs="+", choices=sorted(TASKS), default=["ppo", "dqn", "sac"])
    parser.add_argument("--ppo-in-process", action="store_true", help="also PPO with num_env_runners=0")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    args = parser.parse_args()

    tasks = [(algo, algo, []) for algo in args.algos]
    if args.ppo_in_process:
        tasks.append(("ppo_in_process", "ppo", ["--num-env-runners", "0"]))
    summary: dict[str, Any] = {}
    for name, algo, extra in tasks:
        spec = TASKS[algo]
        targets = ["--eval-target", str(spec["eval_target"]), "--rolling-target", str(spec["rolling_target"])]
        runs: dict[str, list[dict[str, Any]]] = {"sb3": [], "ours": []}
        for seed in args.seeds:
            sb3_cmd = [sys.executable, str(HERE / "_sb3_train.py"), "--algo", algo, "--seed", str(seed)]
            ours_cmd = [sys.executable, str(HERE / spec["ours"]), "--seed", str(seed), *targets, *extra]
            for side, cmd in (("sb3", sb3_cmd), ("ours", ours_cmd)):
                result = run_json(cmd, args.timeout)
                runs[side].append(result)
                shown = {k: result.get(k) for k in (*KEYS, "error") if result.get(k) is not None}
                print(f"[compare] {name} seed {seed} {side}: {json.dumps(shown)}", flush=True)
        medians = {side: {key: median_of(runs[side], key) for key in KEYS} for side in runs}
        ratios = {key: ratio(medians["ours"][key], medians["sb3"][key]) for key in KEYS}
        summary[name] = {"seeds": args.seeds, "runs": runs, "median": medians, "ours_over_sb3": ratios}
        print(f"[compare] {name} median ours/SB3: {json.dumps(ratios)}", flush=True)
    emit({"tasks": summary})


if __name__ == "__main__":
    main()
