"""Env steps per second of an EnvRunnerGroup running the default PPO network.

    python benchmarks/sampling_throughput.py --env CartPole-v1 --num-env-runners 1 \
        --num-envs-per-env-runner 16 --env-steps 200000

``--num-env-runners 0`` samples in this process on one torch thread (one core); R >= 1 uses
R Ray actors with one CPU each. Start-up (Ray, actors, the first fragment) is excluded: this
measures the steady sampling rate. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import emit, peak_rss_mb

from lightning_rl.algorithms.ppo import PPO
from lightning_rl.env_runners import EnvRunnerGroup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--num-env-runners", type=int, default=1)
    parser.add_argument("--num-envs-per-env-runner", type=int, default=16)
    parser.add_argument("--env-steps", type=int, default=200_000)
    parser.add_argument("--fragment-length", type=int, default=256, help="steps per env copy per sample call")
    args = parser.parse_args()

    torch.set_num_threads(1)
    algo = PPO(args.env, num_envs_per_env_runner=args.num_envs_per_env_runner)
    spec = algo.env_runner_spec(num_envs=args.num_envs_per_env_runner)
    group = EnvRunnerGroup(spec, num_env_runners=args.num_env_runners)
    state = algo.policy_state()
    try:
        group.sample(args.fragment_length, state)  # warm-up: first reset, allocations, weights
        per_call = max(1, args.num_env_runners) * args.num_envs_per_env_runner * args.fragment_length
        calls = max(1, round(args.env_steps / per_call))
        start = time.perf_counter()
        steps = 0
        for _ in range(calls):
            steps += sum(r.stats.num_env_steps for r in group.sample(args.fragment_length, state))
        seconds = time.perf_counter() - start
    finally:
        group.stop()
    emit(
        {
            "env": args.env,
            "env_steps": steps,
            "seconds": round(seconds, 3),
            "env_steps_per_s": round(steps / seconds, 1),
            "num_env_runners": args.num_env_runners,
            "num_envs_per_env_runner": args.num_envs_per_env_runner,
            "fragment_length": args.fragment_length,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
    )


if __name__ == "__main__":
    main()
