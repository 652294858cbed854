"""Load on the external-env policy server: N concurrent loopback clients, server-side inference.

    python benchmarks/external_env_load.py --clients 64 --seconds 20

The server (an ExternalEnvRunner with PPO's default CartPole network) runs in this process; a
stand-in learner samples from it back to back (no training between samples, so this measures
the serving path). The N clients are ``ExternalEnvClient`` threads playing CartPole, spread
over ``--client-processes`` processes. Each client plays episodes until ``--seconds`` pass or
the clients together took ``--max-actions`` actions, and always finishes the episode it is in,
so every step it took belongs to a finished episode.

Reported (last line, one JSON object): ``actions_per_s`` (actions answered per second over
the client phase), ``p50_ms``/``p99_ms`` (client-side round trip of ``get_action``, gaps
between samples included), ``errors`` (server error frames + client exceptions),
``lost_steps`` (steps of episodes the clients finished that never reached the learner).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import threading
import time
from typing import Any

import numpy as np

TOKEN = "benchmark-token"


def client_process(
    address: tuple[str, int],
    ids: list[int],
    seconds: float,
    max_actions: int,
    shared: dict[str, Any],
    results: Any,
) -> None:
    """Run one client thread per id; report per-client step counts and latencies."""
    import gymnasium as gym

    from lightning_rl.envs.external import ExternalEnvClient

    per_client: list[dict[str, Any]] = []
    lock = threading.Lock()
    counter = shared["actions"]

    def play(client_id: int) -> None:
        latencies: list[float] = []
        finished_steps = 0
        error = None
        try:
            env = gym.make("CartPole-v1")
            client = ExternalEnvClient(address, TOKEN, timeout_s=120)
            with shared["connected"].get_lock():
                shared["connected"].value += 1
            shared["go"].wait()
            deadline = shared["start"].value + seconds
            observation, _ = env.reset(seed=client_id)
            while time.time() < deadline and counter.value < max_actions:
                episode = client.start_episode()
                done, length = False, 0
                while not done:
                    start = time.perf_counter()
                    action = client.get_action(episode, observation)
                    latencies.append(time.perf_counter() - start)
                    observation, reward, terminated, truncated, _ = env.step(action)
                    client.log_returns(episode, float(reward))
                    done, length = bool(terminated or truncated), length + 1
                client.end_episode(
                    episode, observation, terminated=bool(terminated), truncated=bool(truncated)
                )
                finished_steps += length
                with counter.get_lock():
                    counter.value += length
                observation, _ = env.reset()
            client.close()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        with lock:
            per_client.append(
                {
                    "id": client_id,
                    "steps": finished_steps,
                    "latencies": latencies,
                    "error": error,
                    "end": time.time(),
                }
            )

    threads = [threading.Thread(target=play, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(per_client)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-actions", type=int, default=10_000_000)
    parser.add_argument(
        "--client-processes", type=int, default=8, help="client threads are spread over these"
    )
    parser.add_argument("--steps-per-sample", type=int, default=1024, help="learner batch size")
    parser.add_argument(
        "--batch-mode", default="truncate_episodes", choices=["truncate_episodes", "complete_episodes"]
    )
    args = parser.parse_args()

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import emit

    from lightning_rl.algorithms.ppo import PPO
    from lightning_rl.errors import EnvError

    torch.set_num_threads(1)
    external = {"token": TOKEN, "batch_mode": args.batch_mode, "max_clients": 4096, "sample_timeout_s": 1.0}
    algo = PPO("CartPole-v1", external=external)
    spec = algo.env_runner_spec(num_envs=1)
    runner = spec.runner_class()(spec)
    state = algo.policy_state()

    context = mp.get_context("spawn")
    shared = {
        "actions": context.Value("q", 0),
        "connected": context.Value("i", 0),
        "start": context.Value("d", 0.0),
        "go": context.Event(),
    }
    results = context.Queue()
    processes = max(1, min(args.client_processes, args.clients))
    groups = [list(range(args.clients))[p::processes] for p in range(processes)]
    workers = [
        context.Process(
            target=client_process, args=(runner.address, ids, args.seconds, args.max_actions, shared, results)
        )
        for ids in groups
    ]
    for worker in workers:
        worker.start()
    # Connections and start-up (imports, handshakes) are not part of the measured phase.
    while shared["connected"].value < args.clients and any(w.is_alive() for w in workers):
        time.sleep(0.05)
    start_at = time.time()
    shared["start"].value = start_at
    shared["go"].set()

    delivered = 0
    samples = 0
    returns: list[float] = []
    collected: list[list[dict[str, Any]]] = []
    while True:
        while not results.empty():
            collected.append(results.get())
        if len(collected) == len(workers) or not any(w.is_alive() for w in workers):
            # The clients are done: flush what is still buffered, then stop.
            buffered = runner.server_stats()["buffered_steps"]
            if buffered == 0:
                break
            steps = buffered
        else:
            steps = args.steps_per_sample
        try:
            result = runner.sample(steps, True, state)
        except EnvError:  # fewer steps than asked for within the sample timeout: they stay buffered
            continue
        delivered += result.stats.num_env_steps
        returns += result.stats.returns
        samples += 1
    for worker in workers:
        worker.join(timeout=60)
    while len(collected) < len(workers):
        collected.append(results.get(timeout=60))
    stats = runner.server_stats()
    runner.stop()
    server_cpu = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)

    clients = [c for group in collected for c in group]
    latencies = np.array([x for c in clients for x in c["latencies"]]) * 1000.0
    client_errors = [c["error"] for c in clients if c["error"]]
    finished_steps = sum(c["steps"] for c in clients)
    actions = int(latencies.size)
    wall = max(c["end"] for c in clients) - start_at
    for error in client_errors[:5]:
        print("client error:", error, file=sys.stderr)
    emit(
        {
            "clients": args.clients,
            "seconds": round(wall, 2),
            "actions": actions,
            "actions_per_s": round(actions / wall, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 3) if actions else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 3) if actions else None,
            "errors": int(sum(stats["errors"].values())) + len(client_errors),
            "lost_steps": finished_steps - delivered,
            "steps_delivered": delivered,
            "server_dropped_steps": stats["lost_steps"],
            "episodes": len(returns),
            "samples": samples,
            "actions_per_tick": round(stats["actions_served"] / max(1, stats["ticks"]), 2),
            "batch_mode": args.batch_mode,
            "server_cpu_s": round(server_cpu.ru_utime + server_cpu.ru_stime, 2),
            "clients_cpu_s": round(client_cpu.ru_utime + client_cpu.ru_stime, 2),
        }
    )


if __name__ == "__main__":
    main()
