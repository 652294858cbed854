"""A simulator process: runs CartPole itself and learns through a lightning-rl policy server.

    LIGHTNING_RL_EXTERNAL_TOKEN=... python examples/external_cartpole/client.py \
        --address 127.0.0.1:9900 [--inference local] [--seed 1]

``--address-file`` waits for the file the server writes once it listens (``address_file`` in
its ``external`` settings). The process plays episodes until ``--episodes``/``--seconds`` are
used up or the server shuts down, then prints its mean return.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import gymnasium as gym

from lightning_rl.envs.external import ExternalEnvClient


def wait_for_address(path: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            sys.exit(f"No server address file {path} after {timeout_s:g} s.")
        time.sleep(0.1)
    with open(path) as f:
        address = json.load(f)
    return f"{address['host']}:{address['port']}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--address", help="host:port of the policy server")
    where.add_argument("--address-file", help="JSON file the server writes once it listens")
    parser.add_argument("--token", default=None, help="shared token (default: $LIGHTNING_RL_EXTERNAL_TOKEN)")
    parser.add_argument("--inference", choices=["remote", "local"], default="remote")
    parser.add_argument("--model-format", choices=["onnx", "torchscript"], default="onnx")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()

    address = args.address or wait_for_address(args.address_file, timeout_s=120)
    env = gym.make("CartPole-v1")
    returns: list[float] = []
    try:
        with ExternalEnvClient(
            address, args.token, inference=args.inference, model_format=args.model_format, seed=args.seed
        ) as client:
            # Plays until the limits are used up or the server shuts down.
            returns = client.run(env, num_episodes=args.episodes, seconds=args.seconds, seed=args.seed)
    except ConnectionError as exc:  # no server (any more): a simulator just stops
        print(f"client {args.seed}: {exc}", file=sys.stderr)
    mean = sum(returns) / len(returns) if returns else None
    print(json.dumps({"client": args.seed, "episodes": len(returns), "mean_return": mean}))


if __name__ == "__main__":
    main()
