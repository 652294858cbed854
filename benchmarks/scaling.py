"""How sampling scales with EnvRunners, and learning with DDP ranks.

    python benchmarks/scaling.py [--runners 1 2 4] [--env-steps 200000]

Sampling: an EnvRunnerGroup of R Ray actors (16 CartPoles each, default PPO network, one CPU
each) samples ``--env-steps``; start-up excluded. Learning: PPO updates/s (CartPole,
minibatch 256) in one process and with 2 DDP ranks on CPU (gloo). Runner counts above the
machine's cores are reported but oversubscribed. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch
from _common import emit, peak_rss_mb

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.env_runners import EnvRunnerGroup

HERE = Path(__file__).resolve().parent


def sampling_rate(num_runners: int, env_steps: int, envs: int = 16, fragment: int = 256) -> float:
    algo = PPO("CartPole-v1", num_envs_per_env_runner=envs)
    group = EnvRunnerGroup(algo.env_runner_spec(num_envs=envs), num_env_runners=num_runners)
    state = algo.policy_state()
    try:
        group.sample(fragment, state)  # warm-up
        calls = max(1, round(env_steps / (num_runners * envs * fragment)))
        start = time.perf_counter()
        steps = sum(r.stats.num_env_steps for _ in range(calls) for r in group.sample(fragment, state))
        return steps / (time.perf_counter() - start)
    finally:
        group.stop()


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
    parser.add_argument("--runners", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--env-steps", type=int, default=200_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cores = os.cpu_count() or 1
    ray.init(num_cpus=max(args.runners), include_dashboard=False, log_to_driver=False)
    sampling = {}
    for runners in args.runners:
        sampling[str(runners)] = round(sampling_rate(runners, args.env_steps), 1)
        print(f"{runners} runners: {sampling[str(runners)]} env steps/s", flush=True)
    ray.shutdown()
    learners = {str(d): learner_rate(d) for d in (1, 2)}
    emit(
        {
            "cores": cores,
            "env_steps_per_s_by_runners": sampling,
            "learner_updates_per_s_by_ranks": {
                k: round(v["learner_updates_per_s"], 1) for k, v in learners.items()
            },
            "learner_samples_per_s_by_ranks": {
                k: round(v["learner_samples_per_s"], 1) for k, v in learners.items()
            },
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
