"""The external-env server under attack: good clients next to floods, fuzzing and hostile clients.

    python benchmarks/external_env_attack.py --clients 8 --seconds 15

The server (an ExternalEnvRunner, PPO's default network on CartPole's spaces) and a stand-in
learner (samples back to back; the weights version moves every sample, so every ``get_model``
is a fresh export) run in this process. Good clients (``ExternalEnvClient`` threads in one
process, remote inference) play CartPole episodes; each only stops between episodes, so every
step it sent must reach the learner. Two phases of ``--seconds`` each: without an attacker, then
with one process running all attacks at once:

* pre-auth floods: 8 MiB msgpack bombs with a wrong token, half-sent 8 MiB frames, 300 idle
  sockets reopened as soon as the server closes them;
* an authenticated client pipelining ``get_weights`` without reading a reply;
* an authenticated client asking for ``get_model`` over and over;
* a seeded fuzzer sending mutated frames of every message type (poison numbers included).

Reported (last line, one JSON object): ``steps_sent``/``steps_received``/``steps_buffered``
of the good clients (sent == received + buffered when nothing is lost), good clients'
``get_action`` ``p50_ms``/``p99_ms``/``max_ms`` per phase, the server process's RSS before and
after the attack, the error codes the server sent, and ``server_errors`` (must be 0).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import socket
import struct
import threading
import time
from typing import Any

import numpy as np

TOKEN = "attack-benchmark-token"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- good clients (their own process) ------------------------------------------------------------------
def good_clients(address: tuple[str, int], ids: list[int], seconds: float, phases: int, results: Any) -> None:
    import gymnasium as gym

    from lightning_rl.envs.external import ExternalEnvClient

    out: dict[int, dict[str, Any]] = {}
    start = time.monotonic()

    def play(client_id: int) -> None:
        env = gym.make("CartPole-v1")
        latencies: list[list[float]] = [[] for _ in range(phases)]
        sent = 0
        with ExternalEnvClient(address, TOKEN, timeout_s=300) as client:
            episode_no = 0
            while time.monotonic() - start < seconds * phases:
                episode = client.start_episode(f"{client_id}-{episode_no}")
                obs, _ = env.reset(seed=client_id * 100_000 + episode_no)
                done, steps = False, 0
                while not done:
                    t0 = time.perf_counter()
                    action = client.get_action(episode, obs)
                    phase = min(phases - 1, int((time.monotonic() - start) / seconds))
                    latencies[phase].append(time.perf_counter() - t0)
                    obs, reward, terminated, truncated, _ = env.step(action)
                    client.log_returns(episode, reward)
                    done = terminated or truncated
                    steps += 1
                client.end_episode(episode, obs, terminated=terminated, truncated=truncated)
                sent += steps
                episode_no += 1
        out[client_id] = {"sent": sent, "latencies": latencies}

    threads = [threading.Thread(target=play, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(out)


# -- the attacker (its own process) --------------------------------------------------------------------
def _frame(body: bytes, encoding: int) -> bytes:
    return struct.pack(">IB", len(body), encoding) + body


def _recv_frame(sock: socket.socket) -> dict[str, Any] | None:
    """One reply, decoded with json/msgpack only: the attacker imports nothing slow (importing
    torch mid-attack would leave its connections idle past the server's timeout)."""
    import msgpack

    def exactly(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    try:
        header = exactly(5)
        if header is None:
            return None
        length, encoding = struct.unpack(">IB", header)
        body = exactly(length)
        if body is None:
            return None
        return json.loads(body) if encoding == 1 else msgpack.unpackb(body, raw=False)
    except (OSError, ValueError):
        return None


def _hello(address: tuple[str, int], counts: dict[str, int]) -> socket.socket:
    """An authenticated connection; retried when the flood closed it before its hello (counted)."""
    body = json.dumps({"type": "hello", "protocol_version": 1, "token": TOKEN}).encode()
    while True:
        try:
            sock = socket.create_connection(address, timeout=60)
            sock.sendall(_frame(body, 1))
            reply = _recv_frame(sock)
        except OSError:
            reply = None
        if reply is not None and reply["type"] == "welcome":
            return sock
        counts["hello_retries"] = counts.get("hello_retries", 0) + 1
        sock.close()


ATTACKS = ("bombs", "half_frames", "idle_reopen", "unread_replies", "models", "fuzz")


def attacker(
    address: tuple[str, int], seconds: float, results: Any, attacks: tuple[str, ...] = ATTACKS
) -> None:
    import msgpack

    stop = time.monotonic() + seconds
    counts: dict[str, int] = {}

    def count(name: str, n: int = 1) -> None:
        counts[name] = counts.get(name, 0) + n

    def bombs() -> None:
        body = msgpack.packb(
            {"type": "hello", "protocol_version": 1, "token": "wrong", "pad": [None] * ((8 << 20) - 100)}
        )
        bomb = _frame(body, 2)
        while time.monotonic() < stop:
            socks = []
            for _ in range(6):
                try:
                    sock = socket.create_connection(address, timeout=10)
                    sock.sendall(bomb)
                except OSError:
                    pass
                else:
                    socks.append(sock)
                count("bombs")
            for sock in socks:
                _recv_frame(sock)
                sock.close()

    def half_frames() -> None:
        while time.monotonic() < stop:
            socks = []
            for _ in range(40):
                try:
                    sock = socket.create_connection(address, timeout=10)
                    sock.sendall(struct.pack(">IB", 8 << 20, 2) + b"\0" * 65536)
                    socks.append(sock)
                except OSError:
                    pass
                count("half_frames")
            time.sleep(0.5)
            for sock in socks:
                sock.close()

    def idle_reopen() -> None:
        held: list[socket.socket] = []
        while time.monotonic() < stop:
            for sock in list(held):
                sock.setblocking(False)
                try:
                    if sock.recv(65536) != b"":
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                held.remove(sock)
                sock.close()
            while len(held) < 300:  # more than the server's max_unauthenticated (256)
                try:
                    held.append(socket.create_connection(address, timeout=10))
                    count("idle_sockets")
                except OSError:
                    break
            time.sleep(0.01)
        for sock in held:
            sock.close()

    def unread_replies() -> None:
        while time.monotonic() < stop:
            sock = _hello(address, counts)
            request = _frame(msgpack.packb({"type": "get_weights"}), 2)
            try:
                sock.sendall(request * 6000)
                count("unread_requests", 6000)
            except OSError:
                pass
            time.sleep(max(0.0, stop - time.monotonic()))  # never read a reply
            sock.close()

    def models() -> None:
        sock = None
        while time.monotonic() < stop:
            if sock is None:
                sock = _hello(address, counts)
            fmt = random.choice(["onnx", "torchscript"])
            try:
                sock.sendall(_frame(msgpack.packb({"type": "get_model", "format": fmt}), 2))
                reply = _recv_frame(sock)
            except OSError:
                reply = None
            count("models" if reply and reply["type"] == "model" else "model_errors")
            if not reply or reply["type"] != "model":
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def fuzz() -> None:
        rng = random.Random(18)
        weird = [
            None,
            True,
            -1,
            2**63,
            1e39,
            -1e39,
            float("nan"),
            "",
            "\ud800",
            [],
            {},
            [[[]]],
            "x" * 3000,
            {"dtype": "float32", "shape": [0, 2**62], "data": ""},
            {"dtype": "float32", "shape": [4], "data": "AAAA"},
            10**401,
        ]
        sock = None
        while time.monotonic() < stop:
            if sock is None:
                sock = _hello(address, counts)
                sock.sendall(_frame(json.dumps({"type": "start_episode", "episode_id": "f"}).encode(), 1))
                _recv_frame(sock)
            obs = [100.0 + rng.random(), 0.0, 0.0, 0.0]  # |x| > 50: never a good client's (CartPole <= 4.8)
            message = rng.choice(
                [
                    {"type": "get_action", "episode_id": "f", "observation": obs, "reward": 1.0},
                    {"type": "log_returns", "episode_id": "f", "reward": 1.0},
                    {
                        "type": "upload_episodes",
                        "episodes": [
                            {
                                "observations": [obs, obs],
                                "actions": [1],
                                "action_log_probs": [-0.7],
                                "rewards": [1.0],
                                "terminated": True,
                            }
                        ],
                    },
                    {"type": "ping"},
                ]
            )
            if rng.random() < 0.7:
                key = rng.choice([k for k in message if k != "type"] or ["type"])
                message[key] = rng.choice(weird)
            body = json.dumps(message).encode("utf-8", "surrogatepass")
            if rng.random() < 0.1:
                body = bytes(rng.randrange(256) if rng.random() < 0.05 else b for b in body)
            try:
                sock.sendall(_frame(body, 1))
                reply = _recv_frame(sock)
            except OSError:
                reply = None
            count("fuzz_frames")
            if reply is None or reply.get("type") == "error":
                count(f"fuzz_{reply['code'] if reply else 'closed'}")
                sock.close()
                sock = None

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except Exception as exc:  # reported, not hidden
                count(f"{fn.__name__}_crashed_{type(exc).__name__}")

        return run

    functions = {f.__name__: f for f in (bombs, half_frames, idle_reopen, unread_replies, models, fuzz)}
    threads = [threading.Thread(target=guarded(functions[name]), daemon=True) for name in attacks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    results.put(counts)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan"), "n": 0}
    array = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(array, 50)), 2),
        "p99_ms": round(float(np.percentile(array, 99)), 2),
        "max_ms": round(float(array.max()), 2),
        "n": int(array.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated subset of {ATTACKS}")
    args = parser.parse_args()

    import torch

    from lightning_rl.algorithms.ppo import PPO
    from lightning_rl.errors import EnvError

    torch.set_num_threads(1)
    algo = PPO(
        "CartPole-v1",
        external={"token": TOKEN, "sample_timeout_s": 5.0, "timeout_s": 5.0},
        num_envs_per_env_runner=1,
    )
    spec = algo.env_runner_spec(num_envs=1)
    runner = spec.runner_class()(spec)
    received = {"good": 0, "attacker": 0}
    stop_learner = threading.Event()
    state = algo.policy_state()

    def count(result: Any) -> None:
        good = int((result.data["observation"][0][:, 0].abs() < 50).sum())
        received["good"] += good
        received["attacker"] += result.stats.num_env_steps - good

    def learner() -> None:
        version = int(state.get("version", 0))
        while not stop_learner.is_set():
            version += 1
            state["version"] = version
            try:
                count(runner.sample(200, True, state))
            except EnvError:
                continue

    learner_thread = threading.Thread(target=learner, daemon=True)
    learner_thread.start()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    ids = list(range(1, args.clients + 1))
    rss_start = rss_mb()
    clients = ctx.Process(target=good_clients, args=(runner.address, ids, args.seconds, 2, results))
    clients.start()
    time.sleep(args.seconds)
    rss_before = rss_mb()
    attack_results = ctx.Queue()
    attacks = tuple(a for a in args.attacks.split(",") if a)
    attack = ctx.Process(target=attacker, args=(runner.address, args.seconds, attack_results, attacks))
    attack.start()
    rss_peak = rss_before
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        rss_peak = max(rss_peak, rss_mb())
        time.sleep(0.2)
    attack_counts = attack_results.get(timeout=300)
    per_client = results.get(timeout=600)
    clients.join(timeout=60)
    attack.join(timeout=60)
    rss_after = rss_mb()
    # Good clients are done and every episode they played is finished; the attacker is gone.
    stop_learner.set()
    learner_thread.join(timeout=30)
    received_good = received["good"]
    stats = runner.server_stats()
    buffered_good = 0
    if stats["buffered_steps"]:  # what the server still holds comes out with one more sample
        before = received["good"]
        count(runner.sample(1, True, state))
        buffered_good = received["good"] - before
    runner.stop()
    sent = sum(c["sent"] for c in per_client.values())
    baseline = [x for c in per_client.values() for x in c["latencies"][0]]
    attacked = [x for c in per_client.values() for x in c["latencies"][1]]
    report = {
        "clients": args.clients,
        "seconds_per_phase": args.seconds,
        "steps_sent": sent,
        "steps_received": received_good,
        "steps_buffered": buffered_good,
        "attacker_steps_received": received["attacker"],
        "lost_steps_of_good_clients": sent - received_good - buffered_good,
        "latency_without_attacker": percentiles(baseline),
        "latency_with_attacker": percentiles(attacked),
        "rss_mb": {
            "start": round(rss_start, 1),
            "before_attack": round(rss_before, 1),
            "peak_during_attack": round(rss_peak, 1),
            "after_attack": round(rss_after, 1),
        },
        "attacks": attack_counts,
        "server_errors_sent": stats["errors"],
        "server_errors": stats["errors"].get("server_error", 0),
        "evicted_handshakes": stats.get("evicted_handshakes"),
        "peak_outbound_bytes": stats.get("peak_outbound_bytes"),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
